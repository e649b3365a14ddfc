"""The `imagetask` command: runs, help, and one clear line for every user mistake."""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from imagetask import cli
from imagetask.cli import main
from imagetask.run._progress import Progress
from tests.support.outputs import image_bytes, recorded_table
from tests.support.repository import EXAMPLES

PROMPTS = EXAMPLES / "prompts.txt"


def test_generate_on_the_shipped_prompts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(
        [
            "generate",
            str(PROMPTS),
            "-o",
            str(out),
            "--num-generations",
            "2",
            "--save-artifacts",
            "--size",
            "16x16",
        ]
    )
    assert status == 0
    prompts = [line for line in PROMPTS.read_text().splitlines() if line.strip()]
    rows = [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]
    assert [row["prompt"] for row in rows] == [p for p in prompts for _ in range(2)]
    assert all((out / row["image_path"]).is_file() for row in rows)
    assert {row["model_name"] for row in rows} == {"placeholder"}
    report = json.loads((out / "run.json").read_text())
    assert (report["rows_in"], report["rows_out"], report["failed"]) == (
        len(prompts),
        2 * len(prompts),
        0,
    )
    captured = capsys.readouterr()
    assert captured.out == (
        f"imagetask: {len(prompts)} rows in, {2 * len(prompts)} rows out "
        f"({2 * len(prompts)} images, 0 failed, estimated cost unknown) -> {out}/data.jsonl\n"
        f"browse: imagetask gallery {out}\n"
    )
    # Not a terminal: plain progress lines.
    assert f"{len(prompts)}/{len(prompts)} rows | {2 * len(prompts)} images" in captured.err


def test_no_inline_images_keeps_each_image_in_its_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["generate", str(PROMPTS), "-o", str(out), "--size", "4x4", "--quiet"]
    assert main([*args, "--save-artifacts", "--no-inline-images"]) == 0
    rows = [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]
    assert rows and all("image" not in row for row in rows)
    assert all((out / row["image_path"]).read_bytes().startswith(b"\x89PNG") for row in rows)
    capsys.readouterr()
    assert main([*args, "--no-inline-images", "--overwrite"]) == 1
    assert capsys.readouterr().err == (
        "imagetask: error: ImageGeneration: inline_images=False keeps each image only as its "
        "artifact file: it needs save_artifacts=True\n"
    )


