"""The columnar path: Arrow tables in, Arrow tables out, built natively (the layout is
documented in `imagetask.columnar`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from imagetask import _core
from imagetask._extras import require
from imagetask.build._artifacts import ArtifactTarget
from imagetask.build._batch import Batch, Failure, ModelCall
from imagetask.build._converter import RowConverter
from imagetask.build._schema import OutputSchema, SchemaMemo
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
    table = table_of(data)
    check_distinct(_named_twice(table.schema))
    return table


def table_of(data: Any) -> pa.Table:
    """`as_table` without the check of its column names."""
    pa = arrow()
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    if hasattr(data, "__arrow_c_array__"):
        return pa.Table.from_batches([pa.record_batch(data)])
    if type(data).__module__ == "datasets.arrow_dataset" and hasattr(data, "with_format"):
        # A Hugging Face Dataset (not an IterableDataset, which holds no table): its
        # selected rows (its table may hold more).
        return data.with_format("arrow")[:]
    raise TypeError(
        f"process_arrow takes an object exporting the Arrow PyCapsule interface "
        f"(__arrow_c_stream__ or __arrow_c_array__) or a Hugging Face Dataset, got a "
        f"{type(data).__name__}"
    )


def check_distinct(named_twice: list[str]) -> None:
    """Raises `ValueError` naming the column names that several columns hold."""
    if named_twice:
        shown = ", ".join(map(repr, named_twice))
        raise ValueError(f"the table has several columns named {shown}")


def _named_twice(schema: pa.Schema) -> list[str]:
    names = schema.names
    return sorted({name for name in names if names.count(name) > 1})


@dataclass
class InputFacts:
    """What the columnar path needs to know of an input schema, found once for the
    batches of one schema in a row.

    Attributes
    ----------
    named_twice:
        The column names that several columns hold (such a table is refused).
    native:
        Whether the native builder reads tables of this schema (`reads_natively`).
    nul_names:
        Whether a field name, at any depth, holds a NUL (the Arrow C interface cuts it).
    run_ends:
        The repeated run-end encoded columns (see `_repeated`), each with the most rows
        its run ends count.
    nested_runs:
        The repeated columns holding run-end encoded values below their top level (in a
        struct, a list, a map, a union or a run-end encoded column's values): repeated
        once before the model is called, as the only exact check.
    texts:
        The repeated string and binary columns.
    output_metadata:
        The `huggingface` schema metadata of the output, once the first batch made it.
    """

    named_twice: list[str]
    native: bool
    nul_names: bool
    run_ends: dict[str, int]
    nested_runs: list[str]
    texts: list[str]
    output_metadata: dict[str, str] | None = None

    @classmethod
    def of(cls, schema: pa.Schema, prompt: str | None, output: OutputSchema, n: int) -> InputFacts:
        """The facts of `schema` for a task writing `output` with `n` generations;
        `prompt`: the prompt column the native builder reads (`None`: there is no native
        builder)."""
        pa = arrow()
        twice = _named_twice(schema)
        native = (
            not twice and prompt is not None and reads_natively(schema, prompt, output.metadata)
        )
        # A table naming two columns alike is refused (`check_distinct`) before any use.
        names = [] if twice else _repeated(output, n, schema)
        repeated = [schema.field(name) for name in names]
        run_ends = {
            field.name: 2 ** (field.type.run_end_type.bit_width - 1) - 1
            for field in repeated
            if pa.types.is_run_end_encoded(field.type)
        }
        nested_runs = [
            field.name
            for field in repeated
            if any(_holds_runs(field.type.field(i).type) for i in range(field.type.num_fields))
        ]
        texts = [
            field.name
            for field in repeated
            if pa.types.is_string(field.type) or pa.types.is_binary(field.type)
        ]
        nul_names = any(_nul_in(field) for field in schema)
        return cls(twice, native, nul_names, run_ends, nested_runs, texts)


class BuilderCache:
    """A task's last `ColumnBuilder` (`None`: the task builds its columns in Python), the
    configuration it was made for, and the `InputFacts` of the last input schema seen.
    It pickles (and copies) empty: a builder is cheap to make again and holds nothing
    else."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] = ()
        self.builder: _core.ColumnBuilder | None = None
        self.facts = SchemaMemo()

    def renew(self, key: tuple[Any, ...], builder: _core.ColumnBuilder | None) -> None:
        """Keeps `builder`, made for the configuration `key`."""
        self.key, self.builder, self.facts = key, builder, SchemaMemo()

    def __reduce__(self) -> tuple[type[BuilderCache], tuple[()]]:
        return (BuilderCache, ())


def reads_natively(schema: pa.Schema, prompt: str, metadata: str) -> bool:
    """Whether the native builder reads a table of `schema`: its `prompt` column holds
    strings, and its `metadata` column, if any, is a struct (or all null)."""
    types = arrow().types
    if prompt not in schema.names:
        return False
    kind = schema.field(prompt).type
    if not (types.is_string(kind) or types.is_large_string(kind) or types.is_string_view(kind)):
        return False
    if metadata in schema.names:
        kind = schema.field(metadata).type
        return bool(types.is_struct(kind) or types.is_null(kind))
    return True


class ArrowBatch(ModelCall):
    """One Arrow batch (a table, as `as_table` makes it) on its way through a task:
    prompts read from the prompt column, the model called once, the output table
    assembled natively (see the module).

    `native` builds the cells from `prompt_column`; or else `slow`, the batch of the
    table's rows as dicts, builds dict rows whose cells are read back. `artifacts`: where
    the native builder writes the images (`None`: nowhere); `facts`: those of the
    table's schema. `spool`: where the images of `store` wait until the batch is written,
    as rows name them (set by a run that spools them): the table holds their paths, for
    the sink to read.
    """

    def __init__(
        self,
        table: pa.Table,
        *,
        model: ImageModel,
        n: int,
        schema: OutputSchema,
        prompt_column: str,
        native: _core.ColumnBuilder | None,
        slow: Batch | None,
        artifacts: ArtifactTarget | None,
        facts: InputFacts,
    ) -> None:
        self.table = table
        self._facts = facts
        self._native = native
        self._slow = slow
        self._artifacts = artifacts
        self.spool: ArtifactTarget | None = None
        if slow is not None:
            super().__init__(model, n, schema, slow.prompts, slow.size)
            text = sum(
                len(p.encode("utf-8", "replace")) for p in slow.prompts if isinstance(p, str)
            )
        else:
            assert native is not None
            self._prepared = native.prepare(self.table)
            super().__init__(model, n, schema, self._prepared.prompts, self.table.num_rows)
            text = self._prepared.prompt_bytes
        if schema.add_raw_input and text * n > MAX_STRING_BYTES:
            _check_fits(f"the raw inputs (the prompts of {prompt_column!r})", text, n)
        _check_repeatable(facts, n, self.table)

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
        if self._slow is not None:
            pa = arrow()
            self._slow.answers = self.answers
            self._slow.names = self.names
            output = self._slow.finish()
            built = _core.assemble_rows(
                schema=self.schema,
                num_generations=self.n,
                table=self.table,
                rows=output.rows,
                infer=_inferred,
            )
            # `pa.table` would ask pandas whether `built` is a DataFrame, importing it.
            table = pa.RecordBatchReader.from_stream(built).read_all()
            return ArrowOutput(self._described(table, None), output.failures)
        assert self._native is not None
        target = self._artifacts
        metadata = self._facts.output_metadata
        table, failed = self._native.build(
            self._prepared,
            self.answers,
            None if target is None else target.folder,
            None if target is None else target.prefix,
            metadata,
            None if self.spool is None else self.spool.folder,
            None if self.spool is None else self.spool.prefix,
        )
        failures = [Failure(*failure) for failure in failed]
        if failures:
            self.log(failures)
        if metadata is None or self._facts.nul_names:
            table = self._described(table, metadata)
        return ArrowOutput(table, failures)

    def _described(self, table: pa.Table, metadata: dict[str, str] | None) -> pa.Table:
        """`table` with the input's field names given back and, unless it has them
        (`metadata`), the `huggingface` schema metadata of its schema."""
        named = self._facts.nul_names
        if named:
            table = self._named(table)
        if metadata is None:
            metadata = self.schema.schema_metadata(table.schema)
            if self._native is not None:
                self._facts.output_metadata = metadata
        elif not named:
            return table
        return table.replace_schema_metadata(metadata)

    def _named(self, table: pa.Table) -> pa.Table:
        """`table` with the names of the input's fields given back. The Arrow C interface
        carries names as C strings, which end at a NUL: a name holding one comes back cut
        there."""
        pa = arrow()
        names = self.schema
        source = self.table.schema
        kept = [field for field in source if field.name not in names.written]
        fields = [*kept, *list(table.schema)[len(kept) :]]
        upstream = source.field(names.metadata) if names.metadata in source.names else None
        if upstream is not None and pa.types.is_struct(upstream.type):
            built = table.schema.field(names.metadata)
            struct = built.type.value_type if names.grouped else built.type
            own = set(names.metadata_keys)
            keys = [field for field in upstream.type if field.name not in own]
            kind = pa.struct([*keys, *list(struct)[len(keys) :]])
            fields[-1] = built.with_type(pa.list_(kind) if names.grouped else kind)
        columns = [
            _renamed(column.combine_chunks(), field.type)
            for column, field in zip(table.columns, fields, strict=True)
        ]
        return pa.Table.from_arrays(columns, names=[field.name for field in fields])


def _renamed(array: pa.Array, kind: pa.DataType) -> pa.Array:
    """`array` as `kind`, a type of the same layout whose fields are named otherwise.
    Structs and lists are rebuilt from their children (`Array.view` miscounts a null-typed
    child below a list); other types are viewed."""
    pa = arrow()
    if kind.num_fields == 0 or array.type == kind:
        return array
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(kind):
        children = [_renamed(array.field(i), kind.field(i).type) for i in range(kind.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(kind), mask=mask)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        values = _renamed(array.values, kind.value_type)
        return type(array).from_arrays(array.offsets, values, type=kind, mask=mask)
    return array.view(kind)


def _nul_in(field: pa.Field) -> bool:
    kind = field.type
    children = [kind.field(i) for i in range(kind.num_fields)]
    return "\x00" in field.name or any(_nul_in(child) for child in children)


def _repeated(names: OutputSchema, n: int, schema: pa.Schema) -> list[str]:
    """The input columns the output repeats: every column it keeps when each row is
    repeated (`n > 1` generations, not grouped), and the metadata struct."""
    pa = arrow()
    if n == 1:
        return []
    kept = [] if names.grouped else [name for name in schema.names if name not in names.written]
    metadata = schema.field(names.metadata) if names.metadata in schema.names else None
    struct = metadata is not None and pa.types.is_struct(metadata.type)
    return [*kept, names.metadata] if struct else kept


def _text_bytes(column: pa.ChunkedArray) -> int:
    """The bytes of text (or binary) in a string or binary column."""
    pc = _compute()
    total = pc.sum(pc.binary_length(column)).as_py()
    return 0 if total is None else int(total)


def _check_repeatable(facts: InputFacts, n: int, table: pa.Table) -> None:
    """Raises `ConfigError`, before the model is called, naming a column that could not
    be repeated: a run-end encoded column whose run ends (at its top level or below it)
    cannot count the repeated rows, or a string or binary column whose bytes, once per
    generation, would not fit one Arrow array."""
    for name, most in facts.run_ends.items():
        if table.num_rows * n > most:
            kind = table.schema.field(name).type
            raise ConfigError(
                f"process_arrow cannot repeat the column {name!r}: its run ends "
                f"({kind.run_end_type}) count at most {most:,} rows, not "
                f"{table.num_rows:,} x {n}"
            )
    if facts.nested_runs:
        _core.check_repeatable(table=table, columns=facts.nested_runs, num_generations=n)
    # The table's buffers bound its text: columns are counted only near the limit.
    if facts.texts and table.nbytes * n > MAX_STRING_BYTES:
        for name in facts.texts:
            _check_fits(f"the column {name!r}", _text_bytes(table.column(name)), n)


def _holds_runs(kind: pa.DataType) -> bool:
    """Whether `kind` is run-end encoded or holds such values at any depth."""
    if arrow().types.is_run_end_encoded(kind):
        return True
    return any(_holds_runs(kind.field(index).type) for index in range(kind.num_fields))


def _check_fits(what: str, size: int, n: int) -> None:
    """Raises `ConfigError` when `size` bytes of text, `n` times over, pass what one
    Arrow string or binary array holds."""
    if size * n > MAX_STRING_BYTES:
        raise ConfigError(
            f"process_arrow: {what} repeated for num_generations={n} make {size * n:,} bytes "
            f"in one batch, more than the {MAX_STRING_BYTES:,} an Arrow string column "
            "holds: use a smaller input_batch_size"
        )


def _inferred(values: list[Any]) -> pa.ChunkedArray:
    """The values of an output column a hook wrote, as pyarrow infers their type."""
    pa = arrow()
    return pa.chunked_array([pa.array(values)])


def dict_rows(task: WritesRows, table: pa.Table) -> list[Row]:
    """The dict rows `process_batch` gives, from the table `process_arrow` gives for the
    same rows and answers (the mapping in the module's docstring)."""
    return RowConverter(task.output_schema, images_as_bytes=task.images_as_bytes).rows(table)
