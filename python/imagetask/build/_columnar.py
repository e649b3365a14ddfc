"""The columnar path: Arrow tables in, Arrow tables out, built natively (the layout is
documented in `imagetask.columnar`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from imagetask import _core
from imagetask._extras import require
from imagetask.build._artifacts import ArtifactTarget
from imagetask.build._batch import Batch, Failure, ModelCall
from imagetask.build._converter import RowConverter, image_bytes, json_cell
from imagetask.build._schema import OutputSchema, image_structs
from imagetask.errors import ConfigError
from imagetask.outcome import Row

if TYPE_CHECKING:
    import pyarrow as pa

    from imagetask.models import ImageModel

__all__ = ["MAX_STRING_BYTES", "ArrowBatch", "ArrowOutput", "as_table", "dict_rows"]

MAX_STRING_BYTES = 2**31 - 1
"""The most bytes of text an Arrow string or binary array (32-bit offsets) holds."""


@dataclass(frozen=True)
class ArrowOutput:
    """The output table of a batch and the generations in it that failed."""

    table: pa.Table
    failures: list[Failure]


class WritesRows(Protocol):
    """What `dict_rows` needs of a task (`ImageTask` is one)."""

    @property
    def output_schema(self) -> OutputSchema: ...

    @property
    def images_as_bytes(self) -> bool: ...


def arrow() -> Any:
    """The pyarrow module, or `MissingExtraError` naming the `arrow` extra."""
    return require("pyarrow", "arrow", "the Arrow path (process_arrow)")


def _compute() -> Any:
    return require("pyarrow.compute", "arrow", "the Arrow path (process_arrow)")


def as_table(data: Any) -> pa.Table:
    """A pyarrow Table of any object exporting the Arrow PyCapsule interface (or of a
    Hugging Face Dataset); its column names must be distinct."""
    pa = arrow()
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif hasattr(data, "__arrow_c_stream__"):
        table = pa.table(data)
    elif hasattr(data, "__arrow_c_array__"):
        table = pa.Table.from_batches([pa.record_batch(data)])
    elif type(data).__module__ == "datasets.arrow_dataset" and hasattr(data, "with_format"):
        # A Hugging Face Dataset (not an IterableDataset, which holds no table): its
        # selected rows (its table may hold more).
        table = data.with_format("arrow")[:]
    else:
        raise TypeError(
            f"process_arrow takes an object exporting the Arrow PyCapsule interface "
            f"(__arrow_c_stream__ or __arrow_c_array__) or a Hugging Face Dataset, got a "
            f"{type(data).__name__}"
        )
    names = table.column_names
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"the table has several columns named {', '.join(map(repr, twice))}")
    return table


class ArrowBatch(ModelCall):
    """One Arrow batch on its way through a task: prompts read from the prompt column,
    the model called once, the output columns built natively (see the module).

    `native` builds the columns from `prompt_column`; or else `slow`, the batch of the
    table's rows as dicts, builds dict rows that are converted. `artifacts`: where the
    native builder writes the images (`None`: nowhere).
    """

    def __init__(
        self,
        data: Any,
        *,
        model: ImageModel,
        n: int,
        schema: OutputSchema,
        prompt_column: str,
        native: _core.ColumnBuilder | None,
        slow: Batch | None,
        artifacts: ArtifactTarget | None,
    ) -> None:
        self.table = as_table(data)
        self._native = native
        self._slow = slow
        self._artifacts = artifacts
        self._prompt_column = prompt = prompt_column
        if slow is not None:
            super().__init__(model, n, schema, slow.prompts, slow.size)
            text = sum(
                len(p.encode("utf-8", "replace")) for p in slow.prompts if isinstance(p, str)
            )
        else:
            assert native is not None
            self._prepared = native.prepare(self.table.column(prompt))
            super().__init__(model, n, schema, self._prepared.prompts, self.table.num_rows)
            text = _text_bytes(self.table.column(prompt))
        if schema.add_raw_input:
            _check_fits(f"the raw inputs (the prompts of {prompt!r})", text, n)
        _check_repeatable(schema, n, self.table)

    def generate(self) -> None:
        """Asks the model for the images (the dict batch asks, when it builds the rows:
        an editing batch sends its edits)."""
        if self._slow is None:
            super().generate()
            return
        self._slow.position = self.position
        self._slow.generate()
        self.answers = self._slow.answers

    async def agenerate(self) -> None:
        """`generate` on the running event loop."""
        if self._slow is None:
            await super().agenerate()
            return
        self._slow.position = self.position
        await self._slow.agenerate()
        self.answers = self._slow.answers

    def finish(self) -> ArrowOutput:
        """Builds the output table from the model's answers and logs the failures."""
        pa = arrow()
        if self._slow is not None:
            self._slow.answers = self.answers
            self._slow.names = self.names
            output = self._slow.finish()
            cells, rows, offsets = _cells_of(self.schema, self.n, output.rows, self.table.num_rows)
            failures = output.failures
        else:
            assert self._native is not None
            target = self._artifacts
            built, index, groups, failed = self._native.build(
                self._prepared,
                self.answers,
                None if target is None else target.folder,
                None if target is None else target.prefix,
            )
            cells = pa.record_batch(built)
            rows = pa.array(index)
            offsets = None if groups is None else pa.array(groups)
            raw_input = _take(self.table.column(self._prompt_column), rows).cast(pa.string())
            cells = cells.append_column("raw_input", raw_input.combine_chunks())
            failures = [Failure(*failure) for failure in failed]
            self.log(failures)
        table = _assemble(self.schema, self.n, self.table, cells, rows, offsets)
        return ArrowOutput(table, failures)


