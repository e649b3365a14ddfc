"""The run-folder reader: what it reads back, and that a hostile folder gives the same one
error to every reader (resume, the gallery, `ReplayModel`, `bench --replay`)."""

from __future__ import annotations

import ast
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetask import ImageGeneration, ReadError
from imagetask.cli import main
from imagetask.errors import ImageTaskError, RunError, RunInterrupted
from imagetask.gallery._page import build_gallery
from imagetask.io._run_folder import RunFolder, RunRecord, StagedStream, open_run
from imagetask.models import PlaceholderImageGeneration
from imagetask.models.openai_batch import _backend as openai_batch
from imagetask.testing import ReplayModel
from tests.support.runs import StopsAt30

PROMPTS = [{"prompt": f"p{i}"} for i in range(50)]


def _task(model: PlaceholderImageGeneration | None = None) -> ImageGeneration:
    model = model or PlaceholderImageGeneration(size="4x4")
    return ImageGeneration(name="gen", image_generation_model=model, input_batch_size=10)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished JSONL run, a finished Parquet run, a JSONL run under way (no `run.json`)
    and an interrupted Parquet run whose rows are all staged."""
    folder = tmp_path_factory.mktemp("runs")
    _task().run(PROMPTS[:4], folder / "jsonl")
    _task().run(PROMPTS[:4], folder / "parquet", format="parquet")
    _task().run(PROMPTS[:4], folder / "under-way", limit=2)
    (folder / "under-way" / "run.json").unlink()
    with pytest.raises(RunInterrupted):
        _task(StopsAt30(size="4x4")).run(PROMPTS, folder / "staged", format="parquet")
    return folder


def _copy(runs: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs / name, tmp_path / name))


def _error(read: Callable[[], object]) -> tuple[type[ImageTaskError], str]:
    """The class and message of the error `read` raises."""
    with pytest.raises(ImageTaskError) as caught:
        read()
    return type(caught.value), str(caught.value)


def _run_readers(folder: Path) -> list[Callable[[], object]]:
    """The readers of a run that ended."""
    return [
        lambda: build_gallery(folder),
        lambda: ReplayModel.from_run(folder),
        lambda: RunFolder(folder).summary(),
    ]


def _checkpoint_readers(folder: Path, format: str = "jsonl") -> list[Callable[[], object]]:
    """The readers of a run under way."""
    return [
        lambda: _task().run(PROMPTS[:4], folder, format=format, resume=True),  # type: ignore[arg-type]
        lambda: build_gallery(folder),
        lambda: open_run(folder),
    ]


def _same_error(readers: list[Callable[[], object]]) -> tuple[type[ImageTaskError], str]:
    """The one error every reader raises."""
    errors = {_error(read) for read in readers}
    assert len(errors) == 1, errors
    (error,) = errors
    return error


# What the reader gives back.


def test_a_finished_run_reads_back_with_its_rows_in_order(runs: Path) -> None:
    for name, format in (("jsonl", "jsonl"), ("parquet", "parquet")):
        run = open_run(runs / name)
        assert run.format == format
        report = json.loads((runs / name / "run.json").read_text())
        assert run.record() == RunRecord(runs / name / "run.json", run.task, True, report)
        assert run.summary() == run.record()
        assert run.task["name"] == "gen" and run.complete is True
        assert run.staged() == ()
        rows = list(run.rows())
        assert [item.row["prompt"] for item in rows] == ["p0", "p1", "p2", "p3"]
        (data,) = run.data
        unit = "line" if format == "jsonl" else "row"
        assert [item.where for item in rows] == [f"{data} {unit} {n}" for n in range(1, 5)]
        checkpoint = run.checkpoint()
        assert checkpoint is not None and (checkpoint.rows_in, checkpoint.complete) == (4, True)


def test_a_run_under_way_reads_back_from_its_checkpoint(runs: Path) -> None:
    run = open_run(runs / "under-way")
    assert run.record() == RunRecord(runs / "under-way" / "checkpoint.json", run.task, False)
    assert [item.row["prompt"] for item in run.rows()] == ["p0", "p1"]
    with pytest.raises(ReadError) as caught:
        run.summary()
    assert str(caught.value) == (
        f"{runs / 'under-way'} holds no finished run (no run.json): finish the run first "
        "(imagetask generate ... --resume)"
    )


def test_staged_rows_are_read_as_far_as_the_checkpoint_records(runs: Path) -> None:
    run = open_run(runs / "staged")
    staged = run.staged()
    assert run.data == () and run.format == "parquet"
    assert sum(stream.rows for stream in staged) == 30
    assert all(isinstance(stream, StagedStream) for stream in staged)
    assert {stream.path.parent for stream in staged} == {runs / "staged" / ".staging"}
    rows = list(run.rows())
    assert [item.row["prompt"] for item in rows] == [f"p{i}" for i in range(30)]
    assert rows[0].where == f"{staged[0].path} row 1"


def test_a_folder_without_a_checkpoint_has_none(tmp_path: Path) -> None:
    assert RunFolder(tmp_path).checkpoint() is None
    assert RunFolder(tmp_path / "nope").checkpoint() is None


def test_the_batch_api_reads_nothing_of_the_run_folder() -> None:
    tree = ast.parse(Path(openai_batch.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "imagetask.models._openai_images" in imported
    assert [name for name in imported if name.startswith(("imagetask.run", "imagetask.io"))] == []


# A hostile folder: the same one error whoever reads it.


def test_a_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "nope"
    assert _same_error(_run_readers(folder)) == (ReadError, f"{folder}: no such folder")


@pytest.mark.parametrize(
    ("change", "fault"),
    [
        (
            {"task": {"name": "t", "num_generations": "two"}},
            "the task's `num_generations` is 'two', not a count of at least 1: not written by "
            "imagetask",
        ),
        (
            {"task": {"name": ["t"]}},
            "the task's `name` is ['t'], not text: not written by imagetask",
        ),
        ({"task": {"output_mappings": {}}}, "not a run summary (no task name)"),
        (
            {"data": "../elsewhere.jsonl"},
            "`data` is '../elsewhere.jsonl', not one of data.jsonl, data.parquet, data/: not "
            "a run summary",
        ),
        (
            {"data": "/etc/hosts"},
            "`data` is '/etc/hosts', not one of data.jsonl, data.parquet, data/: not a run summary",
        ),
        ({"task": 3}, "no task recorded: not written by imagetask"),
        (
            {"task": {"name": "t", "type_info": json.loads("[" * 70 + "]" * 70)}},
            "nested more than 64 levels deep: not written by imagetask",
        ),
    ],
)
def test_a_hostile_run_json(runs: Path, tmp_path: Path, change: dict[str, Any], fault: str) -> None:
    folder = _copy(runs, "jsonl", tmp_path)
    record = folder / "run.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), **change}))
    assert _same_error(_run_readers(folder)) == (ReadError, f"{record}: {fault}")


def test_a_run_json_too_deep_to_parse(runs: Path, tmp_path: Path) -> None:
    folder = _copy(runs, "jsonl", tmp_path)
    record = folder / "run.json"
    record.write_text('{"task": {"name": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    assert _same_error(_run_readers(folder)) == (
        ReadError,
        f"{record}: nested too deeply: not written by imagetask",
    )


@pytest.mark.parametrize(
    ("change", "fault"),
    [
        (
            lambda state: state.update(rows_in=-1),
            "not a checkpoint this version can resume: Expected `int` >= 0 - at `$.rows_in`",
        ),
        (
            lambda state: state.update(version=1),
            "not a checkpoint this version can resume: Invalid enum value 1 - at `$.version`",
        ),
        (
            lambda state: state.pop("task"),
            "not a checkpoint this version can resume: Object missing required field `task`",
        ),
        (
            lambda state: state["sink"].update(rows=5),
            "not a checkpoint this version can resume: `sink.rows` (5) is not `rows_out` (2)",
        ),
        (
            lambda state: state["task"].update(num_generations="two"),
            "the task's `num_generations` is 'two', not a count of at least 1: not written by "
            "imagetask",
        ),
    ],
)
def test_a_hostile_checkpoint(
    runs: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], fault: str
) -> None:
    folder = _copy(runs, "under-way", tmp_path)
    record = folder / "checkpoint.json"
    state = json.loads(record.read_text())
    change(state)
    record.write_text(json.dumps(state))
    assert _same_error(_checkpoint_readers(folder)) == (RunError, f"{record}: {fault}")


def test_a_checkpoint_too_deep_to_parse(runs: Path, tmp_path: Path) -> None:
    folder = _copy(runs, "under-way", tmp_path)
    record = folder / "checkpoint.json"
    deep = "[" * 100_000 + "]" * 100_000
    record.write_text('{"version": 2, "format": "jsonl", "task": {"a": ' + deep + "}}")
    assert _same_error(_checkpoint_readers(folder)) == (
        RunError,
        f"{record}: not a checkpoint this version can resume: nested too deeply",
    )


@pytest.mark.parametrize("name", ["absolute", "../../outside.arrows", "staged-1.arrows"])
def test_a_checkpoint_naming_a_file_outside_the_staging_folder(
    runs: Path, tmp_path: Path, name: str
) -> None:
    folder = _copy(runs, "staged", tmp_path)
    outside = tmp_path / "outside.arrows"
    shutil.copy(next((folder / ".staging").iterdir()), outside)
    name = str(outside) if name == "absolute" else name
    record = folder / "checkpoint.json"
    state = json.loads(record.read_text())
    state["sink"]["staged"][0]["name"] = name
    record.write_text(json.dumps(state))
    assert _same_error(_checkpoint_readers(folder, "parquet")) == (
        ReadError,
        f"{record}: the sink names {name!r}, not a staged stream of .staging",
    )


def test_a_data_line_cut_short(runs: Path, tmp_path: Path) -> None:
    folder = _copy(runs, "jsonl", tmp_path)
    data = folder / "data.jsonl"
    lines = data.read_bytes().splitlines(keepends=True)
    data.write_bytes(b"".join(lines[:3]) + lines[3][:20])
    readers = [
        lambda: build_gallery(folder),
        lambda: ReplayModel.from_run(folder),
        lambda: list(RunFolder(folder).rows()),
    ]
    kind, message = _same_error(readers)
    assert kind is ReadError and message.startswith(f"{data} line 4: invalid JSON")


def test_a_parquet_shard_cut_short(runs: Path, tmp_path: Path) -> None:
    folder = _copy(runs, "parquet", tmp_path)
    (shard,) = (folder / "data").glob("*.parquet")
    shard.write_bytes(shard.read_bytes()[:100])
    readers = [
        lambda: build_gallery(folder),
        lambda: ReplayModel.from_run(folder),
        lambda: list(RunFolder(folder).rows()),
    ]
    kind, message = _same_error(readers)
    assert kind is ReadError and message.startswith(f"{shard}: not a readable Parquet file: ")


def test_a_staged_stream_cut_short(runs: Path, tmp_path: Path) -> None:
    folder = _copy(runs, "staged", tmp_path)
    stream = RunFolder(folder).staged()[0].path
    stream.write_bytes(stream.read_bytes()[:50])
    readers = [lambda: build_gallery(folder), lambda: list(RunFolder(folder).rows())]
    kind, message = _same_error(readers)
    assert kind is ReadError and message.startswith(f"{stream}: cannot be read: ")


def test_the_commands_print_the_readers_error_on_one_line(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(runs, "jsonl", tmp_path)
    record = folder / "run.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "data": "../x"}))
    expected = (
        f"imagetask: error: {record}: `data` is '../x', not one of data.jsonl, "
        "data.parquet, data/: not a run summary\n"
    )
    for args in (["gallery", str(folder)], ["bench", "--rows", "3", "--replay", str(folder)]):
        capsys.readouterr()
        assert main(args) == 1
        assert capsys.readouterr().err == expected


counter = itertools.count()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
RECORD_PLACES = [
    ("task",),
    ("data",),
    ("task", "name"),
    ("task", "input_mappings"),
    ("task", "output_mappings"),
    ("task", "output_mappings", "image"),
    ("task", "metadata_column"),
    ("task", "num_generations"),
    ("task", "group_generations"),
    ("task", "add_raw_input"),
    ("task", "type_info"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    source = folder / "prompts.txt"
    source.write_text("a cat\na dog\n")
    assert main(["generate", str(source), "-o", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(place=st.sampled_from(RECORD_PLACES), value=json_values)
def test_a_run_json_changed_anywhere_gives_a_page_and_a_bench_or_one_error_line(
    finished_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    place: tuple[str, ...],
    value: Any,
) -> None:
    run = tmp_path / str(next(counter))
    shutil.copytree(finished_run, run)
    record = run / "run.json"
    state = json.loads(record.read_text())
    *parents, last = place
    holder = state
    for key in parents:
        holder = holder[key]
    holder[last] = value
    record.write_text(json.dumps(state))
    capsys.readouterr()
    for args in (["gallery", str(run)], ["bench", "--rows", "3", "--replay", str(run)]):
        status = main(args)  # a traceback would fail the test here
        err = capsys.readouterr().err
        if status != 0:
            assert status == 1
            assert err.startswith("imagetask: error: ") and err.count("\n") == 1, err
            assert str(run) in err
