"""A Parquet input written to Parquet stays Arrow from the reader to the sink: its rows
never become dicts, and a resume checks them by a digest in Arrow's row format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagetask import ImageGeneration, ReadError, RunError
from imagetask._core import ArrowRowsDigest
from imagetask.readers import Reader
from imagetask.run import _input
from tests.support.outputs import recorded_table
from tests.support.runs import checkpoint, make_task, prompts


def parquet_input(path: Path, rows: list[dict[str, Any]], group: int = 4) -> Reader:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group)
    return Reader(path)


def test_rows_read_as_record_batches_never_become_dicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = prompts(11)
    make_task(images_as_bytes=True).run(rows, tmp_path / "dicts", format="parquet")
    source = parquet_input(tmp_path / "in.parquet", rows)
    row_reads: list[int] = []
    read_row = _input._row

    def one_row(table: pa.Table, index: int) -> Any:
        row_reads.append(index)
        return read_row(table, index)

    def made_dicts(*args: Any) -> None:
        pytest.fail("the rows became dicts")

    monkeypatch.setattr(_input, "_row", one_row)
    monkeypatch.setattr(_input.RowsDigest, "add", made_dicts)
    monkeypatch.setattr("imagetask.run._runner.input_table", made_dicts)
    monkeypatch.setattr(ImageGeneration, "prepare", made_dicts)
    summary = make_task(images_as_bytes=True).run(source, tmp_path / "arrow", format="parquet")
    assert (summary.rows_in, summary.rows_out, summary.complete) == (11, 11, True)
    # Only the input's first row and each batch's last (batches of 3), for the
    # checkpoint's row digests.
    assert row_reads == [0, 2, 2, 2, 1]
    monkeypatch.undo()
    assert recorded_table(tmp_path / "arrow").to_pylist() == (
        recorded_table(tmp_path / "dicts").to_pylist()
    )
    assert checkpoint(tmp_path / "arrow")["input"]["encoding"] == ArrowRowsDigest.FORMAT
    assert checkpoint(tmp_path / "dicts")["input"]["encoding"] == "json"


@pytest.mark.parametrize("sizes", [(3, 3), (3, 5), (4, 2)])
def test_a_limited_run_resumes_with_any_batch_size(tmp_path: Path, sizes: tuple[int, int]) -> None:
    rows = prompts(13)
    source = parquet_input(tmp_path / "in.parquet", rows)
    first = make_task(input_batch_size=sizes[0]).run(
        source, tmp_path / "out", format="parquet", limit=7
    )
    assert (first.rows_in, first.complete) == (7, False)
    rest = make_task(input_batch_size=sizes[1]).run(
        source, tmp_path / "out", format="parquet", resume=True
    )
    assert (rest.resumed_from, rest.rows_in, rest.rows_out, rest.complete) == (7, 13, 13, True)
    assert recorded_table(tmp_path / "out").column("id").to_pylist() == list(range(13))


def test_a_finished_run_goes_on_with_the_rows_its_input_gained(tmp_path: Path) -> None:
    make_task().run(
        parquet_input(tmp_path / "in.parquet", prompts(5)), tmp_path / "out", format="parquet"
    )
    grown = parquet_input(tmp_path / "in.parquet", prompts(9))
    summary = make_task().run(grown, tmp_path / "out", format="parquet", resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.complete) == (5, 9, True)
    assert recorded_table(tmp_path / "out").column("id").to_pylist() == list(range(9))


def test_a_resume_refuses_rows_that_changed(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    make_task().run(parquet_input(source, prompts(12)), tmp_path / "out", format="parquet", limit=9)
    before = (tmp_path / "out" / "checkpoint.json").read_bytes()
    for index, message in [
        (0, f"{source} row 1: not the row the run to resume read there"),
        (8, f"{source} row 9: not the row the run to resume read there"),
        (4, f"{source} row 9: the rows up to this one are not the ones the run to resume read"),
    ]:
        changed = prompts(12)
        changed[index]["prompt"] = "changed"
        with pytest.raises(RunError) as info:
            make_task().run(
                parquet_input(source, changed), tmp_path / "out", format="parquet", resume=True
            )
        assert str(info.value).startswith(message)
        assert (tmp_path / "out" / "checkpoint.json").read_bytes() == before
    shorter = parquet_input(source, prompts(8))
    with pytest.raises(RunError, match=r"^the input has 8 rows, but the run to resume had done 9"):
        make_task().run(shorter, tmp_path / "out", format="parquet", resume=True)


def test_a_run_whose_checkpoint_digested_dicts_resumes_from_record_batches(
    tmp_path: Path,
) -> None:
    rows = prompts(10)
    make_task().run(rows, tmp_path / "out", format="parquet", limit=4)
    assert checkpoint(tmp_path / "out")["input"]["encoding"] == "json"
    source = parquet_input(tmp_path / "in.parquet", rows)
    summary = make_task().run(source, tmp_path / "out", format="parquet", resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.complete) == (4, 10, True)
    # The digest goes on as it started: the dicts' rows digest, the same as a dict run's.
    make_task().run(rows, tmp_path / "dicts", format="parquet")
    assert checkpoint(tmp_path / "out")["input"] == checkpoint(tmp_path / "dicts")["input"]


def test_rows_read_as_record_batches_cannot_be_resumed_from_dicts(tmp_path: Path) -> None:
    rows = prompts(10)
    source = parquet_input(tmp_path / "in.parquet", rows)
    make_task().run(source, tmp_path / "out", format="parquet", limit=4)
    with pytest.raises(RunError) as info:
        make_task().run(rows, tmp_path / "out", format="parquet", resume=True)
    assert str(info.value) == (
        "the run to resume read its input as Arrow record batches (a Parquet file written to "
        "Parquet): resume it with the input it started with"
    )


def test_a_digest_of_another_row_format_is_not_compared_and_is_made_again(
    tmp_path: Path,
) -> None:
    source = parquet_input(tmp_path / "in.parquet", prompts(10))
    make_task().run(source, tmp_path / "out", format="parquet", limit=4)
    path = tmp_path / "out" / "checkpoint.json"
    state = json.loads(path.read_text())
    state["input"]["encoding"] = "arrow-row-1"
    state["input"]["rows"] = "0" * 64
    path.write_text(json.dumps(state))
    summary = make_task().run(source, tmp_path / "out", format="parquet", resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.complete) == (4, 10, True)
    make_task().run(source, tmp_path / "fresh", format="parquet")
    assert checkpoint(tmp_path / "out")["input"] == checkpoint(tmp_path / "fresh")["input"]


def test_text_that_is_not_utf8_is_an_error_naming_its_row(tmp_path: Path) -> None:
    good = pa.array(["a", "b", "c"], pa.binary())
    bad = pa.array([b"a", b"b", b"\xff"], pa.binary())
    table = pa.table({"prompt": pa.concat_arrays([good, bad]).view(pa.string())})
    pq.write_table(table, tmp_path / "in.parquet")
    with pytest.raises(ReadError, match=r"in\.parquet row 6: cannot be read"):
        make_task().run(Reader(tmp_path / "in.parquet"), tmp_path / "out", format="parquet")


def test_a_row_without_a_prompt_is_named_by_its_row(tmp_path: Path) -> None:
    rows = prompts(6)
    rows[4]["prompt"] = None
    source = parquet_input(tmp_path / "in.parquet", rows)
    with pytest.raises(RunError) as info:
        make_task().run(source, tmp_path / "out", format="parquet")
    assert str(info.value).startswith(f"{source.path} row 5: the row ")
    assert checkpoint(tmp_path / "out")["rows_in"] == 3