def _repeated(names: OutputSchema, n: int, table: pa.Table) -> list[str]:
    """The input columns `_assemble` takes rows of: the metadata struct, and every column
    it keeps when each row is repeated (`n > 1` generations, not grouped)."""
    pa = arrow()
    repeat = not names.grouped and n > 1
    kept = [name for name in table.column_names if name not in names.written] if repeat else []
    metadata = table.schema.field(names.metadata) if names.metadata in table.column_names else None
    struct = metadata is not None and pa.types.is_struct(metadata.type)
    return [*kept, names.metadata] if struct else kept


def _text_bytes(column: pa.ChunkedArray) -> int:
    """The bytes of text (or binary) in a string or binary column."""
    pc = _compute()
    total = pc.sum(pc.binary_length(_as_takeable(column))).as_py()
    return 0 if total is None else int(total)


def _check_repeatable(schema: OutputSchema, n: int, table: pa.Table) -> None:
    """Raises, before the model is called, when `_assemble` could not repeat a column:
    `TypeError` naming a column of a type pyarrow cannot take rows of, or whose run ends
    cannot count the repeated rows; `ConfigError` naming a string or binary column whose
    bytes, once per generation, would not fit one Arrow array."""
    pa = arrow()
    none = pa.array([], pa.uint32())
    for name in _repeated(schema, n, table):
        column = table.column(name)
        kind = column.type
        try:
            _take(column.slice(0, 0), none)
        except pa.ArrowNotImplementedError:
            raise TypeError(
                f"process_arrow cannot repeat the column {name!r}: pyarrow cannot take rows "
                f"of its type {kind}"
            ) from None
        if pa.types.is_run_end_encoded(kind):
            most = 2 ** (kind.run_end_type.bit_width - 1) - 1
            if table.num_rows * n > most:
                raise TypeError(
                    f"process_arrow cannot repeat the column {name!r}: its run ends "
                    f"({kind.run_end_type}) count at most {most:,} rows, not "
                    f"{table.num_rows:,} x {n}"
                )
        if pa.types.is_string(kind) or pa.types.is_binary(kind):
            _check_fits(f"the column {name!r}", _text_bytes(column), n)


def _check_fits(what: str, size: int, n: int) -> None:
    """Raises `ConfigError` when `size` bytes of text, `n` times over, pass what one
    Arrow string or binary array holds."""
    if size * n > MAX_STRING_BYTES:
        raise ConfigError(
            f"process_arrow: {what} repeated for num_generations={n} make {size * n:,} bytes "
            f"in one batch, more than the {MAX_STRING_BYTES:,} an Arrow string column "
            "holds: use a smaller input_batch_size"
        )


def _takeable(kind: pa.DataType) -> pa.DataType:
    """`kind` with string and binary views (as Polars writes them), at any depth, made
    large strings and binary, which pyarrow can take from. List views stay: pyarrow takes
    them by their offsets and sizes, whatever their values."""
    pa = arrow()
    if pa.types.is_string_view(kind):
        return pa.large_string()
    if pa.types.is_binary_view(kind):
        return pa.large_binary()
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_takeable(field.type)) for field in kind])
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        field = kind.value_field.with_type(_takeable(kind.value_type))
        return pa.list_(field) if pa.types.is_list(kind) else pa.large_list(field)
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_takeable(kind.value_type)), kind.list_size)
    if pa.types.is_map(kind):
        key = kind.key_field.with_type(_takeable(kind.key_type))
        return pa.map_(key, kind.item_field.with_type(_takeable(kind.item_type)))
    return kind


def _take(column: pa.ChunkedArray, rows: pa.Array) -> pa.ChunkedArray:
    """`column.take(rows)`, views made takeable first (see `_takeable`) and a run-end
    encoded column decoded, taken and encoded again with its run-end type."""
    pa = arrow()
    if pa.types.is_run_end_encoded(column.type):
        pc = _compute()
        taken = _take(pc.run_end_decode(column), rows)
        return pc.run_end_encode(taken, run_end_type=column.type.run_end_type)
    return _as_takeable(column).take(rows)


