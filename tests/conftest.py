"""Shared test helpers: image payload helpers, a validated backend with fixed answers, and
a scripted backend that can break the shape of a whole batch.

The scripted backend the tests choose answers for is `imagetask.testing.ScriptedModel`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from hypothesis import settings

from imagetask import ImageGenerationModel
from imagetask.testing import Call, ScriptedModel

# CI (`CI` set, as `.ci/run` and CI services do): the same examples on every run, no
# timing deadline on a loaded machine, no example database, and a failure's reproduction
# blob in the log.
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ref(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class EchoModel(ImageGenerationModel):
    """Answers every prompt with images whose bytes are `<prompt>#<k>`, one dict each."""

    label: str = "echo"

    @property
    def model_name(self) -> str:
        return self.label

    def generate(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[list[dict[str, Any]]]:
        return [
            [{"images": [b64(f"{prompt}#{k}".encode())]} for k in range(num_generations)]
            for prompt in inputs
        ]


@pytest.fixture
def echo() -> EchoModel:
    return EchoModel()


class BatchScriptedModel(ScriptedModel):
    """The kit's `ScriptedModel` scripting whole batches, for backends that break a batch's
    shape: `answers` is returned as it is by every call (`None` included), raised when it
    is an exception, or called with the batch's prompts and `num_generations`."""

    def __init__(self, answers: Any, name: str = "scripted") -> None:
        super().__init__(model_name=name)
        self.answers = answers

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        self.calls.append(Call(list(inputs), num_generations, kwargs))
        if isinstance(self.answers, BaseException):
            raise self.answers
        if callable(self.answers):
            return self.answers(inputs, num_generations)
        return self.answers
