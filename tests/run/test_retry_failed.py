"""`resume=True, retry_failed=True` (`--resume --retry-failed`): the failed generations of
the rows done are made again, and only they; the output then holds each (row, generation)
once, in input order, whatever stops the retry on the way."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagetask.errors import ConfigError, ReadError, RunStopped
from tests.support.flaky import ERROR, META, Crash, Outage, fresh_outage, make_task, output
from tests.support.outputs import recorded_table
from tests.support.runs import checkpoint, prompts


@pytest.fixture(autouse=True)
def outage() -> Iterator[Outage]:
    yield from fresh_outage()


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_retry_failed_makes_only_the_failed_generations_again_in_place(
    tmp_path: Path, outage: Outage, format: str, group: bool
) -> None:
    rows = prompts(10)
    outage.down = {"prompt 1", "prompt 7"}  # both generations fail
    outage.short = {"prompt 4", "prompt 8"}  # the second generation fails
    out = tmp_path / "out"
    first = make_task(format, group_generations=group).run(rows, out, format=format)
    assert (first.rows_in, first.failed, first.images) == (10, 6, 14)
    before = output(out, format)
    schema = recorded_table(out).schema if format == "parquet" else None

    outage.reset()
    summary = make_task(format, group_generations=group).run(
        rows, out, format=format, resume=True, retry_failed=True
    )
    # The model was asked for the failed generations only: 2 images for the rows whose
    # generations all failed, 1 for the rows that lacked one.
    assert outage.calls == [
        (["prompt 1"], 2),
        (["prompt 4"], 1),
        (["prompt 8"], 1),
        (["prompt 7"], 2),
    ]
    assert (summary.rows_in, summary.rows_out, summary.failed, summary.images) == (
        10,
        10 if group else 20,
        0,
        20,
    )
    after = output(out, format)
    if group:
        assert [row["prompt"] for row in after] == [row["prompt"] for row in rows]
        assert all(len(row["image"]) == 2 and all(row["image"]) for row in after)
        assert all(all(meta.get(ERROR) is None for meta in row[META]) for row in after)
        # The generations that had succeeded are kept as they were.
        for old, new in zip(before, after, strict=True):
            for image, kept in zip(old["image"], new["image"], strict=True):
                assert image is None or image == kept
    else:
        assert [row["prompt"] for row in after] == [r["prompt"] for r in rows for _ in range(2)]
        assert all(row["image"] and row[META].get(ERROR) is None for row in after)
        assert [after[i] == before[i] for i in range(20)] == [
            before[i][META].get(ERROR) is None for i in range(20)
        ]
    for row in after:
        for path in row["image_path"] if group else [row["image_path"]]:
            assert (out / path).is_file()
    state = checkpoint(out)
    assert (state["failed"], state["complete"], state["retry"]) == (0, True, None)
    assert json.loads((out / "run.json").read_text())["failed"] == 0
    assert not (out / ".retry").exists()
    if format == "parquet":
        assert sorted(path.name for path in (out / "data").iterdir()) == ["train-00000.parquet"]
        assert recorded_table(out).schema == schema  # the failures' error column kept its type


def test_retry_failed_on_an_unfinished_run_then_goes_on(tmp_path: Path, outage: Outage) -> None:
    rows = prompts(9)
    outage.down = {"prompt 2"}
    out = tmp_path / "out"
    make_task().run(rows, out, limit=5)
    outage.down = set()
    summary = make_task().run(rows, out, resume=True, retry_failed=True)
    assert (summary.resumed_from, summary.rows_in, summary.failed, summary.complete) == (
        5,
        9,
        0,
        True,
    )
    assert outage.calls[2:4] == [(["prompt 2"], 2), (["prompt 5", "prompt 6", "prompt 7"], 2)]
    clean = tmp_path / "clean"
    make_task().run(rows, clean)
    assert (out / "data.jsonl").read_bytes() == (clean / "data.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("line", "why"),
    [(b"x", "not a row: JSON is malformed: "), (b"[[]]", "not a row: not a JSON object")],
)
def test_a_damaged_output_line_stops_the_retry_with_one_error_naming_it(
    tmp_path: Path, outage: Outage, line: bytes, why: str
) -> None:
    rows = prompts(4)
    outage.down = {"prompt 3"}
    out = tmp_path / "out"
    make_task().run(rows, out)
    asked = len(outage.calls)
    data = out / "data.jsonl"
    lines = data.read_bytes().split(b"\n")
    lines[2] = line.ljust(len(lines[2]))  # the size the checkpoint records is kept
    data.write_bytes(b"\n".join(lines))
    outage.down = set()
    with pytest.raises(ReadError) as raised:
        make_task().run(rows, out, resume=True, retry_failed=True)
    assert str(raised.value).startswith(f"{data} line 3: {why}")
    assert "\n" not in str(raised.value)
    assert data.read_bytes() == b"\n".join(lines)
    assert outage.calls[asked:] == []  # nothing asked of the model


def test_retry_failed_needs_resume(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^run: retry_failed=True .* needs resume=True$"):
        make_task().run(prompts(1), tmp_path, retry_failed=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("format", "crash_at"),
    [("jsonl", 0), ("jsonl", 1), ("parquet", 0), ("parquet", 1), ("parquet", 2)],
)
def test_a_crash_during_the_retry_loses_and_repeats_nothing(
    tmp_path: Path, outage: Outage, monkeypatch: pytest.MonkeyPatch, format: str, crash_at: int
) -> None:
    """`crash_at`: 0, in the model's third retry batch; k, right after the k-th rename
    that puts the new output in the old one's place."""
    rows = prompts(12)
    down = {"prompt 1", "prompt 4", "prompt 7", "prompt 10"}
    outage.down = set(down)
    out = tmp_path / "out"
    make_task(format, input_batch_size=2).run(rows, out, format=format, checkpoint_seconds=0)
    outage.reset()
    if crash_at == 0:
        outage.crash_at = 2
    else:
        replace = os.replace
        data = out / ("data" if format == "parquet" else "data.jsonl")
        renames: list[Path] = []

        def crashing(source: Any, target: Any) -> None:
            replace(source, target)
            if data in (Path(source), Path(target)):
                renames.append(Path(target))
                if len(renames) == crash_at:
                    raise Crash

        monkeypatch.setattr(os, "replace", crashing)
    with pytest.raises(Crash):
        make_task(format, input_batch_size=2).run(
            rows, out, format=format, resume=True, retry_failed=True, checkpoint_seconds=0
        )
    monkeypatch.undo()
    outage.crash_at = None
    calls_before = len(outage.calls)
    # A plain resume finishes the retry under way.
    summary = make_task(format, input_batch_size=2).run(rows, out, format=format, resume=True)
    assert (summary.rows_in, summary.failed) == (12, 0)
    retried = [prompt for prompts_, _ in outage.calls for prompt in prompts_]
    assert sorted(retried) == sorted(down)  # each failed row asked for once in all
    assert len(outage.calls) >= calls_before
    clean = tmp_path / "clean"
    make_task(format, input_batch_size=2).run(rows, clean, format=format)
    assert output(out, format) == output(clean, format)
    assert not (out / ".retry").exists()


