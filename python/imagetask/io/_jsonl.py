"""Output sinks: whole batches appended, synced before each checkpoint.

A sink's `state()` after `write` and `sync` is what a checkpoint records; a sink reopened
with that state first checks that its output holds at least that much (else `RunError`:
nothing is written), then drops whatever was written after it (a batch cut short by a
crash), so the output holds every committed batch exactly once. A batch that cannot be
written raises `SinkError` before any of its bytes reach the output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol

import msgspec

from imagetask._core import StoredImage
from imagetask._durable import OutputFile
from imagetask.errors import ReadError, RunError, SinkError
from imagetask.io._parquet import ParquetSink

__all__ = [
    "OUTPUT_FORMATS",
    "JsonlSink",
    "OutputFormat",
    "ParquetSink",
    "Sink",
    "empty_state",
    "open_sink",
]

OutputFormat = Literal["jsonl", "parquet"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("jsonl", "parquet")

Count = Annotated[int, msgspec.Meta(ge=0)]
_WRITE_BYTES = 1 << 20
"""About the bytes `JsonlSink.write` encodes at a time: small rows go many at a time, a
row holding a large image alone (its text is never part of a larger buffer)."""
_MOST_ROWS_PER_WRITE = 256
_CHUNK = 1 << 20


class _JsonlState(msgspec.Struct, forbid_unknown_fields=True):
    bytes: Count
    rows: Count


def _state(kind: type[msgspec.Struct], state: dict[str, Any], path: Path) -> Any:
    try:
        return msgspec.convert(state, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise RunError(f"{path}: the checkpoint's `sink` is not valid: {exc}") from None


def _stored_as_json_string(value: Any) -> msgspec.Raw:
    """A `StoredImage` in a row (a run's images stay on disk until written) as the JSON
    string of its bytes' base64 text, copied into the line as it is; any other value
    cannot be written."""
    if isinstance(value, StoredImage):
        return msgspec.Raw(value.json_string())
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


class Sink(Protocol):
    """Where a run's output rows go: `JsonlSink.write(rows)` appends a batch's dict rows,
    `ParquetSink.write_table(table)` a batch as an Arrow table, each whole or not at all."""

    path: Path

    def sync(self) -> None:
        """Makes what was written durable (before a checkpoint records it)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint records to reopen the sink at this point."""

    def saved(self, state: dict[str, Any]) -> None:
        """Called once a checkpoint recorded `state` (a `state()` of this sink, perhaps
        not the latest): drops what it made obsolete."""

    def discard_after(self, state: dict[str, Any]) -> None:
        """Drops the output written after `state` (a batch a stop cut off from its
        checkpoint), so that what a reader sees is what the checkpoint records."""

    def recorded(self) -> Iterator[dict[str, Any]]:
        """The rows written so far, in order, in the form they were written in."""

    def finish(self, final: bool, about: str) -> None:
        """Completes the output with the batches written so far; `final`: no batch will
        be added (a run stopped by its limit is not final); `about`: what the run was."""

    def close(self) -> None:
        """Releases open files (a finished or abandoned run)."""


class JsonlSink:
    """`data.jsonl`: one JSON object per line (bytes as base64)."""

    EMPTY: ClassVar[dict[str, Any]] = {"bytes": 0, "rows": 0}

    def __init__(self, folder: Path, state: dict[str, Any] | None = None) -> None:
        self.path = folder / "data.jsonl"
        self._encoder = msgspec.json.Encoder(enc_hook=_stored_as_json_string)
        self._rows = 0
        self._rows_per_write = 1
        if state is None:
            self._file = OutputFile(self.path, "wb")
            return
        checked: _JsonlState = _state(_JsonlState, state, self.path)
        self._check(checked)
        self._file = OutputFile(self.path, "ab")
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
        """Appends the rows, about `_WRITE_BYTES` of them at a time (a batch of large
        images is never encoded whole); none of them when one cannot be encoded."""
        start = self._file.tell()
        try:
            first = 0
            while first < len(rows):
                some = rows[first : first + self._rows_per_write]
                text = self._encoder.encode_lines(some)
                self._file.write(text)
                first += len(some)
                # As many rows next time as, at the size of these, make `_WRITE_BYTES`.
                fit = _WRITE_BYTES * len(some) // len(text)
                self._rows_per_write = max(1, min(_MOST_ROWS_PER_WRITE, fit))
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
            self._file.flush()
            self._file.truncate(start)
            self._file.seek(start)
            raise SinkError(f"{self.path}: a row cannot be written as JSON: {exc}") from None
        self._file.flush()
        self._rows += len(rows)

    def sync(self) -> None:
        self._file.sync()

    def state(self) -> dict[str, Any]:
        return {"bytes": self._file.tell(), "rows": self._rows}

    def saved(self, state: dict[str, Any]) -> None:
        """Nothing is ever obsolete."""

    def discard_after(self, state: dict[str, Any]) -> None:
        self._file.flush()
        self._file.truncate(state["bytes"])
        self._file.seek(0, os.SEEK_END)
        self._rows = state["rows"]

    def recorded(self) -> Iterator[dict[str, Any]]:
        """The rows written; `ReadError` naming the line for one that is not a JSON object."""
        self._file.flush()
        left = self._file.tell()
        with self.path.open("rb") as file:
            for number, line in enumerate(file, 1):
                if left <= 0:
                    return
                left -= len(line)
                try:
                    row = msgspec.json.decode(line)
                except msgspec.DecodeError as exc:
                    raise ReadError(f"{self.path} line {number}: not a row: {exc}") from None
                if not isinstance(row, dict):
                    raise ReadError(f"{self.path} line {number}: not a row: not a JSON object")
                yield row

    def finish(self, final: bool, about: str) -> None:
        """Nothing to complete: every line is written when its batch is."""

    def close(self) -> None:
        self._file.close()


def empty_state(format: OutputFormat) -> dict[str, Any]:
    """The state of a sink of `format` that holds no row yet."""
    return dict(ParquetSink.EMPTY if format == "parquet" else JsonlSink.EMPTY)


def open_sink(
    folder: Path,
    format: OutputFormat,
    state: dict[str, Any] | None = None,
    **parquet: Any,
) -> JsonlSink | ParquetSink:
    """The sink of `format` in `folder`, reopened at `state` when resuming (`RunError`
    when the output does not hold what `state` records); `parquet` are the `ParquetSink`
    options."""
    if format == "parquet":
        return ParquetSink(folder, state, **parquet)
    return JsonlSink(folder, state)
