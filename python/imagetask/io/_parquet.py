"""Parquet output laid out as a Hugging Face dataset repository.

```
OUT/README.md                         dataset card (`imagetask.io._card`): the run
OUT/data/train-00000.parquet          finished shards, each about `shard_bytes` at most
OUT/data/train-00001.parquet
OUT/.staging/staged-00003.arrows      batches of the shard being filled (Arrow IPC streams)
```

`datasets.load_dataset(OUT, split="train")` reads the shards (the card's `configs` names
them: `data/train-*.parquet`; the JSONL, artifacts and checkpoint beside them are not
data files). The image column is stored as the `Image` feature (`struct<bytes: binary,
path: string>`, the artifact's path in `path` when the task saves artifacts) and every
shard carries the `huggingface` schema metadata with its features.

Batches are appended to the staging stream as they are written, in record batches of about
`STAGED_BATCH_BYTES`; when it holds `shard_bytes`, its batches become the next shard (row
groups of at most `ROW_GROUP_BYTES` of rows, a larger row alone: image rows are large),
written under a temporary name, synced and renamed. A shard is made a few staged record
batches at a time (`GATHERED_BYTES`), each row group written as soon as it is full: making
it holds about one row group, however large the shard and the batches. With `image_root`,
an image already in its file there is staged as its path alone and its bytes are read into
the shard just before its row group is written (`imagetask.io._image_files`): the files
count in the shard's size and the row group's. With `spooled`, the files are read when
their batch is staged, a staged record batch at a time (they go once it is). Nothing is
rewritten at the end of the run: `finish` only turns the last staged batches into the last
shard and writes the card. The checkpoint records the shards and the staged streams with
their sizes and row counts; a resumed run checks them, drops what came after (a shard
finished after the checkpoint, staged bytes beyond it) and goes on staging in a new
stream. A stream is deleted only once a checkpoint records its shard and no longer names
the stream, so a stop at any moment leaves an output its checkpoint can resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec

from imagetask._durable import (
    OutputFile,
    fsync_and_uncache,
    fsync_dir,
    fsync_file,
    write_atomic,
)
from imagetask._extras import require
from imagetask.build._schema import features, image_structs, is_image_struct
from imagetask.errors import RunError, SinkError
from imagetask.io._card import DatasetCard
from imagetask.io._image_files import ImageFiles, MissingImageFile

__all__ = [
    "DATA",
    "ROW_GROUP_BYTES",
    "SHARD_BYTES",
    "STAGED_BATCH_BYTES",
    "STAGED_NAME",
    "STAGING",
    "ParquetSink",
    "features",
]

DATA = "data"
STAGING = ".staging"
SHARD_BYTES = 500_000_000
"""Default bound of a shard's size (the bytes of its rows as Arrow holds them)."""
ROW_GROUP_BYTES = 64 * 2**20
"""Bound of a Parquet row group's size (the bytes of its rows as Arrow holds them); a row
larger than this is a row group alone. Read when a shard is written (tests lower it)."""
STAGED_BATCH_BYTES = 8 * 2**20
"""About the largest record batch of a staged stream (a row larger than this is one alone):
a shard is made reading one at a time."""
GATHERED_BYTES = 2**20
"""The bytes of staged record batches read into one table when a shard is made."""
STAGING_BUFFER_BYTES = 2**18
"""The buffer between a staged stream and its file (written out when full, and at every
sync)."""
PARQUET_DEPTH = 100
"""The deepest schema Parquet readers accept (Arrow C++'s limit), the root counted."""

_SHARD = re.compile(r"train-(\d{5})\.parquet")
STAGED_NAME = re.compile(r"staged-(\d{5})\.arrows")
"""The name of a staged stream in `STAGING`."""

Count = Annotated[int, msgspec.Meta(ge=0)]


