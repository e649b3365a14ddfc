"""Shared test helpers: scripted backends whose answers the test chooses."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from imagetask import ImageGenerationModel

Answers = Any


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ref(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ScriptedModel:
    """A duck-typed backend (no base class) that returns what the test scripted."""

    def __init__(
        self, answers: Answers | Callable[[list[str], int], Answers], name: str = "scripted"
    ) -> None:
        self.answers = answers
        self.name = name
        self.calls: list[tuple[list[str], int, dict[str, Any]]] = []
        self.loaded = False

    @property
    def model_name(self) -> str:
        return self.name

    def load(self) -> None:
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Answers:
        self.calls.append((list(inputs), num_generations, kwargs))
        if isinstance(self.answers, BaseException):
            raise self.answers
        if callable(self.answers):
            return self.answers(inputs, num_generations)
        return self.answers


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
