"""A run's input: its rows taken a batch at a time, each row numbered and named, and the
rows a resumed run had done checked against its checkpoint and skipped.

Rows come as dicts (`RowInput`: any iterable of rows, or a `Reader`), or, for a run that
writes Parquet from a Parquet file, as Arrow tables that stay Arrow from the reader to
the sink (`TableInput`): their digest is then made in Arrow's row format (`TableDigest`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from imagetask._extras import require
from imagetask.errors import ImageTaskError, RunError
from imagetask.io._checkpoint import JSON_ROWS, InputMark, RowsDigest, TableDigest, row_digest
from imagetask.io._readers import Reader

if TYPE_CHECKING:
    from imagetask.outcome import Row

__all__ = ["Chunk", "RowInput", "TableInput", "Where", "input_of", "total"]

Where = Callable[[int], str]
"""How log lines and errors name a row from its number."""


@dataclass(frozen=True)
class Chunk:
    """A batch's input rows, as dicts (`rows`) or as one Arrow table (`table`).

    Attributes
    ----------
    numbers:
        Each row's number (its file's line or row, or its index), for `Where`.
    rows, table:
        The rows: one of the two is `None`.
    mark:
        The digests of the input's first row (in its first chunk only: a checkpoint keeps
        that one), of the chunk's last row, and of the input up to it.
    """

    numbers: Sequence[int]
    rows: list[Row] | None
    table: Any
    mark: InputMark

    def dicts(self) -> list[Row]:
        """The rows as dicts."""
        if self.rows is not None:
            return self.rows
        rows: list[Row] = self.table.to_pylist()
        return rows


class _Skipped:
    """The rows a resumed run skips: how many, and the first and last of them."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, Row] | None = None
        self.last: tuple[int, Row] | None = None

    def saw(self, number: int, row: Row) -> None:
        """Notes a row skipped (the first noted is the first, the last the last)."""
        if self.first is None:
            self.first = (number, row)
        self.last = (number, row)

    def check(self, where: Where, done: int, mark: InputMark, digest: str | None) -> None:
        """Raises `RunError` unless these are the `done` rows `mark` records (`digest`:
        theirs, `None` when it cannot be compared with the recorded one)."""
        if self.count < done:
            raise RunError(
                f"the input has {self.count:,} rows, but the run to resume had done {done:,}"
            )
        for seen, recorded in ((self.first, mark.first), (self.last, mark.last)):
            if seen is not None and recorded is not None and row_digest(seen[1]) != recorded:
                raise RunError(
                    f"{where(seen[0])}: not the row the run to resume read there: resume it "
                    "with the input it started with"
                )
        if self.last is not None and mark.rows is not None and digest not in (None, mark.rows):
            raise RunError(
                f"{where(self.last[0])}: the rows up to this one are not the ones the run to "
                "resume read (a row was changed, added or removed): resume it with the input "
                "it started with"
            )


class RowInput:
    """Input rows as dicts: any iterable of rows (numbered by index), or a `Reader`
    (numbered by the file's line)."""

    def __init__(self, rows: Iterable[Row] | Reader) -> None:
        self._rows: Iterator[tuple[int, Row]]
        self.where: Where
        if isinstance(rows, Reader):
            self._rows, self.where = iter(rows), rows.where
        else:
            self._rows, self.where = enumerate(rows), lambda index: f"input row {index}"
        self._digest = RowsDigest()
        self._following: list[tuple[int, Row]] = []
        self._started = False  # whether a row was taken or skipped

    def skip(self, done: int, mark: InputMark) -> None:
        """Skips the `done` rows a resumed run had done, checking that they are the rows
        its checkpoint's `mark` records (`RunError` if not)."""
        if done and mark.encoding != JSON_ROWS:
            raise RunError(
                "the run to resume read its input as Arrow record batches (a Parquet file "
                "written to Parquet): resume it with the input it started with"
            )
        skipped = _Skipped()
        for number, row in islice(self._rows, done):
            skipped.saw(number, row)
            skipped.count += 1
            self._digest.add(row)
            self._started = True
        skipped.check(self.where, done, mark, self._digest.hexdigest())

    def more(self) -> bool:
        """Whether a row follows (read, and kept for `take`)."""
        if not self._following:
            self._following = list(islice(self._rows, 1))
        return bool(self._following)

    def take(self, size: int) -> Chunk | None:
        """The next `size` rows at most (`None`: none left)."""
        numbered = self._following + list(islice(self._rows, size - len(self._following)))
        self._following = []
        if not numbered:
            return None
        rows = [row for _, row in numbered]
        for row in rows:
            self._digest.add(row)
        first = None if self._started else row_digest(rows[0])
        self._started = True
        mark = InputMark(first, row_digest(rows[-1]), self._digest.hexdigest())
        return Chunk([number for number, _ in numbered], rows, None, mark)


