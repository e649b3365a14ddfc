"""A run tells the truth (SPEC §8): it stops early when going on cannot succeed (a refused
request, failures in a row), its exit status and last lines say how many images were made
and failed, failure warnings name the input line, and Ctrl-C prints the command that
resumes; `overwrite` starts a folder afresh."""

from __future__ import annotations

import io
import json
import logging
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from imagetask.cli import main
from imagetask.errors import ConfigError, RunStopped
from imagetask.io._readers import Reader
from imagetask.run._progress import Progress
from tests.support.flaky import Outage, fresh_outage, make_task, output
from tests.support.runs import checkpoint, prompts, rows_done
from tests.support.servers import Fault, image_server


@pytest.fixture(autouse=True)
def outage() -> Iterator[Outage]:
    yield from fresh_outage()


def report(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text())  # type: ignore[no-any-return]


# Item: a request refused in a way no retry changes stops the run before its batch.


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_refused_request_stops_the_run_before_its_batch(
    tmp_path: Path, outage: Outage, format: str
) -> None:
    rows = prompts(30)
    outage.refused = {f"prompt {i}" for i in range(7, 30)}  # a key revoked at row 7
    out = tmp_path / "out"
    with pytest.raises(RunStopped) as caught:
        make_task(format).run(rows, out, format=format, batches_in_flight=2)
    assert str(caught.value) == (
        "input row 6: the model refused the request, which no retry changes: 401: the key "
        "was refused; the run stopped before this batch, after 6 input rows (12 images, 0 "
        "failed): fix the cause, then run again with resume (--resume)"
    )
    # Two batches at most after the refused one were asked for; none was written.
    asked = [prompt for prompts_, _ in outage.calls for prompt in prompts_]
    assert len(asked) <= 12
    assert [row["id"] for row in output(out, format)] == [i for i in range(6) for _ in range(2)]
    state = checkpoint(out)
    assert (state["rows_in"], state["failed"], state["complete"]) == (6, 0, False)
    ended = report(out)
    assert (ended["ended"], ended["images"], ended["failed"], ended["rows_in"]) == (
        "refused",
        12,
        0,
        6,
    )
    # The key fixed, the run goes on from there.
    outage.refused = set()
    summary = make_task(format).run(rows, out, format=format, resume=True)
    assert (summary.rows_in, summary.failed, summary.ended) == (30, 0, "complete")
    clean = tmp_path / "clean"
    make_task(format).run(rows, clean, format=format)
    assert output(out, format) == output(clean, format)


def test_failures_in_a_row_stop_the_run_and_retry_failed_makes_them_again(
    tmp_path: Path, outage: Outage
) -> None:
    rows = prompts(30)
    outage.down = {f"prompt {i}" for i in range(5, 30)}
    out = tmp_path / "out"
    with pytest.raises(RunStopped) as caught:
        make_task().run(rows, out, max_consecutive_failures=4)
    # Row 5 fails its 2 generations at the end of the second batch, row 6 the next 2.
    assert str(caught.value) == (
        "input row 6: 4 generations failed in a row (the last: the model raised "
        "RuntimeError: the server is down), so the run stopped after 9 input rows (10 "
        "images, 8 failed): fix the cause, then make them again with resume and "
        "retry_failed (--resume --retry-failed)"
    )
    assert len(outage.calls) <= 5
    state = checkpoint(out)
    assert (state["rows_in"], state["failed"]) == (9, 8)
    assert (report(out)["ended"], report(out)["images"]) == ("failures", 10)
    outage.down = set()
    summary = make_task().run(rows, out, resume=True, retry_failed=True)
    assert (summary.rows_in, summary.failed, summary.images) == (30, 0, 60)
    clean = tmp_path / "clean"
    make_task().run(rows, clean)
    assert (out / "data.jsonl").read_bytes() == (clean / "data.jsonl").read_bytes()


def test_failures_not_in_a_row_do_not_stop_the_run(tmp_path: Path, outage: Outage) -> None:
    rows = prompts(30)
    outage.short = {f"prompt {i}" for i in range(30)}  # every second generation fails
    summary = make_task().run(rows, tmp_path, max_consecutive_failures=2)
    assert (summary.rows_in, summary.failed, summary.images, summary.ended) == (
        30,
        30,
        30,
        "complete",
    )
    outage.short = set()
    outage.down = {f"prompt {i}" for i in range(30)}
    summary = make_task().run(rows, tmp_path / "off", max_consecutive_failures=0)
    assert (summary.failed, summary.images) == (60, 0)


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_a_bad_max_consecutive_failures_is_a_config_error(tmp_path: Path, limit: Any) -> None:
    with pytest.raises(ConfigError, match=r"^run: max_consecutive_failures="):
        make_task().run(prompts(1), tmp_path / "out", max_consecutive_failures=limit)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# Exit statuses, end to end against the loopback OpenAI server.


