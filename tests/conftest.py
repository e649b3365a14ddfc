"""Fixtures every test folder shares, and the hypothesis profile of CI runs."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.support.models import EchoModel

# CI (`CI` set, as `.ci/run` and CI services do): the same examples on every run, no
# timing deadline on a loaded machine, no example database, and a failure's reproduction
# blob in the log.
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def echo() -> EchoModel:
    return EchoModel()
