"""The input readers: every format, and hostile files named by file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagetask.cli import main
from imagetask.errors import ReadError, RunError
from imagetask.io._readers import Reader
from tests.support.runs import lines, make_task


def test_a_bad_row_names_its_line_after_writing_the_rows_before(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"text": "c"}\n{"prompt": "d"}\n')
    out = tmp_path / "out"
    with pytest.raises(RunError) as caught:
        make_task(input_batch_size=2).run(Reader(source), out)
    assert str(caught.value) == (
        f"{source} line 4: the row lacks the input column 'prompt' (its columns: 'text')"
    )
    assert [row["prompt"] for row in lines(out / "data.jsonl")] == ["a", "b"]
    state = json.loads((out / "checkpoint.json").read_text())
    assert (state["rows_in"], state["complete"]) == (2, False)


def test_invalid_json_names_its_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(ReadError, match=rf"^{source} line 2: invalid JSON: "):
        make_task().run(Reader(source), tmp_path / "out")
    source.write_text('["a"]\n')
    with pytest.raises(ReadError, match=rf"^{source} line 1: expected a JSON object, got list$"):
        make_task().run(Reader(source), tmp_path / "out2")


def test_readers_of_every_format(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a cat\n\n  \na dog\n")
    (tmp_path / "p.csv").write_text('prompt,n\n"a, cat",1\na dog,2\n')
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "a cat"}, {"prompt": "a dog"}]), tmp_path / "p.parquet"
    )
    assert list(Reader(tmp_path / "p.txt")) == [(1, {"prompt": "a cat"}), (4, {"prompt": "a dog"})]
    assert list(Reader(tmp_path / "p.csv")) == [
        (2, {"prompt": "a, cat", "n": "1"}),
        (3, {"prompt": "a dog", "n": "2"}),
    ]
    assert list(Reader(tmp_path / "p.parquet")) == [
        (1, {"prompt": "a cat"}),
        (2, {"prompt": "a dog"}),
    ]
    assert [Reader(tmp_path / f"p.{kind}").count() for kind in ("txt", "csv", "parquet")] == [
        2,
        None,
        2,
    ]
    (tmp_path / "bad.csv").write_text("prompt\na,b\n")
    with pytest.raises(ReadError, match=r"bad.csv line 2: more fields than the header's 1$"):
        list(Reader(tmp_path / "bad.csv"))
    with pytest.raises(ReadError, match=r"cannot tell the input format from the extension '.xml'"):
        Reader(tmp_path / "p.xml")


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