def openai_args(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "generate", str(source), "-o", str(out), "--model", "openai:test-image",
        "--base-url", f"{url}/v1", "--batch-size", "4", "--quiet", *extra,
    ]  # fmt: skip


def test_some_failed_generations_exit_3_with_the_command_that_makes_them_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    prompts_ = [f"prompt {i}" for i in range(10)]
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts_) + "\n")
    out = tmp_path / "out"
    with image_server() as server:
        server.faults = {"prompt 3": [Fault(status=400)], "prompt 8": [Fault(status=400)]}
        args = openai_args(source, out, server.url)
        assert main(args) == 3
        captured = capsys.readouterr()
        again = shlex.join(["imagetask", *args, "--resume", "--retry-failed"])
        assert captured.err == (
            "imagetask: 2 of 10 generations failed (their errors are under "
            f"error_image_generation_0 in distilabel_metadata); to make them again: {again}\n"
        )
        assert captured.out.startswith(
            "imagetask: 10 rows in, 10 rows out (8 images, 2 failed, estimated cost "
        )
        with server.lock:
            server.served.requests.clear()
        assert main(shlex.split(again)[1:]) == 0
        with server.lock:
            asked = sorted(body["prompt"] for body in server.served.requests)
    assert asked == ["prompt 3", "prompt 8"]  # nothing that had succeeded is paid twice
    rows = [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]
    assert [row["prompt"] for row in rows] == prompts_
    assert all(row["image"] for row in rows)
    assert capsys.readouterr().out.startswith(
        "imagetask: 10 rows in, 10 rows out (10 images, 0 failed, estimated cost "
    )
    assert (report(out)["failed"], report(out)["images"]) == (0, 10)


def test_a_wrong_key_exits_1_without_sending_every_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(400)))
    out = tmp_path / "out"
    with image_server(key="sk-right") as server:
        status = main(openai_args(source, out, server.url, "--max-consecutive-failures", "8"))
        with server.lock:
            sent = len(server.served.requests)
    # (The in-process server logs the connections the stopped run closed.)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("imagetask")]
    assert status == 1
    assert len(err) == 1 and err[0].startswith("imagetask: error: "), err
    assert "sk-wrong" not in err[0]
    # The first refusal stops the run, and the model sends no request after it: at most
    # the requests already in flight (max_concurrency) reached the server.
    assert sent <= 16
    assert report(out)["ended"] == "refused"
    assert report(out)["images"] == 0


def test_no_image_made_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    source = tmp_path / "prompts.txt"
    source.write_text("a\nb\n")
    out = tmp_path / "out"
    with image_server() as server:
        server.faults = {"a": [Fault(status=400)], "b": [Fault(status=400)]}
        args = openai_args(source, out, server.url)
        assert main(args) == 1
    again = shlex.join(["imagetask", *args, "--resume", "--retry-failed"])
    assert capsys.readouterr().err == (
        "imagetask: error: no image was made: all 2 generations failed (their errors are "
        f"under error_image_generation_0 in distilabel_metadata); to make them again: {again}\n"
    )


