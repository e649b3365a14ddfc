"""`OutputSchema`: the names and types of what a task configuration writes.

One object per task configuration (`OutputSchema.of(task)`, cached on the task until a
field it depends on changes) holds every output column's name after `output_mappings`,
the metadata column and the task's own metadata keys, and builds their Arrow types and
Hugging Face features on demand (pyarrow is imported only then). The image column of
every Arrow output is the Hugging Face `Image` struct, `struct<bytes: binary, path:
string>` (a list of them when the generations are grouped).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from imagetask._extras import require

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "OutputSchema",
    "SchemaMemo",
    "features",
    "image_structs",
    "image_type",
    "is_image_struct",
    "with_image_types",
]


class Configured(Protocol):
    """What a schema is made from: a task's configuration (`ImageTask` is one)."""

    name: str
    output_mappings: dict[str, str]
    metadata_column: str
    group_generations: bool
    add_raw_output: bool
    add_raw_input: bool

    @property
    def outputs(self) -> list[str]: ...

    @property
    def output_columns(self) -> list[str]: ...

    @property
    def image_output(self) -> str: ...

    @property
    def image_inputs(self) -> list[str]: ...


_IMAGE_OUTPUTS = {"ImageEditing": "edited_image"}
"""The image output of the tasks whose image output is not `image`, by class name."""

_DTYPES = {"double": "float64", "float": "float32", "halffloat": "float16"}
_CACHE = "_output_schema"


def _arrow() -> Any:
    return require("pyarrow", "arrow", "Arrow output")


def image_type() -> pa.DataType:
    """The Arrow storage of the Hugging Face `Image` feature: `struct<bytes, path>`."""
    pa = _arrow()
    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def image_structs(values: pa.Array, paths: pa.Array | None) -> pa.Array:
    """`values` (image bytes, or lists of them) as `Image` structs whose `path` is the
    matching item of `paths` (artifact paths, or lists of them; `None`: no path). An array
    already of another type (the structs themselves) is returned as it is."""
    pa = _arrow()
    kind = values.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        flat = values.flatten()
        flat_paths = paths.flatten() if paths is not None else None
        if flat_paths is not None and len(flat_paths) != len(flat):
            flat_paths = None
        offsets = pa.compute.subtract(values.offsets, values.offsets[0])
        return type(values).from_arrays(
            offsets, image_structs(flat, flat_paths), mask=values.is_null()
        )
    if pa.types.is_null(kind):
        return pa.nulls(len(values), image_type())
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        return values
    if paths is None or not pa.types.is_string(paths.type):
        paths = pa.nulls(len(values), pa.string())
    return pa.StructArray.from_arrays(
        [values.cast(pa.binary()), paths], fields=list(image_type()), mask=values.is_null()
    )


def is_image_struct(kind: pa.DataType) -> bool:
    """Whether `kind` holds `Image` structs (or lists of them): `struct<bytes, path>`, a
    field of which may be null-typed (a column of rows read as dicts whose paths are all
    null)."""
    types = _arrow().types
    if types.is_list(kind) or types.is_large_list(kind):
        return is_image_struct(kind.value_type)
    if not types.is_struct(kind) or [field.name for field in kind] != ["bytes", "path"]:
        return False
    data, path = kind.field(0).type, kind.field(1).type
    binary = types.is_binary(data) or types.is_large_binary(data) or types.is_null(data)
    text = types.is_string(path) or types.is_large_string(path) or types.is_null(path)
    return bool(binary and text)


def with_image_types(table: pa.Table) -> pa.Table:
    """`table` with its columns of `Image` structs whose fields lost their types (null:
    no value had one) cast to the `Image` struct, or lists of it."""
    pa = _arrow()
    for index, column in enumerate(table.schema):
        if not is_image_struct(column.type):
            continue
        nested = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
        kind = pa.list_(image_type()) if nested else image_type()
        if column.type != kind:
            table = table.set_column(index, column.name, table.column(index).cast(kind))
    return table


class SchemaMemo:
    """A value made from a schema, kept for the next schema equal to it (comparing two
    pyarrow schemas costs far less than hashing one, and batches share their schema)."""

    def __init__(self) -> None:
        self._last: tuple[pa.Schema, Any] | None = None

    def get(self, schema: pa.Schema, make: Any) -> Any:
        """`make(schema)`, or what it gave for the last schema if `schema` equals it."""
        last = self._last
        if last is None or not last[0].equals(schema):
            last = self._last = (schema, make(schema))
        return last[1]


