"""The `imagetask` command: runs, help, and one clear line for every user mistake."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from outputs import image_bytes, recorded_table
from test_crash import rows_done

from imagetask.cli import main
from imagetask.errors import ReadError
from imagetask.io._readers import Reader
from imagetask.run._progress import Progress

PROMPTS = Path(__file__).parent.parent / "examples" / "prompts.txt"


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


def test_limit_and_resume(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert (
        main(["generate", str(PROMPTS), "-o", out, "--limit", "5", "--quiet", "--size", "4x4"]) == 0
    )
    assert main(["generate", str(PROMPTS), "-o", out, "--resume", "--quiet", "--size", "4x4"]) == 0
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (report["rows_in"], report["resumed_from"], report["complete"]) == (12, 5, True)


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


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(12000)))
    command = [
        sys.executable, "-m", "imagetask", "generate", str(source), "-o", str(tmp_path / "o"),
        "--size", "4x4", "--batch-size", "4", "--checkpoint-every", "0", "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt once the first batches are checkpointed.
    while process.poll() is None and rows_done(tmp_path / "o") == 0:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate()
    assert process.returncode == 130, err
    done = json.loads((tmp_path / "o" / "checkpoint.json").read_text())["rows_in"]
    assert 0 < done < 12000
    resume = shlex.join(["imagetask", *command[3:], "--resume"])
    assert err == f"imagetask: interrupted after {done:,} input rows; to continue: {resume}\n"
    assert (tmp_path / "o" / "data.jsonl").read_bytes().count(b"\n") == done
    finished = subprocess.run([*command, "--resume"], capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "o" / "data.jsonl").read_bytes().count(b"\n") == 12000


def test_progress_redraws_one_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(10, stream=stream, redraw=0.0)
    progress.update(5, 9, 1)
    progress.close()
    frames = stream.getvalue().split("\r\x1b[2K")[1:]
    assert len(frames) == 2 and frames[-1].endswith("\n")
    assert frames[0].startswith("[############............] 5/10 rows | 9 images | ")
    assert " images/s | 1 failed | ETA 0:00:0" in frames[0]


def hostile_inputs(tmp_path: Path) -> list[tuple[Path, str]]:
    """Input files a user may well have, and the one line each must give."""
    cases = []
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
    cases.append((path, f"{path} line 2: not UTF-8 text ("))
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b'{"prompt": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n")
    cases.append((path, f"{path} line 1: JSON nested too deeply"))
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    cases.append((path, f"{path}: not a readable Parquet file: "))
    path = tmp_path / "late.csv"
    path.write_bytes(b"prompt\n" + b"a fine prompt\n" * 3000 + b"caf\xe9\n" + b"more\n" * 10)
    cases.append((path, f"{path} line 3002: not UTF-8 text ("))
    path = tmp_path / "deep-for-parquet.jsonl"
    path.write_bytes(b'{"prompt": "a", "x": ' + b"[" * 60 + b"]" * 60 + b"}\n")
    cases.append(
        (
            path,
            f"{path} line 1: the batch from this row cannot be written, so the run stops "
            f"with the rows before it: {tmp_path / 'out' / 'data'}: the column 'x' is "
            "nested too deeply for Parquet (readers accept 100 levels)",
        )
    )
    return cases


def test_hostile_input_files_are_one_line_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for source, message in hostile_inputs(tmp_path):
        out = tmp_path / "out"
        status = main(["generate", str(source), "-o", str(out), "--quiet", "--format", "parquet"])
        err = capsys.readouterr().err
        assert status == 1, source
        assert err.startswith(f"imagetask: error: {message}"), err
        assert err.count("\n") == 1, err
        shutil.rmtree(out, ignore_errors=True)


def test_a_byte_order_mark_does_not_rename_the_first_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "excel.csv"
    source.write_bytes(b"\xef\xbb\xbfprompt,id\r\na cat,1\r\na dog,2\r\n")
    out = tmp_path / "out"
    assert main(["generate", str(source), "-o", str(out), "--quiet", "--size", "4x4"]) == 0
    rows = [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]
    assert [(row["prompt"], row["id"]) for row in rows] == [("a cat", "1"), ("a dog", "2")]
    assert capsys.readouterr().out.endswith(
        f"-> {out / 'data.jsonl'}\nbrowse: imagetask gallery {out}\n"
    )


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


def test_a_csv_field_as_long_as_a_jsonl_line_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long = "a long prompt " * 20_000  # 280,000 characters
    source = tmp_path / "long.csv"
    source.write_text(f'prompt,id\nshort,1\n"{long}",2\n')
    assert [(line, row["id"], len(row["prompt"])) for line, row in Reader(source)] == [
        (2, "1", 5),
        (3, "2", len(long)),
    ]
    out = tmp_path / "out"
    assert main(["generate", str(source), "-o", str(out), "--quiet", "--size", "4x4"]) == 0
    rows = [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]
    assert [row["prompt"] for row in rows] == ["short", long]


def test_csv_rows_and_errors_name_their_own_line(tmp_path: Path) -> None:
    source = tmp_path / "spread.csv"
    source.write_text('prompt,id\n\nfirst,1\n"spread\nover\nthree",2\nlast,3\n')
    assert [(line, row["id"]) for line, row in Reader(source)] == [(3, "1"), (4, "2"), (7, "3")]
    source.write_text('prompt,id\nfirst,1\n"spread\nover",2\nfour,4,extra\n')
    with pytest.raises(ReadError) as caught:
        list(Reader(source))
    assert str(caught.value) == f"{source} line 5: more fields than the header's 2"
    source.write_text("prompt,id\nfirst,1\nbare\rreturn,2\nlast,3\n")
    with pytest.raises(ReadError) as caught:
        list(Reader(source))
    assert str(caught.value).startswith(f"{source} line 3: ")


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
