"""Output sinks: whole batches appended, synced before each checkpoint.

A sink's `state()` after `write` and `sync` is what a checkpoint records; a sink reopened
with that state first checks that its output holds at least that much (else `RunError`:
nothing is written), then drops whatever was written after it (a batch cut short by a
crash), so the output holds every committed batch exactly once. A batch that cannot be
written raises `SinkError` before any of its bytes reach the output.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol

import msgspec

from imagetask.errors import RunError, SinkError
from imagetask.extras import require

__all__ = [
    "OUTPUT_FORMATS",
    "JsonlSink",
    "OutputFormat",
    "ParquetSink",
    "Sink",
    "empty_state",
    "fsync_dir",
    "open_sink",
]

OutputFormat = Literal["jsonl", "parquet"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("jsonl", "parquet")

Count = Annotated[int, msgspec.Meta(ge=0)]
_CHUNK = 1 << 20
_PARQUET_DEPTH = 100
"""The deepest schema Parquet readers accept (Arrow C++'s limit), the root counted."""


class _JsonlState(msgspec.Struct, forbid_unknown_fields=True):
    bytes: Count
    rows: Count


class _ParquetState(msgspec.Struct, forbid_unknown_fields=True):
    parts: Count
    rows: Count


def _state(kind: type[msgspec.Struct], state: dict[str, Any], path: Path) -> Any:
    try:
        return msgspec.convert(state, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise RunError(f"{path}: the checkpoint's `sink` is not valid: {exc}") from None


class Sink(Protocol):
    """Where a run's output rows go."""

    path: Path

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Appends one batch's rows as a whole."""

    def sync(self) -> None:
        """Makes what was written durable (before a checkpoint records it)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint records to reopen the sink at this point."""

    def finish(self, final: bool) -> None:
        """Completes the output file with the batches written so far; `final`: no batch
        will be added (a run stopped by its limit is not final)."""

    def close(self) -> None:
        """Releases open files (a finished or abandoned run)."""


def fsync_dir(folder: Path) -> None:
    """Makes a folder's entries (a rename into it) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class JsonlSink:
    """`data.jsonl`: one JSON object per line (bytes as base64)."""

    EMPTY: ClassVar[dict[str, Any]] = {"bytes": 0, "rows": 0}

    def __init__(self, folder: Path, state: dict[str, Any] | None = None) -> None:
        self.path = folder / "data.jsonl"
        self._encoder = msgspec.json.Encoder()
        self._rows = 0
        if state is None:
            self._file = self.path.open("wb")
            return
        checked: _JsonlState = _state(_JsonlState, state, self.path)
        self._check(checked)
        self._file = self.path.open("ab")
        self._file.truncate(checked.bytes)
        self._file.seek(0, os.SEEK_END)
        self._rows = checked.rows

    def _check(self, state: _JsonlState) -> None:
        """Checks that the file starts with `state.rows` whole lines in `state.bytes`."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < state.bytes:
            raise RunError(
                f"{self.path}: holds {size:,} bytes, fewer than the {state.bytes:,} the "
                "checkpoint records: the output was changed or lost since; start again in "
                "an empty folder"
            )
        lines, last, left = 0, b"\n", state.bytes
        if left:
            with self.path.open("rb") as file:
                while left:
                    chunk = file.read(min(left, _CHUNK))
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                    left -= len(chunk)
        if lines != state.rows or last != b"\n":
            raise RunError(
                f"{self.path}: its first {state.bytes:,} bytes hold {lines:,} whole lines, "
                f"not the {state.rows:,} rows the checkpoint records: the output was changed "
                "since; start again in an empty folder"
            )

    def write(self, rows: list[dict[str, Any]]) -> None:
        try:
            data = self._encoder.encode_lines(rows)
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
            raise SinkError(f"{self.path}: a row cannot be written as JSON: {exc}") from None
        self._file.write(data)
        self._file.flush()
        self._rows += len(rows)

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def state(self) -> dict[str, Any]:
        return {"bytes": self._file.tell(), "rows": self._rows}

    def finish(self, final: bool) -> None:
        """Nothing to complete: every line is written when its batch is."""

    def close(self) -> None:
        self._file.close()


class ParquetSink:
    """`data.parquet`: each batch is first written as a part file (temporary name, then
    renamed); `finish` merges the parts into one file, its schema the union of theirs,
    and removes them once the run is final (a resumed run adds parts and merges again).
    A batch whose columns cannot join the union (a column whose type changes) raises
    `SinkError` before its part is written; an empty run gets `empty_schema`."""

    EMPTY: ClassVar[dict[str, Any]] = {"parts": 0, "rows": 0}

    def __init__(
        self, folder: Path, state: dict[str, Any] | None = None, empty_schema: Any = None
    ) -> None:
        self._arrow = require("pyarrow", "parquet", "writing Parquet")
        self._parquet = require("pyarrow.parquet", "parquet", "writing Parquet")
        self.path = folder / "data.parquet"
        self._parts = folder / "parts"
        self._empty_schema = empty_schema
        self._unsynced: list[Path] = []
        self._schema: Any = None
        checked: _ParquetState = _state(_ParquetState, state or self.EMPTY, self.path)
        self._count, self._rows = checked.parts, checked.rows
        if state is None and self._parts.exists():
            shutil.rmtree(self._parts)
        self._parts.mkdir(exist_ok=True)
        for stale in self._parts.iterdir():
            if not stale.name.endswith(".parquet") or self._index(stale) >= self._count:
                stale.unlink()
        self._check()

    def _check(self) -> None:
        """Checks that the parts (or the merged file) hold the recorded rows; learns their
        schema."""
        parts = [self._part(index) for index in range(self._count)]
        found = [part for part in parts if part.exists()]
        if not found and self._count and self.path.exists():
            found = [self.path]  # merged before a crash cut the run short of recording it
        elif len(found) < len(parts):
            missing = sorted(set(parts) - set(found))[0]
            raise RunError(
                f"{missing}: missing, but the checkpoint records it: the output was changed "
                "since; start again in an empty folder"
            )
        rows = 0
        for part in found:
            try:
                metadata = self._parquet.read_metadata(part)
            except (self._arrow.ArrowException, OSError) as exc:
                raise RunError(
                    f"{part}: unreadable ({exc}): start again in an empty folder"
                ) from None
            rows += metadata.num_rows
            self._schema = self._unify(self._schema, metadata.schema.to_arrow_schema())
        if rows != self._rows:
            raise RunError(
                f"{self.path}: the output holds {rows:,} rows, not the {self._rows:,} the "
                "checkpoint records: the output was changed since; start again in an empty "
                "folder"
            )

    def _unify(self, schema: Any, new: Any) -> Any:
        if schema is None:
            return new
        try:
            return self._arrow.unify_schemas([schema, new], promote_options="permissive")
        except (self._arrow.ArrowException, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise SinkError(
                f"{self.path}: the batch's columns do not agree with the previous ones': {reason}"
            ) from None

    def _depth(self, kind: Any) -> int:
        """How many levels of a Parquet schema an Arrow type takes (a list takes two)."""
        children = [kind.field(index).type for index in range(kind.num_fields)]
        if not children:
            return 1
        nested = max(self._depth(child) for child in children)
        return nested + (1 if self._arrow.types.is_struct(kind) else 2)

    @staticmethod
    def _index(part: Path) -> int:
        try:
            return int(part.stem.removeprefix("part-"))
        except ValueError:
            return -1

    def _part(self, index: int) -> Path:
        return self._parts / f"part-{index:08d}.parquet"

    def write(self, rows: list[dict[str, Any]]) -> None:
        try:
            table = self._arrow.Table.from_pylist(rows)
        except (self._arrow.ArrowException, TypeError, ValueError, RecursionError) as exc:
            reason = " ".join(str(exc).split())
            raise SinkError(
                f"{self.path}: a batch cannot be written as Parquet: {reason}"
            ) from None
        for field in table.schema:
            if 1 + self._depth(field.type) > _PARQUET_DEPTH:
                raise SinkError(
                    f"{self.path}: the column {field.name!r} is nested too deeply for Parquet "
                    f"(readers accept {_PARQUET_DEPTH} levels)"
                )
        schema = self._unify(self._schema, table.schema)
        target = self._part(self._count)
        temp = target.with_suffix(".tmp")
        self._parquet.write_table(table, temp)
        os.replace(temp, target)
        self._schema = schema
        self._unsynced.append(target)
        self._count += 1
        self._rows += table.num_rows

    def sync(self) -> None:
        for part in self._unsynced:
            with part.open("rb") as file:
                os.fsync(file.fileno())
        self._unsynced.clear()
        if self._parts.exists():
            fsync_dir(self._parts)

    def state(self) -> dict[str, Any]:
        return {"parts": self._count, "rows": self._rows}

    def close(self) -> None:
        """Nothing is held open between batches."""

    def finish(self, final: bool) -> None:
        parts = [self._part(index) for index in range(self._count)]
        if self.path.exists() and self._count and not any(part.exists() for part in parts):
            return  # merged before a crash cut the run short of recording it
        schema = self._schema if self._schema is not None else self._empty_schema
        temp = self.path.with_suffix(".tmp")
        with self._parquet.ParquetWriter(temp, schema) as writer:
            for part in parts:
                writer.write_table(self._parquet.read_table(part).cast(schema))
        with temp.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(temp, self.path)
        fsync_dir(self.path.parent)
        self.sync()
        if final:
            shutil.rmtree(self._parts)


def empty_state(format: OutputFormat) -> dict[str, Any]:
    """The state of a sink of `format` that holds no row yet."""
    return dict(ParquetSink.EMPTY if format == "parquet" else JsonlSink.EMPTY)


def open_sink(
    folder: Path,
    format: OutputFormat,
    state: dict[str, Any] | None = None,
    empty_schema: Any = None,
) -> JsonlSink | ParquetSink:
    """The sink of `format` in `folder`, reopened at `state` when resuming (`RunError`
    when the output does not hold what `state` records). `empty_schema` is the Parquet
    schema of a run without rows."""
    if format == "parquet":
        return ParquetSink(folder, state, empty_schema)
    return JsonlSink(folder, state)
