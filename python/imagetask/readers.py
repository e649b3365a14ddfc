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

from imagetask.errors import ReadError
from imagetask.extras import require

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
            parquet = require("pyarrow.parquet", "parquet", "reading Parquet")
            rows: int = parquet.ParquetFile(self.path).metadata.num_rows
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

    def _jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        decoder = msgspec.json.Decoder()
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    row = decoder.decode(line)
                except msgspec.DecodeError as exc:
                    raise ReadError(f"{self.where(number)}: invalid JSON: {exc}") from None
                if not isinstance(row, dict):
                    raise ReadError(
                        f"{self.where(number)}: expected a JSON object, got {type(row).__name__}"
                    )
                yield number, row

    def _txt(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                try:
                    prompt = line.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    raise ReadError(f"{self.where(number)}: not UTF-8 text ({exc})") from None
                if prompt.strip():
                    yield number, {"prompt": prompt}

    def _csv(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            try:
                for row in reader:
                    if None in row:
                        raise ReadError(
                            f"{self.where(reader.line_num)}: more fields than the header's "
                            f"{len(reader.fieldnames or [])}"
                        )
                    yield reader.line_num, row
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ReadError(f"{self.where(reader.line_num)}: {exc}") from None

    def _parquet(self) -> Iterator[tuple[int, dict[str, Any]]]:
        parquet = require("pyarrow.parquet", "parquet", "reading Parquet")
        number = 0
        for batch in parquet.ParquetFile(self.path).iter_batches(batch_size=_PARQUET_BATCH):
            for row in batch.to_pylist():
                number += 1
                yield number, row
