"""A run's promises against failures inside one process: a batch that cannot be written,
a checkpoint that does not match its output, runs sharing a task or a folder, bad options,
empty input, and image files synced before the checkpoint that refers to them."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from outputs import recorded_table

from imagetask import ImageGeneration
from imagetask.errors import ConfigError, RunError, RunInterrupted, SinkError
from imagetask.models import PlaceholderImageGeneration
from imagetask.run._lock import FolderLock


def make_task(**fields: Any) -> ImageGeneration:
    fields.setdefault("input_batch_size", 3)
    return ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"), **fields)


def prompts(count: int) -> list[dict[str, Any]]:
    return [{"prompt": f"prompt {i}", "id": i} for i in range(count)]


def lines(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


def checkpoint(out: Path) -> dict[str, Any]:
    return json.loads((out / "checkpoint.json").read_text())  # type: ignore[no-any-return]


# A batch that cannot be written stops the run at the batch before it.


def test_a_row_json_cannot_encode_stops_the_run_at_the_batch_before(tmp_path: Path) -> None:
    rows = prompts(12)
    rows[7]["id"] = "a lone surrogate \ud800"  # no UTF-8 for it
    out = tmp_path / "out"
    with pytest.raises(SinkError) as caught:
        make_task().run(rows, out, batches_in_flight=3)
    assert str(caught.value).startswith(
        "input row 6: the batch from this row cannot be written, so the run stops with the "
        f"rows before it: {out / 'data.jsonl'}: a row cannot be written as JSON: "
    )
    assert [row["id"] for row in lines(out / "data.jsonl")] == list(range(6))
    state = checkpoint(out)
    assert (state["rows_in"], state["rows_out"], state["complete"]) == (6, 6, False)
    # The same input stops at the same row, without writing anything twice.
    with pytest.raises(SinkError):
        make_task().run(rows, out, resume=True)
    assert [row["id"] for row in lines(out / "data.jsonl")] == list(range(6))
    # Input fixed: the resume writes every row once.
    rows[7]["id"] = 7
    summary = make_task().run(rows, out, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.rows_out) == (6, 12, 12)
    assert [row["id"] for row in lines(out / "data.jsonl")] == list(range(12))


def test_a_parquet_column_whose_type_changes_stops_the_run(tmp_path: Path) -> None:
    rows = prompts(9)
    for row in rows[3:6]:
        row["id"] = f"text {row['id']}"
    out = tmp_path / "out"
    task = make_task(images_as_bytes=True)
    with pytest.raises(SinkError) as caught:
        task.run(rows, out, format="parquet", batches_in_flight=2)
    assert str(caught.value) == (
        "input row 3: the batch from this row cannot be written, so the run stops with the "
        f"rows before it: {out / 'data'}: the batch's columns do not agree with the "
        "previous ones': Unable to merge: Field id has incompatible types: int64 vs string"
    )
    state = checkpoint(out)
    assert (state["rows_in"], state["rows_out"]) == (3, 3)
    for row in rows[3:6]:
        row["id"] = int(row["id"].removeprefix("text "))
    summary = task.run(rows, out, format="parquet", resume=True)
    assert (summary.rows_in, summary.rows_out) == (9, 9)
    assert recorded_table(out).column("id").to_pylist() == list(range(9))


# Resume checks the checkpoint and the output against each other.


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda state: state.update(sink=None),
            "not a checkpoint this version can resume: Expected `object`, got `null` - at `$.sink`",
        ),
        (
            lambda state: state.pop("rows_in"),
            "not a checkpoint this version can resume: Object missing required field `rows_in`",
        ),
        (
            lambda state: state.update(rows_out="6"),
            "not a checkpoint this version can resume: Expected `int`, got `str` - at `$.rows_out`",
        ),
        (
            lambda state: state.update(complete=1),
            "not a checkpoint this version can resume: Expected `bool`, got `int` - at "
            "`$.complete`",
        ),
        (
            lambda state: state.update(rows_in=-1),
            "not a checkpoint this version can resume: Expected `int` >= 0 - at `$.rows_in`",
        ),
        (
            lambda state: state.update(version=1),
            "not a checkpoint this version can resume: Invalid enum value 1 - at `$.version`",
        ),
        (
            lambda state: state["sink"].pop("bytes"),
            "the checkpoint's `sink` is not valid: Object missing required field `bytes`",
        ),
        (
            lambda state: state["sink"].update(rows=5),
            "not a checkpoint this version can resume: `sink.rows` (5) is not `rows_out` (6)",
        ),
    ],
)
def test_resume_refuses_a_checkpoint_with_a_bad_key(
    tmp_path: Path, change: Any, message: str
) -> None:
    make_task().run(prompts(10), tmp_path, limit=6)
    state = checkpoint(tmp_path)
    change(state)
    (tmp_path / "checkpoint.json").write_text(json.dumps(state))
    data = (tmp_path / "data.jsonl").read_bytes()
    with pytest.raises(RunError) as caught:
        make_task().run(prompts(10), tmp_path, resume=True)
    assert str(caught.value).endswith(message), str(caught.value)
    assert (tmp_path / "data.jsonl").read_bytes() == data


def test_resume_refuses_an_output_shorter_than_recorded(tmp_path: Path) -> None:
    make_task().run(prompts(10), tmp_path, limit=6)
    data = tmp_path / "data.jsonl"
    recorded = checkpoint(tmp_path)["sink"]["bytes"]
    with data.open("r+b") as file:
        file.truncate(recorded - 10)
    with pytest.raises(RunError) as caught:
        make_task().run(prompts(10), tmp_path, resume=True)
    assert str(caught.value) == (
        f"{data}: holds {recorded - 10:,} bytes, fewer than the {recorded:,} the checkpoint "
        "records: the output was changed or lost since; start again in an empty folder"
    )
    # Nothing was written: no padding up to the recorded size.
    assert data.stat().st_size == recorded - 10
    assert b"\0" not in data.read_bytes()


def test_resume_refuses_an_output_whose_rows_differ_from_recorded(tmp_path: Path) -> None:
    make_task().run(prompts(10), tmp_path, limit=6)
    data = tmp_path / "data.jsonl"
    content = data.read_bytes()
    data.write_bytes(content.replace(b"\n", b" ", 1))  # same size, one line fewer
    with pytest.raises(RunError, match=r"its first [\d,]+ bytes hold 5 whole lines, not the 6"):
        make_task().run(prompts(10), tmp_path, resume=True)
    data.unlink()
    with pytest.raises(RunError, match=r"data.jsonl: holds 0 bytes, fewer than the [\d,]+"):
        make_task().run(prompts(10), tmp_path, resume=True)


def test_resume_refuses_parquet_shards_or_staged_batches_that_changed(tmp_path: Path) -> None:
    task = make_task(images_as_bytes=True)
    task.run(prompts(10), tmp_path / "limited", format="parquet", limit=6)
    state = checkpoint(tmp_path / "limited")
    shard = tmp_path / "limited" / "data" / state["sink"]["shards"][0]["name"]
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(RunError, match=r"train-00000.parquet: [\d,]+ bytes, not the [\d,]+ bytes"):
        task.run(prompts(10), tmp_path / "limited", format="parquet", resume=True)
    shard.unlink()
    with pytest.raises(RunError, match=r"train-00000.parquet: missing, not the [\d,]+ bytes"):
        task.run(prompts(10), tmp_path / "limited", format="parquet", resume=True)

    class Stop(PlaceholderImageGeneration):
        def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
            if "prompt 6" in inputs:
                raise KeyboardInterrupt
            return super().generate(inputs, num_generations, **kwargs)

    out = tmp_path / "staged"
    stopped = ImageGeneration(
        image_generation_model=Stop(size="4x4"), input_batch_size=3, images_as_bytes=True
    )
    with pytest.raises(RunInterrupted):
        stopped.run(prompts(10), out, format="parquet", batches_in_flight=1)
    [staged] = checkpoint(out)["sink"]["staged"]
    assert staged["rows"] == 6
    stream = out / ".staging" / staged["name"]
    with stream.open("r+b") as file:
        file.truncate(staged["bytes"] - 1)
    with pytest.raises(RunError, match=r"staged-00000.arrows: [\d,]+ bytes, fewer than the"):
        stopped.run(prompts(10), out, format="parquet", resume=True)
    assert stream.stat().st_size == staged["bytes"] - 1


def test_resume_after_the_first_checkpoint_only(tmp_path: Path) -> None:
    """The state a run killed before its first batch leaves: a checkpoint, no data."""
    make_task().run(prompts(4), tmp_path / "whole")
    out = tmp_path / "out"
    make_task().run(prompts(4), out, limit=0)
    (out / "data.jsonl").unlink()
    summary = make_task().run(prompts(4), out, resume=True)
    assert (summary.rows_in, summary.rows_out) == (4, 4)
    assert (out / "data.jsonl").read_bytes() == (tmp_path / "whole" / "data.jsonl").read_bytes()


# A run leaves the caller's task as it was; one run per folder at a time.


def test_concurrent_runs_sharing_one_task_keep_their_images_apart(tmp_path: Path) -> None:
    task = make_task(save_artifacts=True, num_generations=2)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(name: str, offset: int) -> None:
        rows = [{"prompt": f"{name} {i}"} for i in range(offset, offset + 30)]
        start.wait()
        try:
            task.run(rows, tmp_path / name)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(name, index * 100))
        for index, name in enumerate(("a", "b"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert task.output_dir == "."
    for name in ("a", "b"):
        rows = lines(tmp_path / name / "data.jsonl")
        assert len(rows) == 60
        assert all(row["prompt"].startswith(f"{name} ") for row in rows)
        images = tmp_path / name / "artifacts" / "image_generation_0" / "images"
        assert {path.name for path in images.iterdir()} == {
            Path(row["image_path"]).name for row in rows
        }


def test_a_second_run_on_a_folder_in_use_fails_at_once(tmp_path: Path) -> None:
    held = FolderLock(tmp_path)
    try:
        with pytest.raises(RunError) as caught:
            make_task().run(prompts(3), tmp_path)
        assert str(caught.value) == (
            f"{tmp_path} is in use by another run (process {os.getpid()} holds "
            f"{tmp_path / '.imagetask.lock'}): wait for it to end, or choose another folder"
        )
        assert not (tmp_path / "checkpoint.json").exists()
    finally:
        held.release()
    assert make_task().run(prompts(3), tmp_path).rows_out == 3


# Options are checked before anything is written.


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "csv"}, "run: format='csv': expected one of ['jsonl', 'parquet']"),
        (
            {"checkpoint_seconds": float("nan")},
            "run: checkpoint_seconds=nan: expected a finite number >= 0",
        ),
        (
            {"checkpoint_seconds": float("inf")},
            "run: checkpoint_seconds=inf: expected a finite number >= 0",
        ),
        ({"checkpoint_seconds": -1}, "run: checkpoint_seconds=-1: expected a finite number >= 0"),
        ({"limit": -2}, "run: limit=-2: expected None or an int >= 0"),
        ({"batches_in_flight": 0}, "run: batches_in_flight=0: expected an int >= 1"),
    ],
)
def test_bad_run_options(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_task().run(prompts(3), tmp_path / "out", **options)
    assert str(caught.value) == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_an_empty_input_gives_an_empty_output(tmp_path: Path, format: Any) -> None:
    task = make_task(images_as_bytes=True, save_artifacts=True)
    summary = task.run([], tmp_path, format=format)
    assert (summary.rows_in, summary.rows_out, summary.complete) == (0, 0, True)
    if format == "jsonl":
        assert (tmp_path / "data.jsonl").read_bytes() == b""
        return
    table = pq.read_table(tmp_path / "data" / "train-00000.parquet")
    assert table.num_rows == 0
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert table.schema.remove_metadata() == pa.schema(
        [
            ("prompt", pa.string()),
            ("image", image),
            ("image_path", pa.string()),
            ("model_name", pa.string()),
        ]
    )


# Image files are durable before the checkpoint that refers to them.


def test_image_files_are_synced_before_the_checkpoint_that_covers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: set[tuple[int, int]] = set()
    unsynced_at_checkpoint: list[str] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(descriptor: int) -> None:
        info = os.fstat(descriptor)
        synced.add((info.st_dev, info.st_ino))
        fsync(descriptor)

    def checking_replace(source: Any, target: Any) -> None:
        target = Path(target)
        if target.name == "checkpoint.json":
            state = json.loads(Path(source).read_text())
            data = target.parent / "data.jsonl"
            # The first checkpoint comes before the data file.
            content = data.read_bytes() if data.exists() else b""
            written = content[: state["sink"]["bytes"]].splitlines()
            for line in written:
                path = target.parent / msgspec.json.decode(line)["image_path"]
                info = path.stat()
                if (info.st_dev, info.st_ino) not in synced:
                    unsynced_at_checkpoint.append(str(path))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", checking_replace)
    summary = make_task(save_artifacts=True, num_generations=2).run(
        prompts(20), tmp_path, checkpoint_seconds=0
    )
    assert summary.rows_out == 40
    assert unsynced_at_checkpoint == []
    images = tmp_path / "artifacts" / "image_generation_0" / "images"
    for folder in (images, images.parent, images.parent.parent, tmp_path):
        info = folder.stat()
        assert (info.st_dev, info.st_ino) in synced, folder


def test_resuming_with_another_input_is_refused(tmp_path: Path) -> None:
    first = [{"prompt": f"A{i}"} for i in range(20)]
    other = [{"prompt": f"B{i}"} for i in range(20)]
    make_task().run(first, tmp_path, limit=5)
    with pytest.raises(RunError) as info:
        make_task().run(other, tmp_path, resume=True)
    assert str(info.value) == (
        "input row 0: not the row the run to resume read there: resume it with the input it "
        "started with"
    )
    edited = [*first[:4], {"prompt": "changed"}, *first[5:]]
    with pytest.raises(RunError, match=r"^input row 4: not the row"):
        make_task().run(edited, tmp_path, resume=True)
    summary = make_task().run(first, tmp_path, resume=True)
    assert (summary.rows_in, summary.complete) == (20, True)


def test_an_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("mine\n")
    with pytest.raises(RunError) as info:
        make_task().run([{"prompt": "a"}], target)
    assert str(info.value) == f"{target}: a file, not a folder: choose a folder for the output"
    assert target.read_text() == "mine\n"


def test_a_ctrl_c_right_after_a_batch_is_written_leaves_only_recorded_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagetask.io._jsonl import JsonlSink

    write = JsonlSink.write
    calls = []

    def write_then_interrupt(self: JsonlSink, rows: list[dict[str, Any]]) -> None:
        write(self, rows)
        calls.append(len(rows))
        if len(calls) == 3:  # Ctrl-C lands after the bytes, before the checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(JsonlSink, "write", write_then_interrupt)
    task = make_task(input_batch_size=4)
    with pytest.raises(RunInterrupted) as info:
        task.run([{"prompt": f"p{i}"} for i in range(40)], tmp_path, checkpoint_seconds=0)
    assert info.value.summary.rows_in == 8
    lines = (tmp_path / "data.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == [f"p{i}" for i in range(8)]
    monkeypatch.setattr(JsonlSink, "write", write)
    summary = make_task(input_batch_size=4).run(
        [{"prompt": f"p{i}"} for i in range(40)], tmp_path, resume=True
    )
    lines = (tmp_path / "data.jsonl").read_bytes().splitlines()
    assert summary.complete and [json.loads(line)["prompt"] for line in lines] == [
        f"p{i}" for i in range(40)
    ]


def test_a_ctrl_c_right_after_a_parquet_shard_is_finished_resumes_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagetask.io._parquet import ParquetSink

    write_table = ParquetSink.write_table

    def write_then_interrupt(self: ParquetSink, table: pa.Table) -> None:
        before = self.state()
        write_table(self, table)
        if before["staged"] and len(self.state()["shards"]) > len(before["shards"]):
            raise KeyboardInterrupt  # the shard is finished, the checkpoint not yet written

    monkeypatch.setattr(ParquetSink, "write_table", write_then_interrupt)
    task = make_task(images_as_bytes=True)
    rows = prompts(12)
    with pytest.raises(RunInterrupted) as info:
        task.run(rows, tmp_path, format="parquet", shard_bytes=2500, checkpoint_seconds=0)
    assert info.value.summary.rows_in == 3
    assert [staged["rows"] for staged in checkpoint(tmp_path)["sink"]["staged"]] == [3]
    assert recorded_table(tmp_path).column("id").to_pylist() == [0, 1, 2]
    monkeypatch.setattr(ParquetSink, "write_table", write_table)
    summary = task.run(rows, tmp_path, format="parquet", shard_bytes=2500, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.rows_out) == (3, 12, 12)
    assert recorded_table(tmp_path).column("id").to_pylist() == list(range(12))


def test_a_failure_while_the_dataset_card_is_written_resumes_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagetask.io import _parquet as hf_dataset

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    write_atomic = hf_dataset.write_atomic
    monkeypatch.setattr(hf_dataset, "write_atomic", full_disk)
    task = make_task(images_as_bytes=True)
    rows = prompts(8)
    with pytest.raises(OSError, match="No space left"):
        task.run(rows, tmp_path, format="parquet", checkpoint_seconds=0)
    state = checkpoint(tmp_path)
    assert (state["rows_in"], state["complete"], state["sink"]["shards"]) == (8, False, [])
    assert recorded_table(tmp_path).column("id").to_pylist() == list(range(8))
    monkeypatch.setattr(hf_dataset, "write_atomic", write_atomic)
    summary = task.run(rows, tmp_path, format="parquet", resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.rows_out, summary.complete) == (
        8,
        8,
        8,
        True,
    )
    shards = sorted((tmp_path / "data").iterdir())
    assert [path.name for path in shards] == ["train-00000.parquet"]
    assert pq.read_table(shards[0]).column("id").to_pylist() == list(range(8))


# A resume checks that the input starts with the rows the run read, finished or not.


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_finished_run_resumed_with_a_grown_input_goes_on_with_the_new_rows(
    tmp_path: Path, format: Any
) -> None:
    task = make_task(images_as_bytes=True)
    task.run(prompts(7), tmp_path, format=format)
    summary = task.run(prompts(12), tmp_path, format=format, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.rows_out, summary.complete) == (
        7,
        12,
        12,
        True,
    )
    if format == "jsonl":
        assert [row["id"] for row in lines(tmp_path / "data.jsonl")] == list(range(12))
    else:
        shards = sorted((tmp_path / "data").iterdir())
        ids = [i for shard in shards for i in pq.read_table(shard).column("id").to_pylist()]
        assert ids == list(range(12))
        assert "num_examples: 12" in (tmp_path / "README.md").read_text()
    report = json.loads((tmp_path / "run.json").read_text())
    assert (report["rows_in"], report["resumed_from"], report["complete"]) == (12, 7, True)


def test_a_finished_run_resumed_with_the_same_input_writes_nothing(tmp_path: Path) -> None:
    task = make_task()
    first = task.run(prompts(7), tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    again = task.run(prompts(7), tmp_path, resume=True)
    assert (again.rows_in, again.rows_out, again.complete) == (7, 7, True)
    assert again.seconds == first.seconds
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    assert after == before


@pytest.mark.parametrize("finished", [True, False])
def test_a_resume_refuses_an_input_with_a_row_changed_between_the_first_and_last_done(
    tmp_path: Path, finished: bool
) -> None:
    task = make_task()
    task.run(prompts(12), tmp_path, limit=None if finished else 9)
    before = (tmp_path / "checkpoint.json").read_bytes()
    changed = prompts(14)
    changed[4]["prompt"] = "changed"
    with pytest.raises(RunError) as info:
        task.run(changed, tmp_path, resume=True)
    last = 11 if finished else 8
    assert str(info.value) == (
        f"input row {last}: the rows up to this one are not the ones the run to resume read "
        "(a row was changed, added or removed): resume it with the input it started with"
    )
    assert (tmp_path / "checkpoint.json").read_bytes() == before
    assert [row["id"] for row in lines(tmp_path / "data.jsonl")] == list(range(last + 1))
