"""Crash safety with real processes: `kill -9` at random moments and before the first
batch, Ctrl-C with requests in flight, two runs on one folder; then resume: nothing lost,
nothing twice."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagetask import ImageEditing
from imagetask.models import PlaceholderImageGeneration
from tests.support.outputs import image_bytes, recorded_table
from tests.support.processes import HANG_GUARD, killed_past, wait_for
from tests.support.runs import rows_done
from tests.support.servers import Fault, ImageServer, image_server

PROMPTS = 400
"""Enough that six kills land at different points of the run, each resume going further:
with a batch written and not yet checkpointed, image files not yet recorded, the
checkpoint being written, a Parquet shard being finished, or between batches; and that
the Parquet output spans many shards of 0.04 MB (13)."""
GENERATIONS = 2
EDITS = 200
"""The rows of the editing run killed four times."""


def command(source: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "imagetask.cli", "generate", str(source), "-o", str(out),
        "--num-generations", str(GENERATIONS), "--batch-size", "4", "--save-artifacts",
        "--size", "6x6", "--quiet", "--checkpoint-every", "0", *extra,
    ]  # fmt: skip


def expected_pairs(prompts: list[str]) -> Counter[tuple[str, str]]:
    model = PlaceholderImageGeneration(size="6x6")
    answers = model.generate(prompts, GENERATIONS)
    return Counter(
        (prompt, base64.b64encode(image).decode())
        for prompt, answer in zip(prompts, answers, strict=True)
        for image in (part["images"][0] for part in answer)
    )


def written_rows(out: Path, format: str) -> list[dict[str, Any]]:
    """The output's rows, images as base64 (as JSONL holds them)."""
    if format == "jsonl":
        raw = (out / "data.jsonl").read_bytes()
        assert raw.endswith(b"\n")
        return [msgspec.json.decode(line) for line in raw.splitlines()]
    table = recorded_table(out)
    images = [base64.b64encode(image or b"").decode() for image in image_bytes(table)]
    rows = table.drop_columns(["image"]).to_pylist()
    return [{**row, "image": image} for row, image in zip(rows, images, strict=True)]


@pytest.mark.parametrize(
    ("input", "format"), [("txt", "jsonl"), ("txt", "parquet"), ("parquet", "parquet")]
)
def test_sigkill_at_random_moments_then_resume(tmp_path: Path, input: str, format: str) -> None:
    prompts = [f"prompt number {i}" for i in range(PROMPTS)]
    source = tmp_path / f"prompts.{input}"
    if input == "parquet":  # read as Arrow record batches, in row groups of another size
        pq.write_table(pa.table({"prompt": prompts}), source, row_group_size=37)
    else:
        source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    # Parquet: shards of about 40 kB, so that kills land around shards being finished.
    options = ("--format", format, "--shard-mb", "0.04")
    rng = random.Random(20261125)
    targets = sorted(rng.sample(range(1, PROMPTS), 6))
    kills = 0
    progress = []
    for attempt, target in enumerate(targets):
        extra = ("--resume",) if attempt else ()
        kills += killed_past(command(source, out, *options, *extra), out, target, rng)
        progress.append(rows_done(out))
    assert kills >= 3, "the run finished before it could be killed often enough"
    # Killed at several different points, each resume going further.
    assert len({done for done in progress if 0 < done < PROMPTS}) >= 3, progress
    assert progress == sorted(progress)
    final = subprocess.run(
        command(source, out, *options, "--resume"), capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr

    rows = written_rows(out, format)
    assert Counter((row["prompt"], row["image"]) for row in rows) == expected_pairs(prompts)
    assert [row["prompt"] for row in rows] == [p for p in prompts for _ in range(GENERATIONS)]
    for row in rows:
        path = out / row["image_path"]
        data = path.read_bytes()
        assert path.name == hashlib.sha256(data).hexdigest() + ".png"
        assert data == base64.b64decode(row["image"])
    report = json.loads((out / "run.json").read_text())
    assert (report["rows_in"], report["rows_out"]) == (PROMPTS, PROMPTS * GENERATIONS)
    # Besides the hidden temporary files a kill can leave, the folder holds exactly the
    # rows' images: a file written before a kill is regenerated identically and used.
    images = out / "artifacts" / "image_generation_0" / "images"
    visible = {path.name for path in images.iterdir() if not path.name.startswith(".")}
    assert visible == {Path(row["image_path"]).name for row in rows}
    if format == "parquet":
        shards = sorted(path.name for path in (out / "data").iterdir())
        assert len(shards) > 3
        assert shards == [f"train-{index:05d}.parquet" for index in range(len(shards))]
        assert not (out / ".staging").exists()
        dataset = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "c"))
        assert dataset["prompt"] == [row["prompt"] for row in rows]  # type: ignore[index]


