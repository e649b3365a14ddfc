"""`RowConverter`: a task's output cells between the dict rows of `process_batch` and the
Arrow layout of `process_arrow` (see `imagetask.columnar` for the mapping).

Arrow to dict: an image `{bytes, path}` struct becomes its bytes (as padded base64 text
unless `images_as_bytes`), the raw output and statistics JSON texts are parsed, and the
metadata fields that are null are left out (a null field stands for an absent key) but the
raw output and raw input. Dict to Arrow: an image becomes its bytes (base64 text decoded)
and the raw output and statistics their JSON text (`_core.json_text`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from imagetask import _core
from imagetask.errors import ReadError
from imagetask.outcome import Row

if TYPE_CHECKING:
    import pyarrow as pa

    from imagetask.build._schema import OutputSchema

__all__ = ["RowConverter", "image_bytes", "json_cell"]


def image_bytes(value: Any) -> bytes | None:
    """An image cell of the dict path as the bytes the Arrow layout stores: base64 text
    decoded (text that is not base64 as its UTF-8 bytes)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            return value.encode("utf-8", "backslashreplace")
    return bytes(value)


def json_cell(value: Any) -> str | None:
    """A raw output or statistics value as the JSON text the Arrow layout stores."""
    return None if value is None else _core.json_text(value)


def _each(value: Any, convert: Any) -> Any:
    """`convert(value)`, or of each item of a list (a grouped row's cell)."""
    return [convert(item) for item in value] if isinstance(value, list) else convert(value)


class RowConverter:
    """Converts the cells of one task configuration's output rows (see the module)."""

    def __init__(self, schema: OutputSchema, *, images_as_bytes: bool) -> None:
        self.schema = schema
        self.images_as_bytes = images_as_bytes
        self._json = (schema.raw_output, schema.statistics)
        self._kept = (schema.raw_output, schema.raw_input)

    # -- Arrow to dict ---------------------------------------------------------

    def image(self, value: Any) -> Any:
        """An Arrow image cell (an `Image` struct, or bytes) as the dict path holds it."""
        if isinstance(value, dict):
            value = value.get("bytes")
        if isinstance(value, bytes) and not self.images_as_bytes:
            return base64.b64encode(value).decode("ascii")
        return value

    def metadata(self, value: Any, where: str) -> Any:
        """An Arrow metadata struct as the dict path's metadata; `ReadError` naming
        `where` when a JSON field does not hold JSON."""
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            if isinstance(item, str) and key in self._json:
                try:
                    item = json.loads(item)
                except json.JSONDecodeError as exc:
                    raise ReadError(f"{where}: {key} is not JSON: {exc}") from None
            if item is not None or key in self._kept:
                out[key] = item
        return out

    def row(self, row: Row, where: str) -> Row:
        """An Arrow output row (as `to_pylist` gives it) as `process_batch` gives it."""
        row = dict(row)
        schema = self.schema
        if schema.image is not None and schema.image in row:
            row[schema.image] = _each(row[schema.image], self.image)
        if schema.metadata in row:
            row[schema.metadata] = _each(
                row[schema.metadata], lambda meta: self.metadata(meta, where)
            )
        return row

    def rows(self, table: pa.Table) -> list[Row]:
        """Every row of an output table as `process_batch` gives it."""
        return [self.row(row, f"row {i}") for i, row in enumerate(table.to_pylist())]

    # -- dict to Arrow ---------------------------------------------------------

    def arrow_row(self, row: Row) -> Row:
        """A `process_batch` row with its cells as the Arrow layout stores them (images
        as their bytes, the raw output and statistics as JSON text)."""
        row = dict(row)
        schema = self.schema

        def meta(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            return {
                key: json_cell(item) if key in self._json else item for key, item in value.items()
            }

        if schema.image is not None and schema.image in row:
            row[schema.image] = _each(row[schema.image], image_bytes)
        if schema.metadata in row:
            row[schema.metadata] = _each(row[schema.metadata], meta)
        return row
