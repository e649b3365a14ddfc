"""A run's input: its rows numbered and named, and the rows a resumed run had done
checked against its checkpoint and skipped."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING

from imagetask.errors import ImageTaskError, RunError
from imagetask.io._checkpoint import RowsDigest, row_digest
from imagetask.io._readers import Reader

if TYPE_CHECKING:
    from imagetask.io._checkpoint import InputMark
    from imagetask.outcome import Row

__all__ = ["Numbered", "Where", "exhausted", "numbered", "skip_done", "total"]

Numbered = Iterator[tuple[int, "Row"]]
"""The input's rows, each with its number (a file's line, or its index)."""
Where = Callable[[int], str]
"""How log lines and errors name a row from its number."""


def numbered(rows: Iterable[Row] | Reader) -> tuple[Numbered, Where]:
    """The rows numbered, and how a row is named: by its file's line for a `Reader`, else
    `input row <index>`."""
    if isinstance(rows, Reader):
        return iter(rows), rows.where
    return enumerate(rows), lambda index: f"input row {index}"


def skip_done(rows: Numbered, where: Where, done: int, mark: InputMark) -> RowsDigest:
    """Skips the `done` input rows a resumed run had done, checking that they are the
    rows its checkpoint's `mark` records; returns their digest, to be extended with the
    rows that follow."""
    digest = RowsDigest()
    skipped, first, last = 0, None, None
    for index, row in islice(rows, done):
        if skipped == 0:
            first = (index, row)
        last = (index, row)
        skipped += 1
        digest.add(row)
    if skipped < done:
        raise RunError(f"the input has {skipped:,} rows, but the run to resume had done {done:,}")
    for seen, recorded in ((first, mark.first), (last, mark.last)):
        if seen is not None and recorded is not None and row_digest(seen[1]) != recorded:
            raise RunError(
                f"{where(seen[0])}: not the row the run to resume read there: resume it "
                "with the input it started with"
            )
    if last is not None and mark.rows is not None and digest.hexdigest() != mark.rows:
        raise RunError(
            f"{where(last[0])}: the rows up to this one are not the ones the run to resume "
            "read (a row was changed, added or removed): resume it with the input it "
            "started with"
        )
    return digest


def exhausted(rows: Numbered) -> bool:
    """Whether the input has no row left (a row that cannot be read counts as one)."""
    try:
        return next(rows, None) is None
    except ImageTaskError:
        return False


def total(rows: Iterable[Row] | Reader, limit: int | None) -> int | None:
    """How many input rows the run reads (`None`: not known)."""
    if isinstance(rows, Reader):
        count = rows.count()
    else:
        count = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
    if limit is not None:
        return limit if count is None else min(count, limit)
    return count
