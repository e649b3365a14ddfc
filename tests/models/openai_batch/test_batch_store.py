"""The Batch API in a run: each answer body read natively into the run's image store
(rows holding `StoredImage` handles until the sink writes them) gives the rows and
artifacts of answers holding the images, for every answer shape; the stored images stay
on disk until their batch's rows are written and go after; and a run killed at any
moment resumes to every row once, every request once, no image lost."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetask import ImageGeneration
from imagetask.run import run
from imagetask.run._spool import AnswerSpool
from tests.models.openai_batch.test_batch_api import (
    KEY,
    batch_model,
    command,
    decoded,
    environment,
    errors,
    read_rows,
)
from tests.support.batch_server import BatchServer, batch_server
from tests.support.processes import killed_past
from tests.support.runs import rows_done
from tests.support.stored_runs import (
    ARTIFACTS,
    RunShape,
    artifacts_of,
    generation_task,
    run_shapes,
    written_rows,
)

Mangle = Callable[[dict[str, Any]], dict[str, Any]]


def _body(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Mangle:
    """A `mangle` that changes a 200 answer's body."""

    def mangle(record: dict[str, Any]) -> dict[str, Any]:
        response = record["response"]
        return {**record, "response": {**response, "body": change(response["body"])}}

    return mangle


def _first_image(**fields: Any) -> Mangle:
    """A `mangle` that replaces the first image object's fields."""
    return _body(lambda body: {**body, "data": [fields, *body["data"][1:]]})


MANGLES: dict[str, Mangle | None] = {
    "none": None,
    "usage not an object": _body(lambda body: {**body, "usage": "many tokens"}),
    "usage null": _body(lambda body: {**body, "usage": None}),
    "not base64": _first_image(b64_json="iV!ORw=="),
    "not an image": _first_image(b64_json="bm90IGFuIGltYWdl"),
    "neither b64_json nor url": _first_image(b64_json=5, revised_prompt="r"),
    "no data": _body(lambda body: {key: value for key, value in body.items() if key != "data"}),
}


@dataclass(frozen=True)
class Shape:
    """An answer shape (`mangle` applied to the answers of "a dog") and a run's
    configuration."""

    url: bool
    mangle: str
    run: RunShape


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    return Shape(
        url=draw(st.booleans()),
        mangle=draw(st.sampled_from(sorted(MANGLES))),
        run=draw(run_shapes()),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[BatchServer]:
    with batch_server(key=KEY) as running:
        running.repeatable = True
        yield running


def task_of(server: BatchServer, shape: Shape, out: Path) -> ImageGeneration:
    backend = batch_model(
        server,
        model="dall-e-2",
        output_dir=str(out),
        images_per_request=shape.run.per_request,
        generation_kwargs={"response_format": "url"} if shape.url else {},
    )
    return generation_task(backend, shape.run)


def _same_jobs(value: Any) -> Any:
    """`value` with the ids of the batch jobs (which differ between runs) left out, JSON
    text (Parquet's statistics and raw outputs) read."""
    if isinstance(value, dict):
        return {key: _same_jobs(item) for key, item in value.items() if key != "batch_id"}
    if isinstance(value, list):
        return [_same_jobs(item) for item in value]
    if isinstance(value, str) and value.startswith("{"):
        return _same_jobs(json.loads(value))
    if isinstance(value, str):
        return re.sub(r"batch_\d+", "batch", value)
    return value


def rows_of(out: Path, format: str) -> Any:
    return _same_jobs(written_rows(out, format))


def run_in(server: BatchServer, shape: Shape, out: Path, stored: bool) -> int:
    """Runs `shape` into `out`, its answers' images in the run's store or held by the
    answers; the failed generations."""
    task = task_of(server, shape, out)
    with pytest.MonkeyPatch.context() as patch:
        if not stored:
            patch.setattr(ImageGeneration, "takes_stored_images", property(lambda _: False))
        assert task.takes_stored_images is stored
        summary = run(
            task, [{"prompt": prompt} for prompt in shape.run.prompts], out, format=shape.run.format
        )
    assert not (out / ".spool").exists()
    assert sorted(path.name for path in (out / "batch-jobs").iterdir()) == ["journal.jsonl"]
    return summary.failed


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shape=shapes())
def test_stored_answers_write_the_rows_and_files_of_answers_holding_images(
    server: BatchServer, tmp_path_factory: pytest.TempPathFactory, shape: Shape
) -> None:
    mangle = MANGLES[shape.mangle]
    server.mangle = {} if mangle is None else {"a dog": mangle}
    held, stored = (tmp_path_factory.mktemp(name) for name in ("held", "stored"))
    failed = run_in(server, shape, held, stored=False)
    assert run_in(server, shape, stored, stored=True) == failed
    assert rows_of(stored, shape.run.format) == rows_of(held, shape.run.format)
    files = artifacts_of(stored)
    assert files == artifacts_of(held)
    assert all(name.startswith(hashlib.sha256(data).hexdigest()) for name, data in files.items())
    # Bytes in no known image format stay in the row as they came, unless saved as a file.
    broken = shape.mangle not in ("none", "usage not an object", "usage null") and (
        shape.mangle != "not an image" or shape.run.artifacts
    )
    if not broken or "a dog" not in shape.run.prompts:
        assert failed == 0
        places = range(shape.run.per_request)
        distinct = {(prompt, place) for prompt in shape.run.prompts for place in places}
        assert len(files) == (len(distinct) if shape.run.artifacts else 0)
    else:
        assert failed > 0


