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

from imagetask import (
    ConfigError,
    ImageGeneration,
    RunError,
    RunInterrupted,
    SinkError,
)
from imagetask.io._jsonl import JsonlSink
from imagetask.models import PlaceholderImageGeneration
from imagetask.run._lock import FolderLock
from tests.support.outputs import recorded_table
from tests.support.runs import checkpoint, lines, make_task, prompts

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
        task.run(rows, tmp_path, format="parquet", shard_bytes=3000, checkpoint_seconds=0)
    assert info.value.summary.rows_in == 3
    assert [staged["rows"] for staged in checkpoint(tmp_path)["sink"]["staged"]] == [3]
    assert recorded_table(tmp_path).column("id").to_pylist() == [0, 1, 2]
    monkeypatch.setattr(ParquetSink, "write_table", write_table)
    summary = task.run(rows, tmp_path, format="parquet", shard_bytes=3000, resume=True)
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


# --- a run folder that is someone else's: links in it are never written through --------


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_links_at_the_temporary_names_of_a_run_are_not_written_through(
    tmp_path: Path, format: Any
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    for name in (".checkpoint.json.tmp", ".run.json.tmp", ".README.md.tmp", "run.json"):
        (out / name).symlink_to(victim)
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"))
    summary = task.run([{"prompt": f"p{i}"} for i in range(3)], out, format=format)
    assert (summary.rows_out, summary.complete) == (3, True)
    assert victim.read_text() == "keep me\n"
    assert json.loads((out / "run.json").read_text())["rows_out"] == 3
    written = ["checkpoint.json", "run.json"] + (["README.md"] if format == "parquet" else [])
    assert not any((out / name).is_symlink() for name in written)
    leftovers = [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
    assert sorted(leftovers) == [".README.md.tmp", ".checkpoint.json.tmp", ".run.json.tmp"]


def test_a_lock_file_that_is_a_link_is_refused_and_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".imagetask.lock").symlink_to(victim)
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"))
    with pytest.raises(RunError) as caught:
        task.run([{"prompt": "p"}], out)
    assert str(caught.value) == (
        f"{out / '.imagetask.lock'} is a link: imagetask writes no file through a link; "
        "remove it and start again"
    )
    assert victim.read_text() == "keep me\n"
    assert sorted(path.name for path in out.iterdir()) == [".imagetask.lock"]


def test_a_jsonl_batch_with_a_row_json_cannot_encode_is_written_not_at_all(
    tmp_path: Path,
) -> None:
    sink = JsonlSink(tmp_path)
    sink.write([{"id": 0}])
    batch = [{"id": i} for i in range(1, 11)]
    batch[8]["id"] = "a lone surrogate \ud800"  # in the third group of rows encoded
    with pytest.raises(SinkError):
        sink.write(batch)
    assert sink.state() == {"bytes": len(b'{"id":0}\n'), "rows": 1}
    sink.write([{"id": 1}])
    sink.close()
    assert (tmp_path / "data.jsonl").read_bytes() == b'{"id":0}\n{"id":1}\n'
