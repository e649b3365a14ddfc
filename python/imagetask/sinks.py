"""Output sinks: whole batches appended, synced before each checkpoint.

A sink's `state()` after `write` and `sync` is what a checkpoint records; a sink reopened with that
state drops whatever was written after it (a batch cut short by a crash), so the output
holds every committed batch exactly once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

from imagetask.errors import SinkError
from imagetask.extras import require

__all__ = ["JsonlSink", "ParquetSink", "Sink", "fsync_dir", "open_sink"]

OutputFormat = Literal["jsonl", "parquet"]


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

    def __init__(self, folder: Path, state: dict[str, Any] | None = None) -> None:
        self.path = folder / "data.jsonl"
        self._encoder = msgspec.json.Encoder()
        self._file = self.path.open("ab")
        if state is not None:
            self._file.truncate(state["bytes"])
        else:
            self._file.truncate(0)
        self._file.seek(0, os.SEEK_END)

    def write(self, rows: list[dict[str, Any]]) -> None:
        try:
            data = self._encoder.encode_lines(rows)
        except (TypeError, msgspec.EncodeError) as exc:
            raise SinkError(f"{self.path}: a row cannot be written as JSON: {exc}") from None
        self._file.write(data)
        self._file.flush()

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def state(self) -> dict[str, Any]:
        return {"bytes": self._file.tell()}

    def finish(self, final: bool) -> None:
        """Nothing to complete: every line is written when its batch is."""

    def close(self) -> None:
        self._file.close()


class ParquetSink:
    """`data.parquet`: each batch is first written as a part file (temporary name, then
    renamed); `finish` merges the parts into one file, its schema the union of theirs,
    and removes them once the run is final (a resumed run adds parts and merges again)."""

    def __init__(self, folder: Path, state: dict[str, Any] | None = None) -> None:
        self._arrow = require("pyarrow", "parquet", "writing Parquet")
        self._parquet = require("pyarrow.parquet", "parquet", "writing Parquet")
        self.path = folder / "data.parquet"
        self._parts = folder / "parts"
        self._count = state["parts"] if state is not None else 0
        self._unsynced: list[Path] = []
        if state is None and self._parts.exists():
            shutil.rmtree(self._parts)
        self._parts.mkdir(exist_ok=True)
        for stale in self._parts.iterdir():
            if not stale.name.endswith(".parquet") or self._index(stale) >= self._count:
                stale.unlink()

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
        except (self._arrow.ArrowException, TypeError, ValueError) as exc:
            raise SinkError(f"{self.path}: a batch cannot be written as Parquet: {exc}") from None
        target = self._part(self._count)
        temp = target.with_suffix(".tmp")
        self._parquet.write_table(table, temp)
        os.replace(temp, target)
        self._unsynced.append(target)
        self._count += 1

    def sync(self) -> None:
        for part in self._unsynced:
            with part.open("rb") as file:
                os.fsync(file.fileno())
        self._unsynced.clear()
        if self._parts.exists():
            fsync_dir(self._parts)

    def state(self) -> dict[str, Any]:
        return {"parts": self._count}

    def close(self) -> None:
        """Nothing is held open between batches."""

    def finish(self, final: bool) -> None:
        parts = [self._part(index) for index in range(self._count)]
        if self.path.exists() and not any(part.exists() for part in parts):
            return  # merged before a crash cut the run short of recording it
        schemas = [self._parquet.read_schema(part) for part in parts]
        try:
            schema = self._arrow.unify_schemas(schemas, promote_options="permissive")
        except (self._arrow.ArrowException, ValueError) as exc:
            raise SinkError(f"{self.path}: the batches' columns do not agree: {exc}") from None
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


def open_sink(
    folder: Path, format: OutputFormat, state: dict[str, Any] | None = None
) -> JsonlSink | ParquetSink:
    """The sink of `format` in `folder`, reopened at `state` when resuming."""
    if format == "parquet":
        return ParquetSink(folder, state)
    return JsonlSink(folder, state)