def _as_takeable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """`column` cast to `_takeable` of its type (itself when that is its type)."""
    kind = _takeable(column.type)
    return column if kind == column.type else column.cast(kind)


def _repeat(rows: int, n: int) -> pa.Array:
    pa = arrow()
    return pa.array([row for row in range(rows) for _ in range(n)], pa.uint32())


def _cells_of(
    names: OutputSchema, n: int, rows: list[Row], inputs: int
) -> tuple[pa.RecordBatch, pa.Array, Any]:
    """The cells (one per input row and generation) of the dict rows `process_batch`
    built for `inputs` input rows, `n` generations each."""
    pa = arrow()
    columns: dict[str, list[Any]] = {name: [] for name in names.outputs}
    raw_output: list[str | None] = []
    raw_input: list[Any] = []
    statistics: list[str | None] = []
    error: list[Any] = []
    model_name: list[Any] = []
    for row in rows:
        metas = row[names.metadata] if names.grouped else [row[names.metadata]]
        for k, meta in enumerate(metas):
            for name in names.outputs:
                value = row[names.columns[name]]
                columns[name].append(value[k] if names.grouped else value)
            raw_output.append(json_cell(meta.get(names.raw_output)))
            raw_input.append(meta.get(names.raw_input))
            statistics.append(json_cell(meta.get(names.statistics)))
            error.append(meta.get(names.error))
            model_name.append(row[names.model_name])
    arrays: dict[str, Any] = {}
    for name, values in columns.items():
        if name == names.image_output:
            arrays[name] = pa.array([image_bytes(value) for value in values], pa.binary())
        elif name == "image_path":
            arrays[name] = pa.array(values, pa.string())
        else:
            arrays[name] = pa.array(values)
    if names.add_raw_output:
        arrays["raw_output"] = pa.array(raw_output, pa.string())
    arrays["statistics"] = pa.array(statistics, pa.string())
    arrays["error"] = pa.array(error, pa.string())
    arrays["model_name"] = pa.array(model_name, pa.string())
    arrays["raw_input"] = pa.array(raw_input, pa.string())
    cells = pa.record_batch(list(arrays.values()), names=list(arrays))
    offsets = pa.array(range(0, (inputs + 1) * n, n), pa.int32())
    return cells, _repeat(inputs, n), offsets if names.grouped else None


def _assemble(
    names: OutputSchema,
    n: int,
    table: pa.Table,
    cells: pa.RecordBatch,
    rows: pa.Array,
    offsets: Any,
) -> pa.Table:
    """The output table: input columns, output columns, `model_name`, metadata."""
    pa = arrow()
    grouped = offsets is not None
    repeated = set(_repeated(names, n, table))
    columns: dict[str, Any] = {}
    for name in table.column_names:
        if name not in names.written:
            column = table.column(name)
            columns[name] = _take(column, rows) if name in repeated else column

    def per_row(values: Any) -> Any:
        return pa.ListArray.from_arrays(offsets, values) if grouped else values

    for name in names.outputs:
        columns[names.columns[name]] = per_row(cells.column(name))
    if names.image is not None:
        paths = cells.column("image_path") if names.image_path is not None else None
        columns[names.image] = per_row(image_structs(cells.column(names.image_output), paths))
    model_name = cells.column("model_name")
    if grouped:
        model_name = model_name.take(offsets[:-1]) if len(model_name) else model_name
    columns[names.model_name] = model_name
    ours = {
        names.raw_output: cells.column("raw_output") if names.add_raw_output else None,
        names.raw_input: cells.column("raw_input") if names.add_raw_input else None,
        names.statistics: cells.column("statistics"),
        names.error: cells.column("error"),
    }
    fields: dict[str, Any] = {}
    if names.metadata in repeated:
        upstream = _take(table.column(names.metadata), rows).combine_chunks()
        for field, values in zip(upstream.type, upstream.flatten(), strict=True):
            if ours.get(field.name) is None:
                fields[field.name] = values
    fields.update((key, value) for key, value in ours.items() if value is not None)
    metadata = pa.StructArray.from_arrays(list(fields.values()), names=list(fields))
    columns[names.metadata] = per_row(metadata)
    return names.with_features(pa.Table.from_arrays(list(columns.values()), names=list(columns)))


def dict_rows(task: WritesRows, table: pa.Table) -> list[Row]:
    """The dict rows `process_batch` gives, from the table `process_arrow` gives for the
    same rows and answers (the mapping in the module's docstring)."""
    return RowConverter(task.output_schema, images_as_bytes=task.images_as_bytes).rows(table)
