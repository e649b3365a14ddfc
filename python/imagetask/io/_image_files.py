"""The images of a Parquet run kept in files until their shard is made.

A run whose answers are written to its artifacts folder as they arrive gives the Parquet
sink each such image as an `Image` struct holding only its path (relative to the output
folder): the staged rows carry no second copy of bytes already on disk. A run without
artifacts gives it the images its answers spooled the same way, and the sink reads them
into the staged rows a few at a time, their paths left out (the spool goes once the batch
is staged). `ImageFiles` finds those files and weighs them (`sizes`) when a batch is
staged, and reads them into the `bytes` of their structs (`filled`) when the shard is
made, a row group's worth at a time (spooled ones when staged, a staged record batch's
worth at a time), straight into Arrow's memory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from imagetask._extras import require
from imagetask.build._schema import image_type

__all__ = ["ImageFiles", "MissingImageFile"]


class MissingImageFile(Exception):
    """A path-only image whose file is not a readable file under the folder: `row` of
    the table, `path` as the row holds it, `reason`."""

    def __init__(self, row: int, path: str, reason: str) -> None:
        super().__init__(row, path, reason)
        self.row = row
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"row {self.row} names the image file {self.path!r}: {self.reason}"


@dataclass(frozen=True)
class _PathOnly:
    """The path-only images of an image column, flattened (a list column's items in
    order): the row of each item, and for each item its path or `None`."""

    rows: list[int]
    paths: list[str | None]


class ImageFiles:
    """The image files under `folder` that path-only `Image` structs name (see the
    module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._arrow = require("pyarrow", "parquet", "writing Parquet")
        self._compute = require("pyarrow.compute", "parquet", "writing Parquet")

    def _file(self, row: int, path: str) -> Path:
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise MissingImageFile(row, path, "not a path inside the output folder")
        return self.folder / relative

    def _size(self, row: int, path: str) -> int:
        try:
            found = os.stat(self._file(row, path), follow_symlinks=False)
        except OSError as exc:
            raise MissingImageFile(row, path, exc.strerror or str(exc)) from None
        if not stat.S_ISREG(found.st_mode):
            raise MissingImageFile(row, path, "not a regular file")
        return found.st_size

    def _path_only(self, column: Any) -> _PathOnly:
        """The path-only images of `column` (an array of `Image` structs, or of lists of
        them; another type holds none)."""
        if self._path_free(column):
            return _PathOnly([], [])
        arrow, compute = self._arrow, self._compute
        kind = column.type
        nested = arrow.types.is_list(kind) or arrow.types.is_large_list(kind)
        images = column.flatten() if nested else column
        data = compute.struct_field(images, "bytes")
        paths = compute.struct_field(images, "path")
        only = compute.and_kleene(compute.is_null(data), compute.is_valid(paths))
        if not compute.any(only).as_py():
            return _PathOnly([], [])
        rows = (
            compute.list_parent_indices(column).to_pylist() if nested else list(range(len(column)))
        )
        chosen = compute.if_else(only, paths, None).to_pylist()
        return _PathOnly(rows, chosen)

    def _path_free(self, column: Any) -> bool:
        """Whether no image of `column` (an array or a chunked array) can be path-only:
        each holds its bytes, or the column holds no `Image` structs. Chunks are not
        joined, and no compute function is called (a batch's column is looked at whole)."""
        arrow = self._arrow
        kind = column.type
        nested = arrow.types.is_list(kind) or arrow.types.is_large_list(kind)
        item = kind.value_type if nested else kind
        fields = ("bytes", "path")
        if not arrow.types.is_struct(item) or any(item.get_field_index(f) < 0 for f in fields):
            return True
        chunks = column.chunks if isinstance(column, arrow.ChunkedArray) else [column]
        # A path-only image's `bytes` is null in the struct's own child array.
        return not any((c.flatten() if nested else c).field("bytes").null_count for c in chunks)

    def sizes(self, column: Any) -> list[int]:
        """The bytes of the files the path-only images of each row of `column` (an array
        or a chunked array) name; `MissingImageFile` for one that is not there."""
        if isinstance(column, self._arrow.ChunkedArray):
            if self._path_free(column):
                return [0] * len(column)
            sizes: list[int] = []
            first = 0
            for chunk in column.chunks:
                try:
                    sizes += self.sizes(chunk)
                except MissingImageFile as exc:  # named by its row in the whole column
                    raise MissingImageFile(first + exc.row, exc.path, exc.reason) from None
                first += len(chunk)
            return sizes
        found = self._path_only(column)
        sizes = [0] * len(column)
        for row, path in zip(found.rows, found.paths, strict=True):
            if path is not None:
                sizes[row] += self._size(row, path)
        return sizes

    def filled(self, column: Any, *, keep_paths: bool = True) -> Any:
        """`column` with each path-only image's file read into its `bytes` (straight
        into one Arrow buffer), its path kept or (`keep_paths=False`: a file that goes
        once read) left out; `MissingImageFile` for a file that cannot be read."""
        arrow, compute = self._arrow, self._compute
        found = self._path_only(column)
        if not any(path is not None for path in found.paths):
            return column
        kind = column.type
        nested = arrow.types.is_list(kind) or arrow.types.is_large_list(kind)
        images = column.flatten() if nested else column
        data = compute.struct_field(images, "bytes")
        kept: list[Any] = []  # per item: its file, or its bytes as a buffer, or None
        sizes: list[int] = []
        for index, path in enumerate(found.paths):
            if path is not None:
                row = found.rows[index]
                kept.append(self._file(row, path))
                sizes.append(self._size(row, path))
            else:
                value = data[index].as_buffer() if data[index].is_valid else None
                kept.append(value)
                sizes.append(0 if value is None else value.size)
        values = arrow.allocate_buffer(sum(sizes))
        out = memoryview(values)
        offsets = [0]
        for index, (item, size) in enumerate(zip(kept, sizes, strict=True)):
            start = offsets[-1]
            if isinstance(item, Path):
                self._read_into(
                    item, out[start : start + size], found.rows[index], found.paths[index]
                )
            elif item is not None:
                out[start : start + size] = memoryview(item)
            offsets.append(start + size)
        valid = arrow.array([item is not None for item in kept], arrow.bool_())
        filled = arrow.Array.from_buffers(
            arrow.binary(),
            len(images),
            [valid.buffers()[1], arrow.array(offsets, arrow.int32()).buffers()[1], values],
        )
        paths = compute.struct_field(images, "path")
        if not keep_paths:
            read = arrow.array([path is not None for path in found.paths], arrow.bool_())
            paths = compute.if_else(read, arrow.scalar(None, paths.type), paths)
        structs = arrow.StructArray.from_arrays(
            [filled, paths],
            fields=list(image_type()),
            mask=images.is_null(),
        )
        if not nested:
            return structs
        offsets_array = compute.subtract(column.offsets, column.offsets[0])
        return type(column).from_arrays(offsets_array, structs, mask=column.is_null())

    def _read_into(self, file: Path, out: memoryview, row: int, path: str | None) -> None:
        read = 0
        try:
            with open(file, "rb", buffering=0) as source:
                while read < len(out):
                    got = source.readinto(out[read:])
                    if not got:
                        break
                    read += got
        except OSError as exc:
            raise MissingImageFile(row, path or "", exc.strerror or str(exc)) from None
        if read != len(out):
            raise MissingImageFile(row, path or "", f"{read:,} bytes, not the {len(out):,} it had")
