"""Backends the tests choose answers for: fixed echoes of the prompts, and a scripted
backend that can break the shape of a whole batch.

The scripted backend answering per prompt is `imagetask.testing.ScriptedModel`.
"""

from __future__ import annotations

from typing import Any

from imagetask import ImageGeneration, ImageGenerationModel
from imagetask.testing import Call, ScriptedModel
from tests.support.payloads import b64


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


def task_for(answers: Any, **fields: Any) -> ImageGeneration:
    """An `ImageGeneration` whose backend answers every batch with `answers`."""
    return ImageGeneration(image_generation_model=BatchScriptedModel(answers), **fields)
