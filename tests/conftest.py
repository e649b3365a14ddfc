"""Shared test helpers: image payload helpers and a validated backend with fixed answers.

The scripted backend the tests choose answers for is `imagetask.testing.ScriptedModel`.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from imagetask import ImageGenerationModel


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