def test_stored_images_stay_until_their_rows_are_written_then_go(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.mangle = {}
    out = tmp_path / "out"
    prompts = [f"prompt {i}" for i in range(6)]
    seen: list[tuple[str, list[str], list[str]]] = []
    release = AnswerSpool.release

    def spied(self: AnswerSpool, store: Any) -> None:
        # When a batch's store goes, its rows are in the output and its files still there.
        folder = Path(store.folder)
        files = sorted(path.name for path in folder.iterdir())
        rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
        seen.append((folder.name, files, [row["prompt"] for row in rows]))
        assert not (out / "batch-jobs" / "spool").exists()
        release(self, store)
        assert not folder.exists()

    monkeypatch.setattr(AnswerSpool, "release", spied)
    shape = Shape(False, "none", RunShape(1, 1, False, "jsonl", False, True, tuple(prompts)))
    run_in(server, shape, out, stored=True)
    rows = read_rows(out)
    images = decoded(rows)
    names = [f"{hashlib.sha256(image).hexdigest()}.png" for image in images]
    assert seen == [
        (str(batch), sorted(names[2 * batch : 2 * batch + 2]), prompts[: 2 * batch + 2])
        for batch in range(3)
    ]


PROMPTS = 48
"""Enough that kills land while jobs are uploaded, run, downloaded and read, and between
batches."""


def test_sigkill_at_random_moments_with_artifacts_then_resume(tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(PROMPTS)]
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    rng = random.Random(20260521)
    with batch_server(key=KEY) as server:
        argv = command(server, source, out, "--quiet", "--save-artifacts", "--size", "64x64")
        targets = [0, *sorted(rng.sample(range(4, PROMPTS, 4), 4))]
        kills, progress = 0, []
        for attempt, target in enumerate(targets):
            kills += killed_past(
                [*argv, *(["--resume"] if attempt else [])],
                out,
                target,
                rng,
                settle=0.3,
                env=environment(),
            )
            progress.append(rows_done(out))
        assert kills >= 3, "the run finished before it could be killed often enough"
        # Rows arrive a job's worth at a time: the kills land before and after some.
        assert progress == sorted(progress) and len(set(progress)) >= 2, progress
        final = subprocess.run(
            [*argv, "--resume"], env=environment(), capture_output=True, text=True, check=False
        )
        assert final.returncode == 0, final.stderr
        rows = read_rows(out)
        assert [row["prompt"] for row in rows] == prompts
        assert errors(rows) == [None] * PROMPTS
        # Every request run once, and every row's image its own answer, in its file.
        assert server.submitted() == Counter((prompt, 1) for prompt in prompts)
        images = decoded(rows)
        assert len(set(images)) == PROMPTS and set(images) <= set(server.served.images)
        for row, image in zip(rows, images, strict=True):
            path = out / row["image_path"]
            assert path.name == f"{hashlib.sha256(image).hexdigest()}.png"
            assert path.read_bytes() == image
    folder = out / ARTIFACTS
    visible = {path.name for path in folder.iterdir() if not path.name.startswith(".")}
    # A job read again after a kill writes the same files: nothing but the rows' images.
    assert visible == {Path(row["image_path"]).name for row in rows}
    assert not (out / ".spool").exists()
    assert sorted(path.name for path in (out / "batch-jobs").iterdir()) == ["journal.jsonl"]
