"""Type checks of the public API: `mypy tests/typing_api.py` (run by CI, not by pytest)."""

from __future__ import annotations

from typing import Any, assert_type

from imagetask import ImageGeneration, Reader, RunSummary
from imagetask._core import RowBuilder, placeholder_images
from imagetask.models import (
    Answer,
    InferenceEndpointsImageGeneration,
    OpenAIImageGeneration,
    PlaceholderImageGeneration,
)

model = PlaceholderImageGeneration(size="8x8")
assert_type(model.generate(["a"], 2), list[Answer])
assert_type(model.model_name, str)

task = ImageGeneration(image_generation_model=model, num_generations=2)
assert_type(task.process_batch([{"prompt": "a"}]), list[dict[str, Any]])
assert_type(task.run([{"prompt": "a"}], "out"), RunSummary)
assert_type(task.run(Reader("prompts.txt"), "out", format="parquet"), RunSummary)
assert_type(task._builder(), RowBuilder)
assert_type(task.image_format, str | None)

assert_type(
    placeholder_images(["a"], num_generations=1, seed=0, width=4, height=4), list[list[bytes]]
)
assert_type(OpenAIImageGeneration(model="gpt-image-1").images_per_request, int | None)
assert_type(InferenceEndpointsImageGeneration(base_url="http://x").seed, int | None)


async def use_async() -> None:
    assert_type(await task.agenerate([{"prompt": "a"}]), list[dict[str, Any]])
