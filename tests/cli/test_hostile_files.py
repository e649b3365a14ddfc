"""Hostile input files and flags through `imagetask generate`: the only outcomes allowed
are the correct output, or one error line (exit 1) with every row before it written once.
Never a traceback, a hang or a lost row."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetask.cli import main
from tests.support.outputs import recorded_table

BOM = b"\xef\xbb\xbf"

# An entry of the input: ("ok", prompt) is a row the run must turn into images;
# "blank" is skipped; every other kind stops the run with an error naming the file.
prompt_text = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cs", "Cc", "Zl", "Zp"], blacklist_characters="\ufeff"
    ),
    min_size=1,
    max_size=12,
).filter(lambda text: text.strip() != "")
entry = st.one_of(
    st.tuples(st.just("ok"), prompt_text),
    st.tuples(st.just("blank")),
    st.tuples(st.just("not-utf8")),
    st.tuples(st.just("garbage")),
    st.tuples(st.just("no-prompt")),
    st.tuples(st.just("wrong-type"), st.sampled_from([5, None, ["a"], {"a": 1}, True])),
    st.tuples(st.just("deep"), st.sampled_from([20, 60, 3000])),
    st.tuples(st.just("long")),
)
LONG = "a very long prompt " * 8_000
"""A prompt longer than the csv module's default field size limit (131,072)."""


def jsonl_line(kind: tuple[Any, ...]) -> bytes:
    match kind:
        case ("ok", prompt):
            return json.dumps({"prompt": prompt}).encode()
        case ("blank",):
            return b"  "
        case ("not-utf8",):
            return b'{"prompt": "caf\xe9"}'
        case ("garbage",):
            return b'{"prompt": '
        case ("no-prompt",):
            return b'{"caption": "x"}'
        case ("wrong-type", value):
            return json.dumps({"prompt": value}).encode()
        case ("deep", depth):
            return b'{"prompt": "deep", "x": ' + b"[" * depth + b"]" * depth + b"}"
        case ("long",):
            return json.dumps({"prompt": LONG}).encode()
    raise AssertionError(kind)


def csv_line(kind: tuple[Any, ...]) -> bytes | None:
    match kind:
        case ("ok", prompt):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow([prompt, "1"])
            return buffer.getvalue().encode()
        case ("blank",):
            return b""
        case ("not-utf8",):
            return b"caf\xe9,1"
        case ("garbage",):
            return b"a,b,c"
        case ("long",):
            return f'"{LONG}",1'.encode()
    return None


def txt_line(kind: tuple[Any, ...]) -> bytes | None:
    match kind:
        case ("ok", prompt):
            return str(prompt).encode()
        case ("blank",):
            return b" "
        case ("not-utf8",):
            return b"caf\xe9"
        case ("long",):
            return LONG.encode()
    return None


def input_file(folder: Path, format: str, entries: list[tuple[Any, ...]], bom: bool) -> Path:
    """Writes the entries in `format` (those it cannot express are left out)."""
    path = folder / f"input.{format}"
    if format == "parquet":
        rows = [{"prompt": kind[1] if kind[0] == "ok" else None} for kind in entries]
        pq.write_table(
            pa.Table.from_pylist(rows, schema=pa.schema([("prompt", pa.string())])), path
        )
        return path
    encode = {"jsonl": jsonl_line, "csv": csv_line, "txt": txt_line}[format]
    lines = [b"prompt,n"] if format == "csv" else []
    lines += [line for line in map(encode, entries) if line is not None]
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    path.write_bytes((BOM if bom else b"") + data)
    return path


def expressed(format: str, entries: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The entries the file holds, in order."""
    if format == "parquet":
        return [kind if kind[0] == "ok" else ("wrong-type", None) for kind in entries]
    encode = {"jsonl": jsonl_line, "csv": csv_line, "txt": txt_line}[format]
    return [kind for kind in entries if encode(kind) is not None]


def ok(kind: tuple[Any, ...], output: str) -> bool:
    """Whether the run must turn the entry into images."""
    if kind[0] == "deep":
        return kind[1] < (50 if output == "parquet" else 1000)
    return kind[0] in ("ok", "long")


def prompt(kind: tuple[Any, ...]) -> str:
    return {"deep": "deep", "long": LONG}.get(kind[0]) or str(kind[1])


def output_prompts(out: Path, format: str) -> list[str]:
    """The prompts of the rows the checkpoint records as written."""
    state = json.loads((out / "checkpoint.json").read_text())
    if format == "jsonl":
        raw = (out / "data.jsonl").read_bytes()[: state["sink"]["bytes"]]
        return [msgspec.json.decode(line)["prompt"] for line in raw.splitlines()]
    table = recorded_table(out)
    return table.column("prompt").to_pylist() if table.num_rows else []


counter = itertools.count()


@settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    format=st.sampled_from(["jsonl", "csv", "txt", "parquet"]),
    entries=st.lists(entry, max_size=12),
    bom=st.booleans(),
    output=st.sampled_from(["jsonl", "parquet"]),
    generations=st.integers(1, 3),
    batch=st.integers(1, 4),
    limit=st.none() | st.integers(0, 12),
    artifacts=st.booleans(),
)
def test_hostile_files_and_flags_give_the_output_or_one_error_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    format: str,
    entries: list[tuple[Any, ...]],
    bom: bool,
    output: str,
    generations: int,
    batch: int,
    limit: int | None,
    artifacts: bool,
) -> None:
    folder = tmp_path / str(next(counter))
    folder.mkdir()
    source = input_file(folder, format, entries, bom)
    out = folder / "out"
    args = ["generate", str(source), "-o", str(out), "--quiet", "--size", "4x4"]
    args += ["--format", output, "--num-generations", str(generations)]
    args += ["--batch-size", str(batch)] + (["--save-artifacts"] if artifacts else [])
    args += [] if limit is None else ["--limit", str(limit)]
    status = main(args)  # a traceback would fail the test here
    captured = capsys.readouterr()

    held = [kind for kind in expressed(format, entries) if kind[0] != "blank"]
    considered = held if limit is None else held[:limit]
    good = list(itertools.takewhile(lambda kind: ok(kind, output), considered))
    expected = [prompt(kind) for kind in good for _ in range(generations)]
    if status == 0:
        assert len(good) == len(considered), captured.err
        assert output_prompts(out, output) == expected
        return
    assert status == 1
    assert captured.err.startswith("imagetask: error: ") and captured.err.count("\n") == 1
    assert str(source) in captured.err
    assert len(good) < len(considered), captured.err
    # Every row before the one at fault, up to the last whole batch, was written once; a
    # run that recorded no row leaves no checkpoint and no output (nothing blocks a rerun).
    checkpoint = out / "checkpoint.json"
    if not checkpoint.exists():
        assert not {"data.jsonl", "data", ".staging"} & {path.name for path in out.iterdir()}
        return
    done = json.loads(checkpoint.read_text())["rows_in"]
    assert 0 < done <= len(good)
    assert output_prompts(out, output) == expected[: done * generations]