def test_a_refusal_during_the_retry_leaves_the_output_as_it_was(
    tmp_path: Path, outage: Outage
) -> None:
    rows = prompts(6)
    outage.down = {"prompt 1", "prompt 4"}
    out = tmp_path / "out"
    make_task().run(rows, out)
    before = (out / "data.jsonl").read_bytes()
    outage.down, outage.refused = set(), {"prompt 4"}
    with pytest.raises(RunStopped, match=r"^the model refused a request to make a failed"):
        make_task().run(rows, out, resume=True, retry_failed=True)
    assert (out / "data.jsonl").read_bytes() == before
    assert json.loads((out / "run.json").read_text())["ended"] == "refused"
    outage.refused = set()
    summary = make_task().run(rows, out, resume=True)
    assert summary.failed == 0
    clean = tmp_path / "clean"
    make_task().run(rows, clean)
    assert (out / "data.jsonl").read_bytes() == (clean / "data.jsonl").read_bytes()


ROWS = 300
"""Enough that four kills land at different points of the retry: with a retried batch
written and not yet checkpointed, a Parquet shard of the retry being finished, or between
batches."""
SHARD_BYTES = 12_500
"""Parquet shards of the retried output: 25 of them."""

RETRY_RUN = """
import sys

from imagetask import ImageGeneration
from imagetask.models import PlaceholderImageGeneration


class Flaky(PlaceholderImageGeneration):
    def generate(self, inputs, num_generations=1, **kwargs):
        answers = super().generate(inputs, num_generations, **kwargs)
        if sys.argv[3] == "down":
            answers = [RuntimeError("down") if int(p.split()[1]) % 3 == 1 else a
                       for p, a in zip(inputs, answers)]
        return answers


task = ImageGeneration(
    image_generation_model=Flaky(size="4x4"), num_generations=2, input_batch_size=4,
    save_artifacts=True, images_as_bytes=sys.argv[2] == "parquet",
)
rows = [{"prompt": f"p {i}"} for i in range(int(sys.argv[4]))]
resume = sys.argv[3] != "down"
task.run(rows, sys.argv[1], format=sys.argv[2], resume=resume, retry_failed=resume,
         checkpoint_seconds=0.02, max_consecutive_failures=0, shard_bytes=int(sys.argv[5]))
"""


def retried_rows(out: Path) -> int:
    """The input rows the checkpoint records as retried: -1 while it records no retry
    (before one starts, or once it is done), 0 while there is no checkpoint to read."""
    try:
        retry = checkpoint(out).get("retry")
    except (OSError, ValueError):
        return 0
    return int(retry["rows_in"]) if retry else -1


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_sigkill_at_random_moments_of_a_retry_then_resume(tmp_path: Path, format: str) -> None:
    script = tmp_path / "retry.py"
    script.write_text(RETRY_RUN)
    out = tmp_path / "out"
    sizes = (str(ROWS), str(SHARD_BYTES))

    def run(folder: Path, state: str) -> list[str]:
        return [sys.executable, str(script), str(folder), format, state, *sizes]

    done = subprocess.run(run(out, "down"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert checkpoint(out)["failed"] == 2 * len(range(1, ROWS, 3))
    rng = random.Random(20261203)
    kills = 0
    progress = []
    for target in sorted(rng.sample(range(1, ROWS), 4)):
        process = subprocess.Popen(run(out, "up"), stderr=subprocess.DEVNULL)
        while process.poll() is None and retried_rows(out) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        progress.append(retried_rows(out))
    assert kills >= 2, "the retries finished before they could be killed"
    # Killed with retried rows checkpointed: in the retry, not before it started.
    assert sum(done > 0 for done in progress) >= 2, progress
    final = subprocess.run(run(out, "up"), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    clean = tmp_path / "clean"
    whole = subprocess.run(run(clean, "clean"), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    assert checkpoint(out)["failed"] == 0
    rows = output(out, format)
    assert rows == output(clean, format)
    assert [row["prompt"] for row in rows] == [f"p {i}" for i in range(ROWS) for _ in range(2)]
    for row in rows:
        path = out / row["image_path"]
        assert path.name == hashlib.sha256(path.read_bytes()).hexdigest() + ".png"
        assert path.read_bytes() == row["image"]
    assert not (out / ".retry").exists()
