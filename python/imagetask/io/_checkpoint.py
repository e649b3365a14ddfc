"""A run's checkpoint (`checkpoint.json`): how many input rows are done and where the
output ends, written all or nothing (read back, field by field, by
`imagetask.io._run_folder.RunFolder.checkpoint`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from imagetask._core import ArrowRowsDigest
from imagetask._durable import write_atomic
from imagetask.io._identity import UrlDigests
from imagetask.io._jsonl import OutputFormat

__all__ = [
    "CHECKPOINT",
    "JSON_ROWS",
    "VERSION",
    "Checkpoint",
    "InputMark",
    "RetryMark",
    "RowsDigest",
    "TableDigest",
    "row_digest",
    "write_checkpoint",
]

CHECKPOINT = "checkpoint.json"
VERSION: Literal[2] = 2

Count = Annotated[int, msgspec.Meta(ge=0)]


JSON_ROWS = "json"
"""The encoding `RowsDigest` digests rows in."""


class InputMark(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What identifies a run's input: digests of its first row and of the last row done
    (`row_digest`; `None` until known, or for a row that has no stable encoding), and the
    digest of every row done (`None` in checkpoints written before it was recorded) with
    the encoding it was made in: `JSON_ROWS` (`RowsDigest`), or Arrow's row format
    (`TableDigest`, for rows read as Arrow record batches)."""

    first: str | None = None
    last: str | None = None
    rows: str | None = None
    encoding: str = JSON_ROWS


def _encoded(row: Any) -> bytes | None:
    """A row's stable encoding (`None` for a row that has none)."""
    try:
        return msgspec.json.encode(row)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None


class RetryMark(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How far a retry of the failed generations got (see `imagetask.run._retry`).

    `rows_in` input rows (their output rows) are in the new output, `rows_out` rows with
    `failed` failed generations among them; `sink` is the new output's sink state. Once
    `swap` is set the new output is whole and replaces the old one, even after a crash.
    """

    rows_in: Count
    rows_out: Count
    failed: Count
    sink: dict[str, Any]
    swap: bool = False


def row_digest(row: Any) -> str | None:
    """A digest of one input row, to tell on resume that the input is the run's."""
    data = _encoded(row)
    return None if data is None else hashlib.sha256(data).hexdigest()


class RowsDigest:
    """A digest of input rows in order, extended row by row: the same digest after N rows
    proves that an input starts with the N rows a run read (a row without a stable
    encoding counts as one unknown row)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, row: Any) -> None:
        data = _encoded(row)
        self._hash.update(b"?" if data is None else len(data).to_bytes(8, "big") + data)

    encoding = JSON_ROWS

    def add_table(self, table: Any) -> None:
        """Extends the digest with the rows of an Arrow table, as dicts."""
        for row in table.to_pylist():
            self.add(row)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class TableDigest:
    """A digest of Arrow rows in order, each in Arrow's row format (`ArrowRowsDigest`):
    rows read as record batches are digested without becoming dicts."""

    def __init__(self) -> None:
        self._digest = ArrowRowsDigest()
        self.encoding = ArrowRowsDigest.FORMAT

    @staticmethod
    def reads(schema: Any) -> bool:
        """Whether rows of the Arrow `schema` have a row encoding."""
        return ArrowRowsDigest.reads(schema)

    def add_table(self, table: Any) -> None:
        """Extends the digest with the rows of an Arrow table."""
        self._digest.add(table)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class Checkpoint(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The state of a run.

    Attributes
    ----------
    task:
        The task's dump (a resumed run must have the same, see `imagetask.run._state`).
    rows_in, rows_out, failed:
        Input rows done, output rows written, failed generations among them.
    seconds:
        Time spent by the run's sessions so far.
    complete:
        Whether the whole input is done.
    sink:
        The sink's state (`Sink.state()`): where its output ends.
    input:
        What identifies the input the rows done came from.
    urls:
        The digests of the hidden parts of the task's URLs (`None` in a checkpoint
        written before they were recorded; see `imagetask.io._identity`).
    retry:
        A retry of the failed generations under way (`None` when there is none).
    cost_usd, priced_images:
        The estimated cost in US dollars of the images written (retries included), and
        how many images it covers: those whose backend priced them (0 in a checkpoint
        written before costs were recorded: the cost is unknown).
    """

    version: Literal[2]
    format: OutputFormat
    task: dict[str, Any]
    rows_in: Count
    rows_out: Count
    failed: Count
    seconds: Annotated[float, msgspec.Meta(ge=0)]
    complete: bool
    sink: dict[str, Any]
    input: InputMark = msgspec.field(default_factory=InputMark)
    urls: UrlDigests | None = None
    retry: RetryMark | None = None
    cost_usd: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    priced_images: Count = 0


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Records `checkpoint` at `path` (all or nothing)."""
    write_atomic(path, msgspec.json.format(msgspec.json.encode(checkpoint), indent=2) + b"\n")
