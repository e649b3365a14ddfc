"""Type checks of the public API: `mypy tests/typing_api.py` (run by CI, not by pytest)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, assert_type

from hypothesis.strategies import SearchStrategy

from imagetask import ImageGeneration, Reader, RunSummary
from imagetask._core import placeholder_images
from imagetask.build._batch import Batch, BatchOutput, Failure
from imagetask.build._columnar import ArrowBatch, ArrowOutput
from imagetask.models import (
    Answer,
    InferenceEndpointsImageGeneration,
    OpenAIImageGeneration,
    PlaceholderImageGeneration,
)
from imagetask.testing import INVARIANTS, Call, Invariant, ReplayModel, ScriptedModel, check_task
from imagetask.testing.strategies import answers, batch_answers, input_rows

table: Any = None  # a pyarrow Table
model = PlaceholderImageGeneration(size="8x8")
assert_type(model.generate(["a"], 2), list[Answer])
assert_type(model.model_name, str)

task = ImageGeneration(image_generation_model=model, num_generations=2)
assert_type(task.process_batch([{"prompt": "a"}]), list[dict[str, Any]])
assert_type(task.run([{"prompt": "a"}], "out"), RunSummary)
assert_type(task.run(Reader("prompts.txt"), "out", format="parquet"), RunSummary)
batch = task.prepare([{"prompt": "a"}])
assert_type(batch, Batch)
assert_type(batch.prompts, list[str])
assert_type(batch.finish(), BatchOutput)
assert_type(batch.finish().failures, list[Failure])
arrow_batch = task.prepare_arrow(table)
assert_type(arrow_batch, ArrowBatch)
assert_type(arrow_batch.finish(), ArrowOutput)
assert_type(task.image_format, str | None)

assert_type(
    placeholder_images(["a"], num_generations=1, seed=0, width=4, height=4), list[list[bytes]]
)
assert_type(OpenAIImageGeneration(model="gpt-image-1").images_per_request, int | None)
assert_type(InferenceEndpointsImageGeneration(base_url="http://x").seed, int | None)

scripted = ScriptedModel(lambda prompt, n: [{"images": [prompt.encode()] * n}], model_name="s")
assert_type(scripted.generate(["a"], 2), Sequence[Any])
assert_type(scripted.calls, list[Call])
assert_type(scripted.calls[0].prompts, list[str])
assert_type(ScriptedModel([[{"images": [b"x"]}]]).model_name, str)
assert_type(ScriptedModel(RuntimeError("down")).dump(), dict[str, Any])
replay = ReplayModel.from_run("out")
assert_type(replay, ReplayModel)
assert_type(replay.rows, list[dict[str, Any]])
assert_type(replay.generate(["a"]), list[Answer])
assert_type(input_rows(task), SearchStrategy[dict[str, Any]])
assert_type(answers(2), SearchStrategy[Any])
assert_type(batch_answers(2, 3), SearchStrategy[Sequence[Any] | BaseException])
assert_type(check_task(task, max_examples=10), None)
assert_type(INVARIANTS[0], Invariant)
assert_type(INVARIANTS[0].name, str)
check_task(ImageGeneration(image_generation_model=scripted))


async def use_async() -> None:
    assert_type(await task.agenerate([{"prompt": "a"}]), list[dict[str, Any]])