# Failure warnings name the input file's line; the progress bar is cleared first.


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_failure_warning_names_the_input_line(
    tmp_path: Path, outage: Outage, caplog: pytest.LogCaptureFixture, format: str
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("prompt 0\n\nprompt 1\nprompt 2\nprompt 3\nprompt 4\n")
    outage.down = {"prompt 4"}
    with caplog.at_level(logging.WARNING, logger="imagetask"):
        make_task(format, num_generations=1).run(Reader(source), tmp_path / "out", format=format)
    assert caplog.messages == [
        f"Task 'image_generation_0' failed for {source} line 6, generation 0: the model "
        "raised RuntimeError: the server is down"
    ]


def test_the_progress_bar_is_cleared_before_a_log_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = Progress(None, stream=stream, redraw=0.0)
        progress.update(1, 1, 0)
        logging.getLogger("imagetask").warning("a failure")
        progress.update(1, 1, 0)
        progress.close()
        logging.getLogger("imagetask").warning("after")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    first, rest = text.split("a failure\n")
    assert first.startswith("\r\x1b[2K1 rows | 1 images") and first.endswith("\r\x1b[2K")
    assert rest.startswith("\r\x1b[2K2 rows | 2 images")
    assert rest.endswith("\nafter\n")  # no clearing once the bar is gone


# `overwrite` starts afresh; Ctrl-C prints the command that resumes.


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_overwrite_starts_the_folder_afresh(tmp_path: Path, format: str) -> None:
    out = tmp_path / "out"
    make_task(format, num_generations=2).run(prompts(7), out, format=format, limit=4)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="choose one"):
        make_task(format).run(prompts(3), out, format=format, overwrite=True, resume=True)
    summary = make_task(format, num_generations=1).run(
        prompts(3), out, format=format, overwrite=True
    )
    assert (summary.rows_in, summary.rows_out, summary.resumed_from) == (3, 3, 0)
    clean = tmp_path / "clean"
    make_task(format, num_generations=1).run(prompts(3), clean, format=format)
    assert output(out, format) == output(clean, format)
    images = out / "artifacts" / "image_generation_0" / "images"
    assert sorted(path.name for path in images.iterdir() if path.suffix == ".png") == sorted(
        Path(row["image_path"]).name for row in output(out, format)
    )
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_overwrite_and_its_mistakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    base = ["generate", str(source), "-o", str(out), "--size", "4x4", "--quiet"]
    assert main([*base, "--limit", "1"]) == 0
    assert main([*base, "--overwrite"]) == 0
    assert (checkpoint(out)["rows_in"], checkpoint(out)["complete"]) == (3, True)
    capsys.readouterr()
    # A run that cannot start (no key for its model) deletes nothing.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert main([*base, "--overwrite", "--model", "openai:gpt-image-1"]) == 1
    assert "no API key" in capsys.readouterr().err
    assert (checkpoint(out)["rows_in"], (out / "data.jsonl").read_bytes().count(b"\n")) == (3, 3)
    for extra, message in (
        (["--overwrite", "--resume"], "--overwrite starts afresh, --resume goes on: choose one"),
        (["--retry-failed"], "--retry-failed makes a run's failed generations again: add --resume"),
        (["--max-consecutive-failures", "-1"], "--max-consecutive-failures must be at least 0"),
    ):
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"imagetask: error: {message}") and err.count("\n") == 1, err


def test_ctrl_c_prints_the_command_that_resumes(tmp_path: Path) -> None:
    source = tmp_path / "my prompts.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(1000)))
    out = tmp_path / "o"
    args = [
        "generate", str(source), "-o", str(out), "--size", "4x4", "--batch-size", "4",
        "--checkpoint-every", "0", "--quiet", "--overwrite",
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "imagetask", *args], stderr=subprocess.PIPE, text=True
    )
    while process.poll() is None and rows_done(out) == 0:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate()
    assert process.returncode == 130, err
    done = checkpoint(out)["rows_in"]
    resume = shlex.join(["imagetask", *args[:-1], "--resume"])
    assert err == f"imagetask: interrupted after {done:,} input rows; to continue: {resume}\n"
    finished = subprocess.run(
        [sys.executable, "-m", *shlex.split(resume)], capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    assert (out / "data.jsonl").read_bytes().count(b"\n") == 1000


@pytest.mark.parametrize(
    ("flags", "again"),
    [
        ([], ["--resume"]),
        (["--resume", "--retry-failed"], ["--resume", "--retry-failed"]),
        (["--overwrite"], ["--overwrite"]),
    ],
)
def test_ctrl_c_before_the_first_batch_prints_the_command_that_goes_on(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    again: list[str],
) -> None:
    source = tmp_path / "my prompts.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(6)))
    out = tmp_path / "o"
    base = ["generate", str(source), "-o", str(out), "--size", "4x4", "--batch-size", "2"]
    if flags:
        assert main([*base, "--limit", "2", "--quiet"]) == 0
    capsys.readouterr()

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt  # as a Ctrl-C while a resume reads the rows it had done

    with monkeypatch.context() as patch:
        patch.setattr("imagetask.run._input.RowInput.skip", interrupted)
        assert main([*base, *flags]) == 130
    command = shlex.join(["imagetask", *base, *again])
    assert capsys.readouterr().err == f"imagetask: interrupted; to continue: {command}\n"
    assert main(shlex.split(command)[1:]) == 0
    assert [row["prompt"] for row in output(out, "jsonl")] == [f"prompt {i}" for i in range(6)]