def test_parquet_output_with_a_mapped_column(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("caption,id\na cat,1\na dog,2\n")
    status = main(
        [
            "generate",
            str(source),
            "-o",
            str(tmp_path / "out"),
            "--format",
            "parquet",
            "--column",
            "prompt=caption",
            "--size",
            "4x4",
            "--quiet",
        ]
    )
    assert status == 0
    table = recorded_table(tmp_path / "out")
    assert table.column("caption").to_pylist() == ["a cat", "a dog"]
    assert all(image.startswith(b"\x89PNG") for image in image_bytes(table))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl"], "imagetask: error: missing.jsonl: no such file"),
        ([str(PROMPTS), "--model", "gpt"], "imagetask: error: --model: unknown model spec 'gpt'"),
        (
            [str(PROMPTS), "--model", "openai:dall-e-3", "--seed", "1"],
            "imagetask: error: --seed: the OpenAI Images API takes no seed",
        ),
        (
            [str(PROMPTS), "--base-url", "http://localhost:1/v1"],
            "imagetask: error: --base-url is for openai:<model>",
        ),
        (
            [str(PROMPTS), "--column", "text"],
            "imagetask: error: --column: expected prompt=<column>, got 'text'",
        ),
        (
            [str(PROMPTS), "--size", "big"],
            "imagetask: error: --size: size 'big' is not WIDTHxHEIGHT",
        ),
        (
            [str(PROMPTS), "--batch-size", "0"],
            "imagetask: error: --batch-size must be at least 1, got 0",
        ),
    ],
)
def test_user_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status = main(["generate", *args, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_bad_row_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a"}\n{"caption": "b"}\n')
    assert main(["generate", str(source), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {source} line 2: the row lacks the input column 'prompt' "
        "(its columns: 'caption')\n"
    )
    source.write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    assert main(["generate", str(source), "-o", str(tmp_path / "out2"), "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"imagetask: error: {source} line 2: invalid JSON: ")


def test_a_missing_openai_key_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    status = main(
        ["generate", str(PROMPTS), "-o", str(tmp_path / "o"), "--model", "openai:gpt-image-1"]
    )
    assert status == 1
    assert capsys.readouterr().err == (
        "imagetask: error: OpenAIImageGeneration: no API key: pass `api_key` or set "
        "OPENAI_API_KEY\n"
    )


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["generate", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "INPUT",
        "-o OUTDIR",
        "--model SPEC",
        "--num-generations N",
        "--batch-size B",
        "--save-artifacts",
        "--no-inline-images",
        "--format {jsonl,parquet}",
        "--shard-mb MB",
        "data/train-*.parquet",
        "--resume",
        "--limit N",
        "--column prompt=COL",
        "--size WxH",
        "--seed SEED",
        "--base-url URL",
        "--max-concurrency N",
        "--rpm N",
        "--ipm N",
        "--checkpoint-every SECONDS",
        "--quiet",
        "openai:<model>",
        "hf:<model id>",
        "checkpoint.json",
        "--param KEY=VALUE",
        "--template TEXT",
        "--timeout SECONDS",
        "--max-retries N",
        "--images-per-request N",
        "--api-key-env NAME",
        "--task MODULE:CLASS",
        '--template "a photo of {subject} in {style}"',
    ):
        assert option in text, option
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "generate" in capsys.readouterr().out


def test_the_console_script_is_installed(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagetask.cli",
            "generate",
            str(PROMPTS),
            "-o",
            str(tmp_path / "o"),
            "--size",
            "4x4",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imagetask: 12 rows in, 12 rows out")


def test_progress_redraws_one_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(10, stream=stream, redraw=0.0)
    progress.update(5, 9, 1)
    progress.close()
    frames = stream.getvalue().split("\r\x1b[2K")[1:]
    assert len(frames) == 2 and frames[-1].endswith(" local work\n")
    assert frames[0].startswith("[############............] 5/10 rows | 9 images | ")
    assert " images/s | 0.0 MB/s | 1 failed | ETA 0:00:0" in frames[0]


def test_progress_reports_megabytes_per_second_and_the_time_spent_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("imagetask.run._progress.time.monotonic", lambda: now[0])
    stream = io.StringIO()
    progress = Progress(40, stream=stream, interval=1000.0)
    with progress.waiting():
        now[0] += 6.0  # the model's answers take 6 s
    now[0] += 4.0
    progress.update(10, 20, 0, image_bytes=50_000_000)
    now[0] += 10.0
    progress.close()
    *_, report, shares = stream.getvalue().splitlines()
    assert report.partition(" ")[2] == (
        "10/40 rows | 20 images | 1.0 images/s | 2.5 MB/s | 0 failed | ETA 0:01:00"
    )
    assert shares == "0:00:20 in all: 30% waiting for the model, 70% local work"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", ""], "imagetask: error: -o/--output: the output folder is an empty path\n"),
        (
            ["-o", "x", "--checkpoint-every", "nan"],
            "imagetask: error: --checkpoint-every must be a finite number of seconds >= 0, "
            "got nan\n",
        ),
    ],
)
def test_empty_output_path_and_nan_checkpoints_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["generate", str(PROMPTS), *args, "--quiet"]) == 1
    assert capsys.readouterr().err == message
    assert list(tmp_path.iterdir()) == []


def test_an_empty_input_gives_an_empty_parquet_file(tmp_path: Path) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_bytes(b"")
    out = tmp_path / "out"
    assert main(["generate", str(source), "-o", str(out), "--quiet", "--format", "parquet"]) == 0
    table = pq.read_table(out / "data" / "train-00000.parquet")
    assert (table.num_rows, table.column_names) == (0, ["prompt", "image", "model_name"])
    assert sorted(path.name for path in (out / "data").iterdir()) == ["train-00000.parquet"]


WITHOUT_POSIX_MODULES = """\
import sys

sys.modules["fcntl"] = None  # importing it fails, as on Windows
sys.modules["resource"] = None
"""

HOLD_LOCK = """\
import sys
from pathlib import Path

from imagetask.run._lock import FolderLock

lock = FolderLock(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


def test_runs_lock_and_bench_without_fcntl_and_resource(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(WITHOUT_POSIX_MODULES)
    path = os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}

    def imagetask(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "imagetask", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    for module in ("fcntl", "resource"):
        hidden = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=False)
        assert hidden.returncode == 1
    source = tmp_path / "prompts.txt"
    source.write_text("a cat\na dog\n")
    done = imagetask("generate", str(source), "-o", str(tmp_path / "a"), "--size", "4x4", "--quiet")
    assert (done.returncode, done.stderr) == (0, "")
    assert len((tmp_path / "a" / "data.jsonl").read_bytes().splitlines()) == 2
    out = tmp_path / "b"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        refused = imagetask("generate", str(source), "-o", str(out), "--size", "4x4", "--quiet")
        assert (refused.returncode, refused.stderr) == (
            1,
            f"imagetask: error: {out} is in use by another run (process {holder.pid} holds "
            f"{out / '.imagetask.lock'}): wait for it to end, or choose another folder\n",
        )
    finally:
        holder.communicate("", timeout=60)
    done = imagetask("generate", str(source), "-o", str(out), "--size", "4x4", "--quiet")
    assert (done.returncode, done.stderr) == (0, "")
    bench = imagetask("bench", "--rows", "3")
    assert (bench.returncode, bench.stderr) == (0, "")
    assert bench.stdout.splitlines()[-1] == (
        "peak memory: not measured (this system has no `resource` module)"
    )


@pytest.mark.parametrize("model", ["placeholder", "openai-batch:gpt-image-1"])
def test_a_checkpoint_nested_too_deeply_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    checkpoint = out / "checkpoint.json"
    deep = "[" * 100_000 + "]" * 100_000
    checkpoint.write_text('{"version": 2, "format": "jsonl", "task": {"a": ' + deep + "}}")
    args = ["generate", str(PROMPTS), "-o", str(out), "--resume", "--quiet", "--model", model]
    assert main(args) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {checkpoint}: not a checkpoint this version can resume: nested too "
        "deeply\n"
    )


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_command_refused_at_its_first_row_leaves_nothing_that_blocks_the_corrected_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], format: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("caption,id\na cat,1\na dog,2\n")
    out = tmp_path / "out"
    command = ["generate", str(source), "-o", str(out), "--format", format, "--quiet"]
    assert main([*command, "--column", "prompt=capton"]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {source} line 2: the row lacks the input column 'capton' (its "
        "columns: 'caption', 'id')\n"
    )
    assert [path.name for path in out.iterdir()] == [".imagetask.lock"]
    assert main([*command, "--column", "prompt=caption"]) == 0
    report = json.loads((out / "run.json").read_text())
    assert (report["rows_in"], report["rows_out"], report["resumed_from"]) == (2, 2, 0)


def test_a_run_freezes_what_the_process_holds_only_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen: list[int] = []

    def recorded_run(*args: Any, **kwargs: Any) -> Any:
        frozen.append(gc.get_freeze_count())
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", recorded_run)
    status = main(["generate", str(PROMPTS), "-o", str(tmp_path / "out"), "--size", "16x16"])
    assert status == 130  # the run stopped by Ctrl-C
    assert frozen[0] > 0 and gc.get_freeze_count() == 0