class TableInput:
    """A Parquet file's rows as Arrow tables (`Reader.batches`), numbered from 1; their
    digest is made in Arrow's row format, or as dicts when resuming a run whose checkpoint
    recorded that (or when the columns have no row encoding)."""

    def __init__(self, reader: Reader) -> None:
        self.where: Where = reader.where
        self._batches = reader.batches()
        self._held: list[Any] = []  # record batches read and not yet taken, in order
        self._next = 1
        self._digest: RowsDigest | TableDigest | None = None
        self._encoding: str | None = None  # the encoding of a resumed run's digest

    def _digest_for(self, table: Any) -> RowsDigest | TableDigest:
        if self._digest is None:
            if self._encoding != JSON_ROWS and TableDigest.reads(table.schema):
                self._digest = TableDigest()
            else:
                self._digest = RowsDigest()
        return self._digest

    def skip(self, done: int, mark: InputMark) -> None:
        """`RowInput.skip` for Arrow rows. A digest made in another version of Arrow's
        row format cannot be compared: the first and last rows are still checked."""
        self._encoding = mark.encoding if done else None
        skipped = _Skipped()
        while skipped.count < done:
            chunk = self._table(min(done - skipped.count, 1 << 16))
            if chunk is None:
                break
            number, table = chunk
            self._digest_for(table).add_table(table)
            if skipped.count == 0:
                skipped.saw(number, _row(table, 0))
            skipped.saw(number + table.num_rows - 1, _row(table, table.num_rows - 1))
            skipped.count += table.num_rows
        comparable = self._digest is not None and self._digest.encoding == mark.encoding
        digest = self._digest.hexdigest() if comparable and self._digest is not None else None
        skipped.check(self.where, done, mark, digest)

    def more(self) -> bool:
        """Whether a row follows (read, and kept for `take`)."""
        while not self._held:
            following = next(self._batches, None)
            if following is None:
                return False
            if following[1].num_rows:
                self._held.append(following[1])
        return True

    def _table(self, size: int) -> tuple[int, Any] | None:
        """The next `size` rows at most as one table, with its first row's number."""
        arrow = require("pyarrow", "parquet", "reading Parquet")
        held = 0
        taken: list[Any] = []
        while held < size and self.more():
            batch = self._held.pop(0)
            if held + batch.num_rows > size:
                self._held.insert(0, batch.slice(size - held))
                batch = batch.slice(0, size - held)
            taken.append(batch)
            held += batch.num_rows
        if not taken:
            return None
        number, self._next = self._next, self._next + held
        return number, arrow.Table.from_batches(taken)

    def take(self, size: int) -> Chunk | None:
        """The next `size` rows at most (`None`: none left)."""
        found = self._table(size)
        if found is None:
            return None
        number, table = found
        digest = self._digest_for(table)
        digest.add_table(table)
        last = table.num_rows - 1
        mark = InputMark(
            row_digest(_row(table, 0)) if number == 1 else None,
            row_digest(_row(table, last)),
            digest.hexdigest(),
            digest.encoding,
        )
        return Chunk(range(number, number + table.num_rows), None, table, mark)


def _row(table: Any, index: int) -> Row:
    """Row `index` of an Arrow table, as a dict."""
    row: Row = table.slice(index, 1).to_pylist()[0]
    return row


def input_of(rows: Iterable[Row] | Reader, columnar: bool) -> RowInput | TableInput:
    """The run's input: a Parquet file read as Arrow tables for a `columnar` run (one
    that writes Parquet), else rows as dicts."""
    if columnar and isinstance(rows, Reader) and rows.format == "parquet":
        return TableInput(rows)
    return RowInput(rows)


def exhausted(rows: RowInput | TableInput) -> bool:
    """Whether the input has no row left (a row that cannot be read counts as one)."""
    try:
        return not rows.more()
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