def test_an_editing_run_killed_at_random_moments_resumes_to_every_edit_once(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sources = []
    for index in range(5):
        picture = PlaceholderImageGeneration(size="6x6").generate([f"source {index}"])[0]
        (folder / f"s{index}.png").write_bytes(picture[0]["images"][0])
        sources.append(f"s{index}.png")
    rows = [{"image": sources[i % 5], "prompt": f"edit number {i}"} for i in range(EDITS)]
    source = folder / "captions.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    edit = [sys.executable, "-m", "imagetask.cli", "edit", str(folder), "-o", str(out)]
    edit += ["--num-generations", str(GENERATIONS), "--batch-size", "4", "--save-artifacts"]
    edit += ["--size", "6x6", "--quiet", "--checkpoint-every", "0"]
    rng = random.Random(20261203)
    kills = 0
    for attempt, target in enumerate(sorted(rng.sample(range(1, EDITS), 4))):
        extra = ["--resume"] if attempt else []
        kills += killed_past([*edit, *extra], out, target, rng)
    assert kills >= 2, "the run finished before it could be killed often enough"
    final = subprocess.run([*edit, "--resume"], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr

    task = ImageEditing(
        image_generation_model=PlaceholderImageGeneration(size="6x6"),
        num_generations=GENERATIONS,
        input_folder=str(folder),
    )
    expected = task.process_batch(rows)
    written = written_rows(out, "jsonl")
    assert [(row["prompt"], row["image"], row["edited_image"]) for row in written] == [
        (row["prompt"], row["image"], row["edited_image"]) for row in expected
    ]
    for row in written:
        assert (out / row["image_path"]).read_bytes() == base64.b64decode(row["edited_image"])
    report = json.loads((out / "run.json").read_text())
    assert (report["rows_in"], report["rows_out"]) == (EDITS, EDITS * GENERATIONS)


# Against the loopback OpenAI server: requests held until the test lets them go.


def openai_command(source: Path, out: Path, server: ImageServer, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "imagetask.cli", "generate", str(source), "-o", str(out),
        "--model", "openai:test-image", "--base-url", f"{server.url}/v1", "--batch-size", "4",
        "--max-concurrency", "8", "--checkpoint-every", "0", "--quiet", *extra,
    ]  # fmt: skip


@contextmanager
def held_server(prompts: list[str]) -> Iterator[tuple[ImageServer, threading.Event]]:
    """A server whose first answer to each of `prompts` waits for the event."""
    hold = threading.Event()
    with image_server() as server:
        server.faults = {prompt: [Fault(hold=hold)] for prompt in prompts}
        try:
            yield server, hold
        finally:
            hold.set()


def requested(server: ImageServer, prompt: str) -> bool:
    with server.lock:
        return any(body.get("prompt") == prompt for body in server.served.requests)


def prompts_written(out: Path) -> list[str]:
    raw = (out / "data.jsonl").read_bytes()
    return [msgspec.json.decode(line)["prompt"] for line in raw.splitlines()]


def test_kill_before_the_first_batch_leaves_a_folder_resume_accepts(tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(10)]
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    with held_server(prompts[:4]) as (server, _):
        process = subprocess.Popen(
            openai_command(source, out, server), stderr=subprocess.PIPE, text=True
        )
        wait_for(lambda: requested(server, prompts[0]), process)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert rows_done(out) == 0
        finished = subprocess.run(
            openai_command(source, out, server, "--resume"),
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
        )
    assert finished.returncode == 0, finished.stderr
    assert prompts_written(out) == prompts


def test_ctrl_c_cancels_requests_in_flight_and_resume_completes(tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(40)]
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    with held_server(prompts[8:]) as (server, _):
        process = subprocess.Popen(
            openai_command(source, out, server), stderr=subprocess.PIPE, text=True
        )
        # Two batches done, the next two waiting on their requests.
        wait_for(lambda: rows_done(out) == 8 and requested(server, prompts[12]), process)
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError("Ctrl-C left the command hanging") from None
        assert process.returncode == 130, err
        resume = shlex.join(["imagetask", *openai_command(source, out, server)[3:], "--resume"])
        assert err == f"imagetask: interrupted after 8 input rows; to continue: {resume}\n"
        assert prompts_written(out) == prompts[:8]
        with server.lock:
            server.faults.clear()
        finished = subprocess.run(
            openai_command(source, out, server, "--resume"),
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
        )
    assert finished.returncode == 0, finished.stderr
    assert prompts_written(out) == prompts


def test_a_second_run_on_the_same_folder_fails_at_once_naming_the_first(
    tmp_path: Path,
) -> None:
    prompts = [f"prompt {i}" for i in range(12)]
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    with held_server(prompts[:4]) as (server, hold):
        first = subprocess.Popen(
            openai_command(source, out, server), stderr=subprocess.PIPE, text=True
        )
        wait_for(lambda: requested(server, prompts[0]), first)
        for extra in ((), ("--resume",)):
            second = subprocess.run(
                openai_command(source, out, server, *extra),
                capture_output=True,
                text=True,
                timeout=HANG_GUARD,
            )
            assert second.returncode == 1
            assert second.stderr == (
                f"imagetask: error: {out} is in use by another run (process {first.pid} holds "
                f"{out / '.imagetask.lock'}): wait for it to end, or choose another folder\n"
            )
        hold.set()
        _, err = first.communicate(timeout=HANG_GUARD)
    assert first.returncode == 0, err
    assert prompts_written(out) == prompts


HANGING_RUN = """
import faulthandler
import signal
import sys
import threading

from imagetask import ImageGeneration
from imagetask.models import PlaceholderImageGeneration


class Hanging(PlaceholderImageGeneration):
    def generate(self, inputs, num_generations=1, **kwargs):
        if "p 4" in inputs:
            threading.Event().wait()  # a backend call that never returns
        return super().generate(inputs, num_generations, **kwargs)


faulthandler.register(signal.SIGUSR1)  # the test asks for the stacks if the run hangs
task = ImageGeneration(image_generation_model=Hanging(size="4x4"), input_batch_size=4)
try:
    task.run([{"prompt": f"p {i}"} for i in range(12)], sys.argv[1], checkpoint_seconds=0)
except Exception as exc:
    print("swallowed", type(exc).__name__, flush=True)
"""


def test_ctrl_c_ends_the_process_even_when_a_backend_call_never_returns(
    tmp_path: Path,
) -> None:
    script = tmp_path / "hanging.py"
    script.write_text(HANGING_RUN)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(script), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: rows_done(out) == 4, process)
    process.send_signal(signal.SIGINT)
    try:
        printed, err = process.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        process.kill()
        _, stacks = process.communicate()
        raise AssertionError(f"a hung backend call kept the process alive:\n{stacks}") from None
    # `RunInterrupted` went through `except Exception` and ended the script as Ctrl-C does.
    assert printed == ""
    assert process.returncode == -signal.SIGINT or process.returncode == 1, err
    assert err.strip().splitlines()[-1] == (
        "imagetask.errors.RunInterrupted: interrupted after 4 input rows; run again with "
        "resume (--resume) to continue"
    )
    assert prompts_written(out) == ["p 0", "p 1", "p 2", "p 3"]