def _feature(kind: Any, image: bool) -> Any:
    types = _arrow().types
    if image and (types.is_struct(kind) or types.is_null(kind)):
        return {"_type": "Image"}
    if types.is_list(kind) or types.is_large_list(kind) or types.is_fixed_size_list(kind):
        name = "LargeList" if types.is_large_list(kind) else "List"
        return {"_type": name, "feature": _feature(kind.value_type, image)}
    if types.is_struct(kind):
        return {field.name: _feature(field.type, False) for field in kind}
    return {"dtype": _DTYPES.get(str(kind), str(kind)), "_type": "Value"}


def features(
    schema: pa.Schema, image_column: str | None, sources: Collection[str] = ()
) -> dict[str, Any]:
    """The `datasets` features (as `Features.to_dict()` gives them) of a table's schema,
    `image_column` (a struct, or lists of them) as `Image`, and the `sources` columns
    (an editing task's input images) too where they hold `Image` structs."""
    return {
        field.name: _feature(
            field.type,
            field.name == image_column or (field.name in sources and is_image_struct(field.type)),
        )
        for field in schema
    }


@dataclass(frozen=True)
class OutputSchema:
    """What one task configuration writes on an output row.

    Attributes
    ----------
    task_name:
        The task's name, which names its metadata keys.
    columns:
        Every output the task declares (`task.outputs`) -> its column after
        `output_mappings`.
    outputs:
        The outputs written on every row besides `model_name` (`task.output_columns`),
        by their task names.
    model_name, metadata:
        The `model_name` column and the metadata column.
    raw_output, raw_input, statistics, error:
        The task's own metadata keys (`raw_output_<name>`, ...).
    image_output:
        The task's name of its image output (`image`; `edited_image` for `ImageEditing`).
    image, image_path:
        The image column (the image output after `output_mappings`) and the
        artifact-path column, `None` when the task does not write them.
    image_inputs:
        The input columns of images (an editing task's sources and mask).
    grouped:
        Whether the output columns and the metadata hold lists, one item per generation.
    add_raw_output, add_raw_input:
        Whether the raw output and the raw input are recorded in the metadata.
    """

    task_name: str
    columns: Mapping[str, str]
    outputs: tuple[str, ...]
    model_name: str
    metadata: str
    raw_output: str
    raw_input: str
    statistics: str
    error: str
    image_output: str
    image: str | None
    image_path: str | None
    grouped: bool
    add_raw_output: bool
    add_raw_input: bool
    image_inputs: tuple[str, ...] = ()
    _features: SchemaMemo = field(default_factory=SchemaMemo, init=False, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        *,
        task_name: str,
        outputs: list[str],
        written: list[str],
        output_mappings: Mapping[str, str],
        metadata_column: str,
        group_generations: bool,
        add_raw_output: bool = True,
        add_raw_input: bool = True,
        image_output: str = "image",
        image_inputs: Collection[str] = (),
    ) -> OutputSchema:
        """The schema of a configuration: `outputs` the task's declared outputs,
        `written` those written on every row besides `model_name`, `image_output` the
        one that holds the image."""
        columns = {name: output_mappings.get(name, name) for name in outputs}
        return cls(
            task_name=task_name,
            columns=columns,
            outputs=tuple(written),
            model_name=output_mappings.get("model_name", "model_name"),
            metadata=metadata_column,
            raw_output=f"raw_output_{task_name}",
            raw_input=f"raw_input_{task_name}",
            statistics=f"statistics_{task_name}",
            error=f"error_{task_name}",
            image_output=image_output,
            image=columns[image_output] if image_output in written else None,
            image_path=columns["image_path"] if "image_path" in written else None,
            grouped=group_generations,
            add_raw_output=add_raw_output,
            add_raw_input=add_raw_input,
            image_inputs=tuple(image_inputs),
        )

    @classmethod
    def of(cls, task: Configured) -> OutputSchema:
        """The schema of `task`'s configuration, computed once and kept on the task until
        a field it depends on changes."""
        key = (
            task.name,
            tuple(task.outputs),
            tuple(task.output_columns),
            tuple(task.output_mappings.items()),
            task.metadata_column,
            task.group_generations,
            task.add_raw_output,
            task.add_raw_input,
            task.image_output,
            tuple(task.image_inputs),
        )
        cached = task.__dict__.get(_CACHE)
        if cached is not None and cached[0] == key:
            schema: OutputSchema = cached[1]
            return schema
        schema = cls.build(
            task_name=task.name,
            outputs=task.outputs,
            written=task.output_columns,
            output_mappings=task.output_mappings,
            metadata_column=task.metadata_column,
            group_generations=task.group_generations,
            add_raw_output=task.add_raw_output,
            add_raw_input=task.add_raw_input,
            image_output=task.image_output,
            image_inputs=task.image_inputs,
        )
        task.__dict__[_CACHE] = (key, schema)
        return schema

    @classmethod
    def of_dump(cls, dump: Mapping[str, Any]) -> OutputSchema:
        """The schema of an `ImageGeneration` or `ImageEditing` run recorded as `dump`
        (its `run.json` or checkpoint task), read without importing the task's class;
        missing fields take their defaults."""
        type_info = dump.get("type_info")
        kind = type_info.get("name") if isinstance(type_info, dict) else None
        image_output = _IMAGE_OUTPUTS.get(str(kind), "image")
        outputs = [image_output, "image_path", "model_name"]
        if not dump.get("save_artifacts"):
            written = [image_output]
        elif dump.get("inline_images", True) is False:
            written = ["image_path"]
        else:
            written = [image_output, "image_path"]
        mappings = dump.get("output_mappings")
        inputs = dump.get("input_mappings")
        inputs = inputs if isinstance(inputs, dict) else {}
        sources = ["image", "mask"] if dump.get("use_mask") else ["image"]
        return cls.build(
            task_name=str(dump.get("name", "")),
            outputs=outputs,
            written=written,
            output_mappings=mappings if isinstance(mappings, dict) else {},
            metadata_column=str(dump.get("metadata_column", "distilabel_metadata")),
            group_generations=bool(dump.get("group_generations", False)),
            add_raw_output=bool(dump.get("add_raw_output", True)),
            add_raw_input=bool(dump.get("add_raw_input", True)),
            image_output=image_output,
            image_inputs=[inputs.get(name, name) for name in sources]
            if kind in _IMAGE_OUTPUTS
            else (),
        )

    @property
    def output_columns(self) -> list[str]:
        """The columns of `outputs`, in order."""
        return [self.columns[name] for name in self.outputs]

    @property
    def written(self) -> frozenset[str]:
        """The columns the task writes on every row (an input column of such a name is
        replaced): its outputs, `model_name` and the metadata column."""
        return frozenset([*self.output_columns, self.model_name, self.metadata])

    @property
    def metadata_keys(self) -> tuple[str, ...]:
        """The task's own metadata keys, in the order the metadata struct holds them."""
        raw_output = (self.raw_output,) if self.add_raw_output else ()
        raw_input = (self.raw_input,) if self.add_raw_input else ()
        return (*raw_output, *raw_input, self.statistics, self.error)

    @property
    def own_keys(self) -> frozenset[str]:
        """Every metadata key named after the task, recorded or not."""
        return frozenset((self.raw_output, self.raw_input, self.statistics, self.error))

    def arrow_types(self) -> dict[str, pa.DataType]:
        """The Arrow type of every column whose type the task decides, whatever its
        values: the image (`Image` struct), `image_path` and `model_name` (strings) and
        the metadata's own keys (a struct of strings, upstream fields not counted); lists
        when grouped, but `model_name`."""
        arrow = _arrow()

        def per_row(kind: pa.DataType) -> pa.DataType:
            return arrow.list_(kind) if self.grouped else kind

        types: dict[str, pa.DataType] = {}
        if self.image is not None:
            types[self.image] = per_row(image_type())
        if self.image_path is not None:
            types[self.image_path] = per_row(arrow.string())
        types[self.model_name] = arrow.string()
        types[self.metadata] = per_row(
            arrow.struct([(key, arrow.string()) for key in self.metadata_keys])
        )
        return types

    def features(self, schema: pa.Schema) -> dict[str, Any]:
        """The `datasets` features of an output table's schema (the image as `Image`)."""
        return features(schema, self.image, self.image_inputs)

    def with_features(self, table: pa.Table) -> pa.Table:
        """`table` with the `huggingface` schema metadata naming its features, which
        `datasets` reads (from Parquet too) to load the image column as `Image()`."""
        return table.replace_schema_metadata(self.schema_metadata(table.schema))

    def schema_metadata(self, schema: pa.Schema) -> dict[str, str]:
        """The `huggingface` schema metadata of an output table's schema; made once for
        the tables of one schema in a row."""

        def make(schema: pa.Schema) -> dict[str, str]:
            return {"huggingface": json.dumps({"info": {"features": self.features(schema)}})}

        metadata: dict[str, str] = self._features.get(schema, make)
        return metadata
