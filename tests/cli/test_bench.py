"""`imagetask bench`: rows built at volume with a scripted or replayed model, one line per
path with its counts, and peak memory; a user's mistake is one line and exit status 1."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from imagetask import ImageGeneration, _bench
from imagetask.cli import main
from imagetask.testing import ScriptedModel

LINE = re.compile(
    r"^(?P<path>\w+) +(?P<rows>[\d,]+) +(?P<failed>[\d,]+) +(?P<build>[\d.]+) +"
    r"(?P<rate>[\d,]+|inf) +(?P<model>[\d.]+)$"
)


def bench_lines(out: str) -> tuple[str, dict[str, tuple[int, int]], str]:
    """(description, {path: (rows out, failed)}, memory line) of bench's output."""
    lines = out.splitlines()
    assert lines[1].split() == [
        "path",
        "rows",
        "out",
        "failed",
        "build",
        "s",
        "rows/s",
        "model",
        "s",
    ]
    paths = {}
    for line in lines[2:-1]:
        found = LINE.match(line)
        assert found is not None, line
        paths[found["path"]] = (int(found["rows"].replace(",", "")), int(found["failed"]))
    assert re.fullmatch(
        r"peak memory: [\d.]+ MB resident \(ru_maxrss of this process, every path; [\d.]+ MB "
        r"before the first batch\)",
        lines[-1],
    ), lines[-1]
    return lines[0], paths, lines[-1]


def test_bench_builds_every_row_with_the_scripted_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rows", "120", "--num-generations", "3", "--batch-size", "50"]) == 0
    description, paths, _ = bench_lines(capsys.readouterr().out)
    assert description == (
        "imagetask bench: ImageGeneration, 120 rows x 3 generations, raw output and input on, "
        "one row per generation, batches of 50, model: scripted (8x8 PNG bytes)"
    )
    assert paths == {"dict": (360, 0), "arrow": (360, 0)}


def test_bench_grouped_without_raw_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rows", "7", "--num-generations", "2", "--grouped", "--no-raw"]) == 0
    description, paths, _ = bench_lines(capsys.readouterr().out)
    assert "raw output and input off, one row per input, batches of 50" in description
    assert paths == {"dict": (7, 0), "arrow": (7, 0)}


def test_bench_replays_a_finished_run_for_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red bicycle\na blue kite\na green hat\n")
    run = tmp_path / "run"
    assert (
        main(["generate", str(prompts), "-o", str(run), "--num-generations", "2", "--quiet"]) == 0
    )
    capsys.readouterr()
    assert main(["bench", "--rows", "10", "--num-generations", "2", "--replay", str(run)]) == 0
    description, paths, _ = bench_lines(capsys.readouterr().out)
    assert description.endswith(f"model: replay of {run}")
    assert paths == {"dict": (20, 0), "arrow": (20, 0)}


