"""`ImageTask`: formats input rows into prompts, calls an image model, builds output rows."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

import msgspec

from imagetask._core import MAX_GENERATIONS, ColumnBuilder, RowBuilder
from imagetask.build._artifacts import ArtifactTarget
from imagetask.build._batch import Batch
from imagetask.build._columnar import (
    ArrowBatch,
    BuilderCache,
    InputFacts,
    check_distinct,
    table_of,
)
from imagetask.build._schema import OutputSchema
from imagetask.config import Configurable, RuntimeParameter
from imagetask.errors import ConfigError
from imagetask.models import ImageModel
from imagetask.outcome import Failure, Row
from imagetask.run import _runner as runner

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ImageTask", "native_hook"]

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_COLUMN_BUILDER = "_column_builder_cache"
"""Where a task keeps its `ColumnBuilder` and the configuration it was made for."""
_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def native_hook(method: F) -> F:
    """Marks a hook that the extension implements natively; overrides are called instead."""
    method.__imagetask_native__ = True  # type: ignore[attr-defined]
    return method


class ImageTask(Configurable, ABC):
    """A task that generates images for input rows with an image generation model.

    Subclasses declare `inputs` and `outputs` and implement `format_input`,
    `format_output` and `process`; `process_batch` does the work of a batch.

    Parameters
    ----------
    image_generation_model:
        The backend: any object with `model_name`, `load()`, `unload()` and
        `generate(inputs, num_generations, **kwargs)`.
    name:
        The task's name, used in metadata keys; defaults to the class name in snake case
        with `_0` appended (`image_generation_0`).
    input_batch_size:
        Rows per batch when the task runs over a dataset.
    num_generations:
        Images generated per input row.
    group_generations:
        One row per input whose output columns are lists of `num_generations` values,
        instead of one row per generation.
    add_raw_output, add_raw_input:
        Record the model's answer and the prompt in the metadata column.
    input_mappings:
        Task input name -> dataset column it is read from (the row keeps its names).
    output_mappings:
        Output column -> the name it gets in the output row.
    metadata_column:
        The column holding the metadata dict.
    images_as_bytes:
        Put raw image bytes in the image column instead of base64 text.
    inline_raw_images:
        Keep the image payload itself in the raw output instead of its
        `sha256:<hex>` reference (rows then match distilabel byte for byte).
    on_invalid_row:
        `"raise"`: a row that is not a mapping or lacks an input column raises
        `InputRowError` before the model is called; `"fail"`: it becomes a failure row.
    """

    image_generation_model: ImageModel
    name: str = ""
    input_batch_size: RuntimeParameter[PositiveInt] = 50
    num_generations: RuntimeParameter[Annotated[int, msgspec.Meta(ge=1, le=MAX_GENERATIONS)]] = 1
    group_generations: bool = False
    add_raw_output: RuntimeParameter[bool] = True
    add_raw_input: RuntimeParameter[bool] = True
    input_mappings: dict[str, str] = msgspec.field(default_factory=dict)
    output_mappings: dict[str, str] = msgspec.field(default_factory=dict)
    metadata_column: str = "distilabel_metadata"
    images_as_bytes: bool = False
    inline_raw_images: bool = False
    on_invalid_row: Literal["raise", "fail"] = "raise"

    image_output: ClassVar[str] = "image"
    """The output that holds the image (`OutputSchema.image` is its column)."""

    def __init__(self, **fields: Any) -> None:
        if "llm" in fields:
            raise ConfigError(
                f"{type(self).__name__} does not take `llm`: pass the image model as "
                "`image_generation_model`"
            )
        super().__init__(**fields)

    def __post_init__(self) -> None:
        super().__post_init__()
        cls = type(self).__name__
        if not self.name:
            self.name = _SNAKE.sub("_", cls).lower() + "_0"
        if not _NAME.fullmatch(self.name):
            shown = repr(self.name) if len(self.name) <= 120 else f"{self.name[:100]!r}..."
            raise ConfigError(
                f"{cls}: bad field `name` = {shown}: must be 1 to 100 characters among "
                "A-Z a-z 0-9 _ - (it names metadata keys and the artifacts folder)"
            )
        self._check_model()
        for field, names in (("input_mappings", self.inputs), ("output_mappings", self.outputs)):
            for key in getattr(self, field):
                if key not in names:
                    raise ConfigError(
                        f"{cls}: bad field `{field}`: {key!r} is not one of the task's "
                        f"{field.split('_')[0]}s {names}"
                    )
        self._check_output_names()

    def _check_model(self) -> None:
        """Raises `ConfigError` when `image_generation_model` cannot serve this task."""
        model = self.image_generation_model
        if not (callable(getattr(model, "generate", None)) and hasattr(model, "model_name")):
            raise ConfigError(
                f"{type(self).__name__}: bad field `image_generation_model` = "
                f"{type(model).__name__}: expected an image generation model (an object "
                "with model_name, load, unload and generate)"
            )

    def _check_output_names(self) -> None:
        """Every output column, the metadata column and the input columns have distinct
        names: two of them sharing a name would silently drop one's values."""
        mapped_in, schema = self.input_mappings, self.output_schema
        owners: dict[str, str] = {}
        named = [(f"input `{name}`", mapped_in.get(name, name)) for name in self.inputs]
        named += [(f"output `{name}`", column) for name, column in schema.columns.items()]
        named.append(("`metadata_column`", schema.metadata))
        for owner, column in named:
            if column in owners:
                raise ConfigError(
                    f"{type(self).__name__}: {owner} and {owners[column]} are both named "
                    f"{column!r}: give them distinct names (output_mappings, metadata_column)"
                )
            owners[column] = owner

    @property
    def llm(self) -> ImageModel:
        """The image model (kept for distilabel's `_Task` interface)."""
        return self.image_generation_model

    @property
    @abstractmethod
    def inputs(self) -> list[str]:
        """The columns a row must have."""

    @property
    @abstractmethod
    def outputs(self) -> list[str]:
        """The columns the task adds to a row."""

    @abstractmethod
    def format_input(self, input: Row) -> str:
        """The prompt for one input row."""

    @abstractmethod
    def format_output(self, output: dict[str, Any], input: Row | None = None) -> Row:
        """The output columns of one generation, from its part of the model's answer
        (`{"images": [image], ...}`); keys not in `outputs` are ignored."""

    @abstractmethod
    def process(self, inputs: list[Row]) -> Generator[list[Row], None, None]:
        """Yields the output rows of a batch of input rows."""

    # `task.run(rows, output_dir, ...)`: the whole dataset into `output_dir`
    # (`data.jsonl`/`data.parquet`, artifacts, checkpoint, `run.json`); see `runner.run`.
    run = runner.run

    def load(self) -> None:
        """Loads the model."""
        self.image_generation_model.load()

    def unload(self) -> None:
        """Unloads the model."""
        self.image_generation_model.unload()

    @property
    def output_columns(self) -> list[str]:
        """The output columns written on every row, besides `model_name`."""
        return [column for column in self.outputs if column != "model_name"]

    @property
    def image_inputs(self) -> list[str]:
        """The input columns that hold images (`ImageEditing`'s sources and mask)."""
        return []

    @property
    def built_outputs(self) -> list[str]:
        """The outputs the row builder writes: `output_schema.outputs`, unless
        `complete_rows` turns some of them into others."""
        return list(self.output_schema.outputs)

    @property
    def builds_images_as_received(self) -> bool:
        """Whether the row builder puts each image in the image column as the model gave
        it (base64 text or bytes, neither decoded nor encoded) rather than as
        `images_as_bytes` says: for images that `complete_rows` writes as files and drops."""
        return False

    @property
    def takes_stored_images(self) -> bool:
        """Whether a run may give the rows of this configuration `StoredImage` handles
        (images on disk, see `imagetask.run._spool`) in place of images until its sink
        writes them: only when the extension builds and completes its rows itself."""
        return False

    @property
    def output_schema(self) -> OutputSchema:
        """The names and types of what this configuration writes (see `imagetask.build._schema`)."""
        return OutputSchema.of(self)

    def _hook(self, name: str) -> Callable[..., Any] | None:
        method = getattr(type(self), name)
        return None if getattr(method, "__imagetask_native__", False) else getattr(self, name)

    def _builder(self) -> RowBuilder:
        """The native row builder of this configuration. Its own `format_output` puts
        the image in the output it knows as `image`: the task's image output is named so
        unless the task's `format_output` is overridden (it returns the task's names)."""
        mapped_in = self.input_mappings
        schema = self.output_schema
        native = self._hook("format_output") is None

        def known_as(name: str) -> str:
            return "image" if native and name == schema.image_output else name

        return RowBuilder(
            model_name=self.image_generation_model.model_name,
            inputs=[(name, mapped_in.get(name, name)) for name in self.inputs],
            outputs=[(known_as(name), schema.columns[name]) for name in self.built_outputs],
            num_generations=self.num_generations,
            group_generations=self.group_generations,
            add_raw_output=self.add_raw_output,
            add_raw_input=self.add_raw_input,
            image_bytes=self.images_as_bytes,
            inline_raw_images=self.inline_raw_images,
            pass_invalid_rows=self.on_invalid_row == "fail",
            model_name_column=schema.model_name,
            metadata_column=schema.metadata,
            raw_output_key=schema.raw_output,
            raw_input_key=schema.raw_input,
            statistics_key=schema.statistics,
            error_key=schema.error,
            images_as_received=self.builds_images_as_received,
        )

    def prepare(self, inputs: Iterable[Row]) -> Batch:
        """Checks a batch of input rows and formats their prompts (see `imagetask.build._batch`).

        Raises `InputRowError` naming the first row that is not a mapping or lacks an
        input column, unless `on_invalid_row="fail"`.
        """
        return Batch(
            list(inputs),
            model=self.image_generation_model,
            n=self.num_generations,
            schema=self.output_schema,
            builder=self._builder(),
            format_input=self._hook("format_input"),
            format_output=self._hook("format_output"),
            complete_rows=self.complete_rows,
        )

    def prepare_arrow(self, data: Any) -> ArrowBatch:
        """`prepare` for Arrow data (see `imagetask.columnar`): reads the prompt column
        natively when the task's hooks are its own, else materialises the rows as dicts."""
        table = table_of(data)
        schema = self.output_schema
        cache = self._column_cache(schema)
        prompt = None if cache.builder is None else cache.key[1]
        facts: InputFacts = cache.facts.get(
            table.schema,
            lambda kind: InputFacts.of(kind, prompt, schema, self.num_generations),
        )
        check_distinct(facts.named_twice)
        native = cache.builder if facts.native else None
        return ArrowBatch(
            table,
            model=self.image_generation_model,
            n=self.num_generations,
            schema=schema,
            prompt_column=self.input_mappings.get("prompt", "prompt"),
            native=native,
            slow=None if native is not None else self.prepare(table.to_pylist()),
            artifacts=None if native is None else self.artifact_target(),
            facts=facts,
        )

    def process_arrow(self, data: Any) -> pa.Table:
        """`process_batch` for Arrow data: any object exporting the Arrow PyCapsule
        interface in, a `pyarrow.Table` out (the layout is in `imagetask.columnar`)."""
        batch = self.prepare_arrow(data)
        batch.generate()
        return batch.finish().table

    @property
    def builds_columns_natively(self) -> bool:
        """Whether the extension builds this task's output columns itself when its
        hooks are its own (`ImageGeneration`); otherwise `format_output` builds them."""
        return False

    def artifact_target(self) -> ArtifactTarget | None:
        """Where the task writes its image files, when it writes them (the folder made)."""
        return None

    def _column_cache(self, schema: OutputSchema) -> BuilderCache:
        """The cache of this configuration's native builder (made when the task's hooks
        are its own) and of the facts of the input schemas it meets."""
        first = self.inputs[0]
        prompt = self.input_mappings.get(first, first)
        key = (
            schema,
            prompt,
            self.image_generation_model.model_name,
            self.num_generations,
            self.inline_raw_images,
            self.on_invalid_row,
        )
        cache = self.__dict__.get(_COLUMN_BUILDER)
        if cache is None:
            cache = self.__dict__[_COLUMN_BUILDER] = BuilderCache()
        if cache.key != key:  # an equal schema's builder is this one's
            cache.renew(key, self._new_column_builder(schema, prompt))
        return cache

    def _new_column_builder(self, schema: OutputSchema, prompt: str) -> ColumnBuilder | None:
        hooks = ("format_input", "format_output", "complete_rows")
        if not self.builds_columns_natively or any(self._hook(hook) for hook in hooks):
            return None
        return ColumnBuilder(
            schema=schema,
            prompt_column=prompt,
            model_name=self.image_generation_model.model_name,
            num_generations=self.num_generations,
            inline_raw_images=self.inline_raw_images,
            pass_invalid_rows=self.on_invalid_row == "fail",
        )

    @native_hook
    def complete_rows(self, rows: list[Row]) -> list[Failure]:
        """Work on a batch's built rows before they are returned (`ImageGeneration`
        writes its artifacts); returns the generations it failed."""
        return []

    def process_batch(self, inputs: Iterable[Row]) -> list[Row]:
        """Formats, generates and builds the output rows of one batch.

        Returns `len(inputs) * num_generations` rows (`len(inputs)` when grouped): a row
        whose generation failed holds `None` in its output columns and the error under
        `error_<name>` in its metadata.
        """
        batch = self.prepare(inputs)
        batch.generate()
        return batch.finish().rows

    async def agenerate(self, inputs: Iterable[Row]) -> list[Row]:
        """`process_batch` for callers that are already async: the model's requests run
        on the caller's event loop (a synchronous model runs in a worker thread)."""
        batch = self.prepare(inputs)
        await batch.agenerate()
        return batch.finish().rows

    async def aunload(self) -> None:
        """Unloads the model, first closing the clients it made on the running loop."""
        aclose = getattr(self.image_generation_model, "aclose", None)
        if callable(aclose):
            await aclose()
        self.unload()
