"""Input readers: rows from JSONL, CSV, text (one prompt per line) and Parquet files.

A reader yields `(line, row)` pairs: `line` is where the row is in the file (its line
number for text formats, its 1-based row number for Parquet), for error messages.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from imagetask._extras import require
from imagetask.errors import ReadError

__all__ = ["FORMATS", "Reader"]

Format = Literal["jsonl", "csv", "txt", "parquet"]
FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".txt": "txt",
    ".parquet": "parquet",
}
"""File extension -> input format."""

_PARQUET_BATCH = 4096
_BOM = b"\xef\xbb\xbf"
_CSV_FIELD_LIMIT = 2**31 - 1
"""The csv module's field size limit while reading (its default is 131,072 characters;
it is one setting for the whole process, and is only ever raised)."""


def _first_invalid(arrow: Any, batch: Any) -> int:
    """The index of the first row of `batch` that is not valid Arrow data (0 if none)."""
    for index in range(batch.num_rows):
        try:
            batch.slice(index, 1).validate(full=True)
        except arrow.ArrowException:
            return index
    return 0


class Reader:
    """The rows of one input file, read lazily in order.

    Parameters
    ----------
    path:
        The file.
    format:
        `jsonl`, `csv`, `txt` or `parquet`; default: from the file's extension.
    """

    def __init__(self, path: str | Path, format: Format | None = None) -> None:
        self.path = Path(path)
        if format is None:
            found = FORMATS.get(self.path.suffix.lower())
            if found is None:
                raise ReadError(
                    f"{self.path}: cannot tell the input format from the extension "
                    f"{self.path.suffix!r} (known: {', '.join(FORMATS)})"
                )
            format = found
        self.format: Format = format
        if not self.path.is_file():
            raise ReadError(f"{self.path}: no such file")

    def where(self, line: int) -> str:
        """`path line N` (`path row N` for Parquet)."""
        unit = "row" if self.format == "parquet" else "line"
        return f"{self.path} {unit} {line}"

    def count(self) -> int | None:
        """How many rows the file holds, when that is cheap to know (no parsing)."""
        if self.format == "parquet":
            rows: int = self._parquet_file().metadata.num_rows
            return rows
        if self.format == "csv":
            return None
        lines = 0
        with self.path.open("rb") as file:
            for line in file:
                lines += bool(line.strip())
        return lines

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return getattr(self, f"_{self.format}")()  # type: ignore[no-any-return]

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """The file's lines with their numbers, a UTF-8 byte order mark dropped."""
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                yield number, line.removeprefix(_BOM) if number == 1 else line

    def _text(self, number: int, line: bytes) -> str:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReadError(f"{self.where(number)}: not UTF-8 text ({exc})") from None

    def _jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        decoder = msgspec.json.Decoder()
        for number, line in self._lines():
            if not line.strip():
                continue
            try:
                row = decoder.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                # msgspec reports text that is not UTF-8 as either, depending on its version.
                self._text(number, line)
                raise ReadError(f"{self.where(number)}: invalid JSON: {exc}") from None
            except RecursionError:
                raise ReadError(f"{self.where(number)}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise ReadError(
                    f"{self.where(number)}: expected a JSON object, got {type(row).__name__}"
                )
            yield number, row

    def _txt(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, line in self._lines():
            prompt = self._text(number, line).rstrip("\r\n")
            if prompt.strip():
                yield number, {"prompt": prompt}

    def _csv(self) -> Iterator[tuple[int, dict[str, Any]]]:
        # Lines are decoded here, one by one, so a decoding error names its own line. A row
        # is named by its first line (a quoted field may span several), an error of the
        # csv module by the line it was reading. A field may be as long as a JSONL line.
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        read = 0

        def lines() -> Iterator[str]:
            nonlocal read
            for number, line in self._lines():
                read = number
                yield self._text(number, line)

        records = csv.reader(lines())
        header: list[str] | None = None
        while True:
            start = read + 1
            try:
                record = next(records, None)
            except csv.Error as exc:
                raise ReadError(f"{self.where(read)}: {exc}") from None
            if record is None:
                return
            if not record:  # a blank line
                continue
            if header is None:
                header = record
                continue
            if len(record) > len(header):
                raise ReadError(f"{self.where(start)}: more fields than the header's {len(header)}")
            row: dict[str, Any] = dict(zip(header, record, strict=False))
            row.update(dict.fromkeys(header[len(record) :]))
            yield start, row

    def _parquet_file(self) -> Any:
        arrow = require("pyarrow", "parquet", "reading Parquet")
        parquet = require("pyarrow.parquet", "parquet", "reading Parquet")
        try:
            return parquet.ParquetFile(self.path)
        except (arrow.ArrowException, OSError) as exc:
            raise ReadError(f"{self.path}: not a readable Parquet file: {exc}") from None

    def batches(self) -> Iterator[tuple[int, Any]]:
        """A Parquet file's rows as Arrow record batches, each with the number of its
        first row; a batch that is not valid Arrow data (text that is not UTF-8) is a
        `ReadError` naming its first such row."""
        if self.format != "parquet":
            raise ReadError(f"{self.path}: only a Parquet file is read as Arrow record batches")
        arrow = require("pyarrow", "parquet", "reading Parquet")
        number = 1
        batches = self._parquet_file().iter_batches(batch_size=_PARQUET_BATCH)
        while True:
            try:
                batch = next(batches, None)
            except (arrow.ArrowException, OSError) as exc:
                raise ReadError(f"{self.where(number)}: cannot be read: {exc}") from None
            if batch is None:
                return
            try:
                batch.validate(full=True)
            except arrow.ArrowException as exc:
                bad = number + _first_invalid(arrow, batch)
                raise ReadError(f"{self.where(bad)}: cannot be read: {exc}") from None
            yield number, batch
            number += batch.num_rows

    def _parquet(self) -> Iterator[tuple[int, dict[str, Any]]]:
        arrow = require("pyarrow", "parquet", "reading Parquet")
        for first, batch in self.batches():
            try:
                rows = batch.to_pylist()
            except (arrow.ArrowException, ValueError, OverflowError) as exc:
                raise ReadError(
                    f"{self.where(first)}: the rows from this one cannot be read as Python "
                    f"values: {exc}"
                ) from None
            yield from enumerate(rows, start=first)
