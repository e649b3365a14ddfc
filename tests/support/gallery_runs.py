"""Runs for the gallery tests: real placeholder PNGs, with some generations failing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagetask import ImageGeneration, RunSummary
from imagetask.models import PlaceholderImageGeneration
from imagetask.models._base import Answer
from tests.support.repository import EXAMPLES

PROMPTS = [line for line in (EXAMPLES / "prompts.txt").read_text().splitlines() if line.strip()]
"""The prompts the README's main command runs on."""

MOON = PROMPTS.index("an astronaut riding a horse on the moon")
CAT = PROMPTS.index("a cat wearing a tiny wizard hat")
MOON_ERRORS = [
    f"image {k} of the model's answer is missing: the server said 503: try later" for k in (0, 1)
]
CAT_ERROR = "image 1 of the model's answer is missing: content policy: refused"


class FlakyPlaceholder(PlaceholderImageGeneration):
    """Placeholder pictures, but every prompt with `moon` fails whole (a 503), and the
    second image of a prompt with `cat` is refused."""

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> list[Answer]:
        answers = super().generate(inputs, num_generations, **kwargs)
        for index, prompt in enumerate(inputs):
            if "moon" in prompt:
                answers[index] = [
                    {"images": [None] * num_generations, "error": "the server said 503: try later"}
                ]
            elif "cat" in prompt and num_generations > 1:
                answers[index][1] = {"images": [None], "error": "content policy: refused"}
        return answers


def make_run(
    folder: Path,
    prompts: list[str] = PROMPTS,
    *,
    num_generations: int = 2,
    save_artifacts: bool = True,
    format: str = "jsonl",
    seed: int = 0,
    size: str = "64x64",
    **task_fields: Any,
) -> RunSummary:
    """Runs `FlakyPlaceholder` over `prompts` into `folder`."""
    task = ImageGeneration(
        image_generation_model=FlakyPlaceholder(size=size, seed=seed),
        num_generations=num_generations,
        save_artifacts=save_artifacts,
        images_as_bytes=format == "parquet",
        input_batch_size=500,
        **task_fields,
    )
    rows = ({"prompt": prompt} for prompt in prompts)
    return task.run(rows, folder, format=format)  # type: ignore[arg-type]
