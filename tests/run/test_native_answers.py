"""The native answer path (a run's answers read natively, their images stored as each
request answers, rows holding `StoredImage` handles until the sink writes them) writes the
same rows and artifacts as the answers holding the images, for every answer shape of the
OpenAI backend and for the Hugging Face backend's raw bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetask import ImageGeneration
from imagetask.models import InferenceEndpointsImageGeneration, OpenAIImageGeneration
from imagetask.run import run
from tests.support.servers import ImageServer, image_server
from tests.support.stored_runs import (
    RunShape,
    artifacts_of,
    generation_task,
    run_shapes,
    written_rows,
)


@dataclass(frozen=True)
class Shape:
    """An answer shape and a run's configuration."""

    backend: Literal["openai", "hf"]
    url: bool
    revised: bool
    usage: bool
    run: RunShape


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    backend: Literal["openai", "hf"] = draw(st.sampled_from(["openai", "hf"]))
    return Shape(
        backend=backend,
        url=backend == "openai" and draw(st.booleans()),
        revised=draw(st.booleans()),
        usage=draw(st.booleans()),
        run=draw(run_shapes(one_per_request=backend == "hf")),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with image_server() as server:
        server.repeatable = True
        yield server


def task_of(server: ImageServer, shape: Shape) -> ImageGeneration:
    backend: OpenAIImageGeneration | InferenceEndpointsImageGeneration
    if shape.backend == "hf":
        # A seed of its own: without one, each request draws one at random.
        backend = InferenceEndpointsImageGeneration(base_url=f"{server.url}/hf", seed=7)
    else:
        backend = OpenAIImageGeneration(
            model="dall-e-2",
            base_url=f"{server.url}/v1",
            api_key="k",
            images_per_request=shape.run.per_request,
            generation_kwargs={"response_format": "url"} if shape.url else {},
        )
    return generation_task(backend, shape.run)


def without_latency(value: Any) -> Any:
    """`value` with every `latency_s` (which differs between runs) left out, statistics
    written as JSON text (Parquet) read."""
    if isinstance(value, dict):
        return {
            key: without_latency(json.loads(item) if statistics_text(key, item) else item)
            for key, item in value.items()
            if key != "latency_s"
        }
    if isinstance(value, list):
        return [without_latency(item) for item in value]
    return value


def statistics_text(key: str, value: Any) -> bool:
    """Whether `value` is the statistics of an image as JSON text (as Parquet holds them)."""
    return key.startswith("statistics_") and isinstance(value, str)


def rows_of(out: Path, format: str) -> Any:
    """The rows of a run's output, without their latencies."""
    return without_latency(written_rows(out, format))


def run_in(server: ImageServer, shape: Shape, out: Path, native: bool) -> None:
    """Runs `shape` into `out`, on the native path or with answers holding the images."""
    task = task_of(server, shape)
    with pytest.MonkeyPatch.context() as patch:
        if not native:
            patch.setattr(ImageGeneration, "takes_stored_images", property(lambda _: False))
        assert task.takes_stored_images is native
        rows = [{"prompt": prompt} for prompt in shape.run.prompts]
        summary = run(task, rows, out, format=shape.run.format)
    images = len(shape.run.prompts) * shape.run.n
    assert (summary.rows_out, summary.failed) == (
        len(shape.run.prompts) if shape.run.group else images,
        0,
    )
    assert not (out / ".spool").exists()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shape=shapes())
def test_the_native_path_writes_the_rows_and_files_of_answers_holding_images(
    server: ImageServer, tmp_path_factory: pytest.TempPathFactory, shape: Shape
) -> None:
    sent = {"revised_prompt": shape.revised, "usage": shape.usage}
    server.left_out = {field for field, kept in sent.items() if not kept}
    today, native = (tmp_path_factory.mktemp(name) for name in ("today", "native"))
    run_in(server, shape, today, native=False)
    run_in(server, shape, native, native=True)
    assert rows_of(native, shape.run.format) == rows_of(today, shape.run.format)
    files = artifacts_of(native)
    assert files == artifacts_of(today)
    # Each distinct image once: a prompt asked again answers the same images.
    places = range(shape.run.per_request)
    distinct = {(prompt, place) for prompt in shape.run.prompts for place in places}
    assert len(files) == (len(distinct) if shape.run.artifacts else 0)
    assert all(name.startswith(hashlib.sha256(data).hexdigest()) for name, data in files.items())