def test_bench_runs_your_own_task_from_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "mytasks.py").write_text(
        textwrap.dedent(
            """
            from imagetask import ImageGeneration

            class Styled(ImageGeneration):
                @property
                def inputs(self):
                    return ["prompt", "style"]

                def format_input(self, input):
                    return f"{input['prompt']}, in the style of {input['style']}"
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "imagetask", "bench", "--rows", "60", "--task", "mytasks:Styled"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    description, paths, _ = bench_lines(done.stdout)
    assert description.startswith("imagetask bench: Styled, 60 rows x 1 generation, ")
    assert paths == {"dict": (60, 0), "arrow": (60, 0)}


def test_bench_without_pyarrow_measures_the_dict_path_and_says_why_not_arrow() -> None:
    code = (
        "import sys\n"
        "sys.modules['pyarrow'] = None  # makes `import pyarrow` fail\n"
        "from imagetask.cli import main\n"
        "sys.exit(main(['bench', '--rows', '30']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert LINE.match(lines[2]) is not None and lines[2].startswith("dict ")
    assert lines[3].startswith(
        "arrow  not measured: the Arrow path (process_arrow) needs the `pyarrow` package, "
        "which is not installed: pip install '.[arrow]' in the imagetask source folder"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--rows", "0"], "--rows must be at least 1, got 0"),
        (["--num-generations", "0"], "--num-generations must be at least 1, got 0"),
        (["--batch-size", "-1"], "--batch-size must be at least 1, got -1"),
        (["--task", "nomodule"], "--task: expected MODULE:CLASS, got 'nomodule'"),
        (
            ["--task", "no_such_module_here:Task"],
            "--task: cannot import 'no_such_module_here': ModuleNotFoundError: No module named "
            "'no_such_module_here'",
        ),
        (["--task", "imagetask:Reader"], "--task: 'imagetask:Reader' is not an ImageTask subclass"),
    ],
)
def test_bench_mistakes_are_one_line(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *args]) == 1
    assert capsys.readouterr().err == f"imagetask: error: {error}\n"


def test_bench_replay_of_a_folder_without_a_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--replay", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {tmp_path} holds no finished run (no run.json): finish the run "
        "first (imagetask generate ... --resume)\n"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "imagetask:ImageTask",
            "imagetask: error: --task: ImageTask: TypeError: Can't instantiate abstract class",
        ),
        ("badtasks:Refusing", "imagetask: error: --task: Refusing: ValueError: not today\n"),
    ],
)
def test_a_task_class_that_cannot_be_made_is_one_line(
    tmp_path: Path, spec: str, message: str
) -> None:
    (tmp_path / "badtasks.py").write_text(
        "from imagetask import ImageGeneration\n\n"
        "class Refusing(ImageGeneration):\n"
        "    def __init__(self, **fields):\n"
        "        raise ValueError('not today')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "imagetask", "bench", "--rows", "5", "--task", spec],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr


def test_bench_replay_of_a_run_with_failures_counts_them_without_a_line_each(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"

    def answer(prompt: str, num_generations: int) -> Any:
        failed = RuntimeError("refused")
        return failed if prompt.endswith("7") else [{"images": [b"\x89PNG\r\n\x1a\n-image"]}]

    task = ImageGeneration(image_generation_model=ScriptedModel(answer))
    task.run([{"prompt": f"p{i}"} for i in range(40)], run)
    done = subprocess.run(
        [sys.executable, "-m", "imagetask", "bench", "--rows", "400", "--replay", str(run)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    _, paths, _ = bench_lines(done.stdout)
    assert paths == {"dict": (400, 40), "arrow": (400, 40)}


def test_bench_replay_of_a_malformed_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"task": {"name": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    assert main(["bench", "--replay", str(run)]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {run / 'run.json'}: nested too deeply: not written by imagetask\n"
    )


def test_the_paths_take_turns_over_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def recording(name: str) -> _bench.BenchPath:
        class Recording(_bench.DictPath):
            def data(self, rows: list[dict[str, Any]]) -> Any:
                seen.append((name, rows[0]["prompt"]))
                return rows

        return Recording()

    monkeypatch.setattr(_bench, "TURN_ROWS", 4)
    task = ImageGeneration(image_generation_model=ScriptedModel(), input_batch_size=2)
    rows = iter([{"prompt": f"p{i}"} for i in range(10)])
    batches = iter(lambda: list(itertools.islice(rows, 2)), [])
    first, second = _bench.measure(task, [recording("a"), recording("b")], batches)
    assert seen == [
        ("a", "p0"), ("a", "p2"), ("b", "p0"), ("b", "p2"),
        ("a", "p4"), ("a", "p6"), ("b", "p4"), ("b", "p6"),
        ("a", "p8"), ("b", "p8"),
    ]  # fmt: skip
    assert (first.rows_out, first.failed) == (second.rows_out, second.failed) == (10, 0)
    assert first.seconds > 0 and first.model_seconds > 0


def test_a_task_that_changes_its_input_rows_does_not_change_the_next_paths() -> None:
    class Marking(ImageGeneration):
        def format_input(self, input: dict[str, Any]) -> str:
            input["marked"] = True
            return str(input["prompt"])

    given: list[set[str]] = []

    class Arrow(_bench.ArrowPath):
        def data(self, rows: list[dict[str, Any]]) -> Any:
            given.extend(set(row) for row in rows)
            return super().data(rows)

    task = Marking(image_generation_model=ScriptedModel(), input_batch_size=2)
    rows = [{"prompt": f"p{i}"} for i in range(3)]
    batches = iter([rows[:2], rows[2:]])
    first, second = _bench.measure(task, [_bench.DictPath(), Arrow()], batches)
    assert given == [{"prompt"}] * 3
    assert (first.rows_out, second.rows_out) == (3, 3)