class _File(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    rows: Count
    bytes: Count


class _State(msgspec.Struct, forbid_unknown_fields=True):
    rows: Count
    shards: list[_File]
    staged: list[_File]


_PAGE_BYTES = 1 << 20
"""pyarrow's size of a Parquet data page."""
_WRITE_BATCH_ROWS = 1024
"""pyarrow's rows given to the column writers at a time (its `write_batch_size`)."""


def _leaves(kind: Any) -> int:
    """How many Parquet columns (leaves) an Arrow type takes."""
    if kind.num_fields == 0:
        return 1
    return sum(_leaves(kind.field(index).type) for index in range(kind.num_fields))


def _read_pool(arrow: Any) -> Any:
    """The memory pool of what the sink reads back: jemalloc's where pyarrow has it. The
    default pool (mimalloc) takes fresh huge pages, which the kernel zeroes, for much of
    each staged stream read back; the C library's allocator keeps more memory the larger
    the images and the batches."""
    try:
        return arrow.jemalloc_memory_pool()
    except NotImplementedError:
        return arrow.default_memory_pool()


def _plain_image_structs(field: Any) -> bool:
    """Whether a field holds `Image` structs (or lists of them) as the sink writes its
    image column: nullable, without field metadata."""
    return bool(field.nullable and not field.metadata and is_image_struct(field.type))


class ParquetSink:
    """The Hugging Face layout described in the module's docstring.

    Parameters
    ----------
    folder:
        The output folder.
    state:
        The checkpoint's state to resume from (`None`: a fresh output).
    image_column, path_column:
        The image column (`Image` structs, as `process_arrow` gives them; bytes become
        structs whose path is the path column's), and the artifact path column if any.
    source_columns:
        The input columns of images (an editing task's), `Image` features where they
        hold `Image` structs.
    empty_schema:
        The schema of the one (empty) shard of a run without rows.
    shard_bytes:
        When the staged batches hold this many bytes (the image files they name
        counted), they become a shard.
    image_root:
        The folder of the image files that the image column's path-only `Image` structs
        name (a run whose answers are stored in its artifacts folder as they arrive):
        such an image is staged as its path and its file's bytes are read into its shard
        (see `imagetask.io._image_files`). `None`: path-only images are written as they
        are.
    spooled:
        With `image_root`: the path-only images name files that go once their batch is
        written (a run's spool, see `imagetask.run._spool`): their bytes are read into
        the staged rows, a staged record batch's worth at a time, and their paths left
        out.
    """

    EMPTY: ClassVar[dict[str, Any]] = {"rows": 0, "shards": [], "staged": []}

    def __init__(
        self,
        folder: Path,
        state: dict[str, Any] | None = None,
        *,
        image_column: str = "image",
        path_column: str | None = None,
        source_columns: tuple[str, ...] = (),
        empty_schema: Any = None,
        shard_bytes: int = SHARD_BYTES,
        image_root: Path | None = None,
        spooled: bool = False,
    ) -> None:
        self._arrow = require("pyarrow", "parquet", "writing Parquet")
        self._parquet = require("pyarrow.parquet", "parquet", "writing Parquet")
        self._pool = _read_pool(self._arrow)
        self.folder = folder
        self.path = folder / DATA
        self._staging = folder / STAGING
        self._image_column = image_column
        self._path_column = path_column
        self._source_columns = source_columns
        self._empty_schema = empty_schema and self._arrow.schema(
            [
                field.with_type(image_structs(self._arrow.nulls(0, field.type), None).type)
                if field.name == image_column
                else field
                for field in empty_schema
            ]
        )
        self._shard_bytes = shard_bytes
        self._files = None if image_root is None else ImageFiles(image_root)
        self._spooled = spooled and self._files is not None
        self._referenced = 0  # the bytes of the image files the staged rows name
        try:
            checked = msgspec.convert(state or self.EMPTY, _State, strict=True)
        except msgspec.ValidationError as exc:
            raise RunError(f"{self.path}: the checkpoint's `sink` is not valid: {exc}") from None
        self._rows = checked.rows
        self._shards = checked.shards
        self._staged = checked.staged
        self._obsolete: list[Path] = []
        self._unsynced: set[Path] = set()
        self._writer: Any = None
        self._file: Any = None
        self._schema: Any = None  # the schema of the stream being written
        self._dataset_schema: Any = None  # the union of every row's schema so far
        self._shallow: Any = None  # the last batch schema found shallow enough for Parquet
        self.path.mkdir(exist_ok=True)
        self._staging.mkdir(exist_ok=True)
        self._restore()

    # -- resuming --------------------------------------------------------------

    def _refuse(self, message: str) -> RunError:
        return RunError(f"{message}: the output was changed since; start again in an empty folder")

    def _restore(self) -> None:
        """Checks the recorded shards and staged streams, drops what is not recorded."""
        for kind, pattern, files, folder in (
            ("shard", _SHARD, self._shards, self.path),
            ("staged stream", STAGED_NAME, self._staged, self._staging),
        ):
            for index, recorded in enumerate(files):
                found = pattern.fullmatch(recorded.name)
                if found is None or (kind == "shard" and int(found.group(1)) != index):
                    raise RunError(
                        f"{folder}: the checkpoint's `sink` names {recorded.name!r}, not a "
                        f"{kind} of this output"
                    )
            names = {recorded.name for recorded in files}
            for path in folder.iterdir():
                temporary = path.name.startswith(".train-") and path.name.endswith(".tmp")
                if path.name not in names and (pattern.fullmatch(path.name) or temporary):
                    path.unlink()
        rows = 0
        for shard in self._shards:
            path = self.path / shard.name
            size = path.stat().st_size if path.exists() else None
            if size != shard.bytes:
                raise self._refuse(
                    f"{path}: {'missing' if size is None else f'{size:,} bytes'}, "
                    f"not the {shard.bytes:,} bytes the checkpoint records"
                )
            try:
                metadata = self._parquet.read_metadata(path)
            except (self._arrow.ArrowException, OSError) as exc:
                raise self._refuse(f"{path}: unreadable ({exc})") from None
            if metadata.num_rows != shard.rows:
                raise self._refuse(f"{path}: holds {metadata.num_rows:,} rows, not {shard.rows:,}")
            self._widen(metadata.schema.to_arrow_schema())
            rows += shard.rows
        for staged in self._staged:
            path = self._staging / staged.name
            size = path.stat().st_size if path.exists() else None
            if size is None or size < staged.bytes:
                raise self._refuse(
                    f"{path}: {'missing' if size is None else f'{size:,} bytes'}, fewer than "
                    f"the {staged.bytes:,} bytes the checkpoint records"
                )
            os.truncate(path, staged.bytes)
            counted = 0
            try:
                for batch in self._batches(path):
                    counted += batch.num_rows
                    self._widen(batch.schema)
                    self._referenced += sum(self._file_sizes(batch))
            except (self._arrow.ArrowException, OSError) as exc:
                raise self._refuse(f"{path}: unreadable ({exc})") from None
            except MissingImageFile as exc:
                raise self._refuse(f"{path}: {exc}") from None
            if counted != staged.rows:
                raise self._refuse(f"{path}: holds {counted:,} rows, not {staged.rows:,}")
            rows += staged.rows
        if rows != self._rows:
            raise self._refuse(
                f"{self.path}: the shards and staged batches hold {rows:,} rows, not the "
                f"{self._rows:,} the checkpoint records"
            )

    def _batches(self, path: Path) -> Iterator[Any]:
        """The record batches of a staged stream, read one at a time (into Arrow's memory,
        not Python's)."""
        if not path.stat().st_size:
            return
        with self._arrow.OSFile(str(path), "rb", memory_pool=self._pool) as file:
            yield from self._arrow.ipc.open_stream(file, memory_pool=self._pool)

    def _gathered(self, path: Path) -> Iterator[Any]:
        """The rows of a staged stream as tables of its record batches gathered up to
        `GATHERED_BYTES` or more (a stream of small batches holds thousands of them); a
        batch is not read before the ones gathered are yielded."""
        pending: list[Any] = []
        size = 0
        for batch in self._batches(path):
            pending.append(batch)
            size += batch.get_total_buffer_size()
            if size >= GATHERED_BYTES:
                yield self._arrow.Table.from_batches(pending)
                pending, size = [], 0
        if pending:
            yield self._arrow.Table.from_batches(pending)

    # -- writing ---------------------------------------------------------------

    def _widen(self, schema: Any) -> None:
        self._dataset_schema = self._unify(self._dataset_schema, schema)

    def _unify(self, schema: Any, new: Any) -> Any:
        if schema is None:
            return new.remove_metadata()
        if new.equals(schema):  # the common case, and much cheaper than unifying
            return schema
        try:
            return self._arrow.unify_schemas(
                [schema, new.remove_metadata()], promote_options="permissive"
            )
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

    def write_table(self, table: Any) -> None:
        """Stages one batch (an Arrow table) whole, or raises `SinkError` having staged
        nothing; a full stage becomes a shard."""
        arrow = self._arrow
        if self._shallow is None or not table.schema.equals(self._shallow):
            for field in table.schema:
                if 1 + self._depth(field.type) > PARQUET_DEPTH:
                    raise SinkError(
                        f"{self.path}: the column {field.name!r} is nested too deeply for "
                        f"Parquet (readers accept {PARQUET_DEPTH} levels)"
                    )
            self._shallow = table.schema
        index = table.schema.get_field_index(self._image_column)
        # A column of `Image` structs already (the native builder's) is kept as it is.
        if index >= 0 and not _plain_image_structs(table.schema.field(index)):
            path_index = (
                table.schema.get_field_index(self._path_column) if self._path_column else -1
            )
            paths = table.column(path_index).combine_chunks() if path_index >= 0 else None
            images = image_structs(table.column(index).combine_chunks(), paths)
            table = table.set_column(index, arrow.field(self._image_column, images.type), images)
        schema = self._unify(self._dataset_schema, table.schema)
        try:
            table = self._conform(table, schema)
        except (arrow.ArrowException, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise SinkError(
                f"{self.path}: the batch cannot take the columns' types: {reason}"
            ) from None
        if self._dataset_schema is not None and not schema.equals(self._dataset_schema):
            self._check_widening(schema)
        try:
            sizes = self._file_sizes(table)
            if self._writer is None or not schema.equals(self._schema):
                self._start_stream(schema)
            if self._spooled:
                self._stage_read(table, sizes)
                sizes = []  # read into the staged rows: no file is referenced
            else:
                self._writer.write_table(table, max_chunksize=self._staged_rows(table))
        except MissingImageFile as exc:
            raise SinkError(f"{self.path}: {exc}") from None
        referenced = sum(sizes)
        current = self._staged[-1]
        current.rows += table.num_rows
        current.bytes = self._file.tell()
        self._unsynced.add(self._staging / current.name)
        self._rows += table.num_rows
        self._referenced += referenced
        self._dataset_schema = schema
        if sum(staged.bytes for staged in self._staged) + self._referenced >= self._shard_bytes:
            self._finish_shard()

    def _file_sizes(self, table: Any) -> list[int]:
        """Per row of `table`, the bytes of the image files its path-only images name
        (none without `image_root`); `MissingImageFile` for one that is not there."""
        if self._files is None or self._image_column not in table.column_names:
            return [0] * table.num_rows
        return self._files.sizes(table.column(self._image_column))

    def _with_file_bytes(self, table: Any) -> Any:
        """`table` with the bytes of the files its path-only images name read into them."""
        return self._filled(table) if any(self._file_sizes(table)) else table

    def _filled(self, table: Any, *, keep_paths: bool = True) -> Any:
        """`table` with its path-only images' files read (their paths kept or not)."""
        assert self._files is not None
        index = table.schema.get_field_index(self._image_column)
        column = table.column(index).combine_chunks(self._pool)
        filled = self._files.filled(column, keep_paths=keep_paths)
        return table.set_column(index, table.schema.field(index), filled)

    def _stage_read(self, table: Any, sizes: list[int]) -> None:
        """Stages `table` with the files its path-only images name (of `sizes` bytes per
        row) read into it, their paths left out, about `STAGED_BATCH_BYTES` of files at a
        time."""
        if not any(sizes):  # no file to read: the table as it is
            self._writer.write_table(table, max_chunksize=self._staged_rows(table))
            return
        start = 0
        while start < table.num_rows:
            end, held = start + 1, sizes[start]
            while end < table.num_rows and held + sizes[end] <= STAGED_BATCH_BYTES:
                held += sizes[end]
                end += 1
            piece = table.slice(start, end - start)
            read = self._filled(piece, keep_paths=False) if held else piece
            self._writer.write_table(read, max_chunksize=self._staged_rows(read))
            start = end

    def _staged_rows(self, table: Any) -> int:
        """The rows of a staged record batch of `table`: about `STAGED_BATCH_BYTES`."""
        rows: int = max(table.num_rows, 1)
        if table.get_total_buffer_size() <= STAGED_BATCH_BYTES:
            # What its buffers hold (no less than its bytes, and quicker to count) fits.
            return rows
        row = table.nbytes / rows
        return max(1, int(STAGED_BATCH_BYTES // row)) if row else rows

    def _check_widening(self, schema: Any) -> None:
        """Raises `SinkError` unless every row written so far (shards and staged batches)
        takes the types `schema` widens its columns to (an int beyond 2**53 is no exact
        float): `datasets` casts every shard to the card's types."""
        arrow = self._arrow
        names = [
            field.name
            for field in self._dataset_schema
            if not schema.field(field.name).type.equals(field.type)
        ]
        for part in self._written(names):
            for name in names:
                kind = schema.field(name).type
                try:
                    if name in part.column_names:
                        part.column(name).cast(kind)
                except (arrow.ArrowException, ValueError) as exc:
                    reason = " ".join(str(exc).split())
                    raise SinkError(
                        f"{self.path}: the batch makes the column {name!r} {kind}, which the "
                        f"rows before it cannot take: {reason}"
                    ) from None

    def _written(self, names: list[str]) -> Iterator[Any]:
        """The rows written so far, one table at a time: the `names` columns of each
        shard, then the staged batches (none when `names` is empty)."""
        if not names:
            return
        if self._file is not None:
            self._file.flush()  # the stream being written, read back whole
        for shard in self._shards:
            yield self._parquet.read_table(self.path / shard.name, columns=names)
        for staged in self._staged:
            yield from self._gathered(self._staging / staged.name)

    def _conform(self, table: Any, schema: Any) -> Any:
        """`table` with `schema`'s columns, in its order (missing ones null)."""
        arrow = self._arrow
        if table.schema.equals(schema):
            return table.replace_schema_metadata(schema.metadata)
        columns = [
            table.column(field.name).cast(field.type)
            if field.name in table.column_names
            else arrow.nulls(table.num_rows, field.type)
            for field in schema
        ]
        return arrow.Table.from_arrays(columns, schema=schema)

    def _start_stream(self, schema: Any) -> None:
        self._close_stream()
        used = [int(STAGED_NAME.fullmatch(staged.name).group(1)) for staged in self._staged]  # type: ignore[union-attr]
        for path in self._staging.iterdir():
            found = STAGED_NAME.fullmatch(path.name)
            if found:
                used.append(int(found.group(1)))
        name = f"staged-{max(used, default=-1) + 1:05d}.arrows"
        # Buffered: record batches reach the file a buffer at a time (and at each sync), not
        # one system call for each of their buffers.
        raw = self._arrow.OSFile(str(self._staging / name), "wb")
        self._file = self._arrow.BufferedOutputStream(raw, STAGING_BUFFER_BYTES)
        self._writer = self._arrow.ipc.new_stream(self._file, schema)
        self._schema = schema
        self._staged.append(_File(name=name, rows=0, bytes=self._file.tell()))

    def _close_stream(self) -> None:
        """Ends the stream being written (its end-of-stream marker may come after the
        recorded size: a resumed run cuts it, and a reader stops at the end of the file)."""
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        self._file = self._writer = self._schema = None

    def _finish_shard(self) -> None:
        """Turns the staged batches into the next shard (synced, then renamed); without
        staged rows, a shard without row groups (`datasets` reads it as no rows)."""
        self._close_stream()
        parquet = self._parquet
        schema = self._dataset_schema if self._dataset_schema is not None else self._empty_schema
        meta = {"info": {"features": features(schema, self._image_column, self._source_columns)}}
        schema = schema.with_metadata({"huggingface": json.dumps(meta)})
        name = f"train-{len(self._shards):05d}.parquet"
        temp = self.path / f".{name}.tmp"
        staged = [self._staging / file.name for file in self._staged]
        tables = (self._conform(table, schema) for path in staged for table in self._gathered(path))
        groups = self._row_groups(tables, ROW_GROUP_BYTES)
        try:
            # A group's image files are read just before it is written: one at a time.
            group = next(groups, None)
            row = 0.0
            if group is not None and group.num_rows:
                row = (group.nbytes + sum(self._file_sizes(group))) / group.num_rows
            options = self._column_options(schema, row)
            with (
                OutputFile(temp, "wb") as file,
                parquet.ParquetWriter(file, schema, **options) as writer,
            ):
                while group is not None:
                    writer.write_table(self._with_file_bytes(group), row_group_size=group.num_rows)
                    del group  # written: not held while the next one is gathered
                    group = next(groups, None)
        except MissingImageFile as exc:
            raise SinkError(f"{self.path}: the staged rows cannot become a shard: {exc}") from None
        fsync_and_uncache(temp)  # a shard is not read again by the run
        os.replace(temp, self.path / name)
        fsync_dir(self.path)
        rows = sum(file.rows for file in self._staged)
        self._shards.append(_File(name=name, rows=rows, bytes=(self.path / name).stat().st_size))
        self._obsolete.extend(staged)
        self._unsynced.difference_update(staged)
        self._staged = []
        self._referenced = 0

    def _column_options(self, schema: Any, row: float) -> dict[str, Any]:
        """The `ParquetWriter` options of a shard of `schema` whose rows hold about `row`
        bytes each (0: unknown). The bytes of its `Image` columns (images, already
        compressed) are written plain, without compression, dictionary or statistics,
        which would cost CPU for nothing; every other column as pyarrow writes it by
        default (Snappy, dictionary, statistics). Rows go to the column writers about a
        data page at a time: a column writer holds the values it is given twice before
        they become pages, so large images given 1,024 rows at a time (pyarrow's default)
        would cost twice a row group."""
        arrow, parquet = self._arrow, self._parquet
        out = arrow.BufferOutputStream()
        parquet.write_table(arrow.Table.from_batches([], schema=schema), out)
        leaves = parquet.read_metadata(arrow.BufferReader(out.getvalue())).schema
        paths = [leaves.column(index).path for index in range(len(leaves))]
        images: set[int] = set()
        first = 0
        for field in schema:
            if is_image_struct(field.type):
                images.add(first)  # `bytes` is the first leaf of an `Image` struct
            first += _leaves(field.type)
        batch = {
            "write_batch_size": max(1, min(_WRITE_BATCH_ROWS, int(_PAGE_BYTES // max(row, 1))))
        }
        if first != len(paths):  # a type whose leaves are not counted here
            return batch
        plain = {paths[index] for index in images}
        other = [path for path in paths if path not in plain]
        return {
            **batch,
            "compression": {path: "none" if path in plain else "snappy" for path in paths},
            "use_dictionary": other,
            "write_statistics": other,
        }

    def _row_groups(self, tables: Iterator[Any], limit: int) -> Iterator[Any]:
        """The rows of `tables`, in order, cut into tables of at most `limit` bytes each
        (Arrow's `nbytes`, or the size of a whole table's buffers, which is no less; with
        the image files their path-only images name), a row larger than `limit` alone."""
        pending: list[Any] = []
        size = 0
        for table in tables:
            files = self._file_sizes(table)
            start = 0
            while start < table.num_rows:
                rest = table.slice(start)
                # A whole table's bytes are what its buffers hold, which is quicker to count.
                held = rest.nbytes if start else table.get_total_buffer_size()
                whole = held + sum(files[start:])
                if size + whole <= limit:  # the common case: the whole rest fits
                    pending.append(rest)
                    size += whole
                    break
                end = start
                while end < table.num_rows:
                    row = table.slice(end, 1).nbytes + files[end]
                    if size + row > limit and (pending or end > start):
                        break
                    size += row
                    end += 1
                if end > start:
                    pending.append(table.slice(start, end - start))
                if end < table.num_rows:  # the group is full
                    yield self._arrow.concat_tables(pending)
                    pending, size = [], 0
                start = end
        if pending:
            yield self._arrow.concat_tables(pending)

    # -- the sink protocol -------------------------------------------------------

    def sync(self) -> None:
        """Writes what the stream buffers, then syncs the staged streams written since the
        last sync (a checkpoint records no more than what was synced before it)."""
        if self._file is not None:
            self._file.flush()
        for path in self._unsynced:
            if path.exists():
                fsync_file(path)
        self._unsynced.clear()
        fsync_dir(self._staging)

    def discard_after(self, state: dict[str, Any]) -> None:
        """Nothing to drop here: a resumed run deletes the shards finished after its
        checkpoint and cuts the staged streams back to it."""

    def saved(self, state: dict[str, Any]) -> None:
        """After a checkpoint recorded `state`: deletes the streams of finished shards that
        it no longer names (a stop between finishing a shard and recording it leaves a
        checkpoint that still needs them)."""
        recorded = {staged["name"] for staged in state["staged"]}
        kept = [path for path in self._obsolete if path.name in recorded]
        for path in self._obsolete:
            if path.name not in recorded:
                path.unlink(missing_ok=True)
        self._obsolete = kept

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = msgspec.to_builtins(
            _State(rows=self._rows, shards=list(self._shards), staged=list(self._staged))
        )
        return state

    def written_schema(self) -> Any:
        """The schema of the rows written so far (each image an `Image` struct); `None`
        before the first row."""
        return self._dataset_schema

    def recorded(self) -> Iterator[dict[str, Any]]:
        """The rows of the shards and staged batches, in order, as they are stored."""
        self._close_stream()
        batches = (
            batch
            for shard in self._shards
            for batch in self._parquet.ParquetFile(self.path / shard.name).iter_batches()
        )
        staged = (
            batch for file in self._staged for batch in self._batches(self._staging / file.name)
        )
        for source in (batches, staged):
            for batch in source:
                yield from batch.to_pylist()

    def finish(self, final: bool, about: str) -> None:
        """Turns the staged batches into the last shard (an empty one for a run without
        rows) and writes the dataset card; `final` makes no difference here."""
        if self._staged or not self._shards:
            self._finish_shard()
        schema = self._dataset_schema if self._dataset_schema is not None else self._empty_schema
        size = sum(shard.bytes for shard in self._shards)
        card = DatasetCard(
            about=about,
            format="parquet",
            rows=self._rows,
            files=len(self._shards),
            size=size,
            features=features(schema, self._image_column, self._source_columns),
        )
        write_atomic(self.folder / "README.md", card.text().encode())

    def close(self) -> None:
        """Ends the stream being written; removes the staging folder if it is empty."""
        self._close_stream()
        with contextlib.suppress(OSError):
            self._staging.rmdir()
