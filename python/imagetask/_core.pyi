"""Native core of imagetask: the per-row and per-batch loops of an `ImageTask`."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, final

if TYPE_CHECKING:
    from imagetask.build._schema import OutputSchema

__all__ = [
    "MAX_GENERATIONS",
    "AnswerFacts",
    "ArrowRowsDigest",
    "ArrowTable",
    "ColumnBuilder",
    "ImageStore",
    "ImagesAnswer",
    "OutputLine",
    "Prepared",
    "PreparedColumns",
    "RowBuilder",
    "StoredImage",
    "answer_facts",
    "assemble_rows",
    "check_repeatable",
    "json_text",
    "placeholder_answers",
    "placeholder_images",
    "write_artifacts",
]

MAX_GENERATIONS: int
"""The most images a task asks per input row."""

def placeholder_images(
    prompts: list[str], *, num_generations: int, seed: int, width: int, height: int
) -> list[list[bytes]]:
    """Placeholder PNG pictures: `num_generations` per prompt, `width` x `height` pixels."""

def placeholder_answers(
    prompts: list[str],
    *,
    num_generations: int,
    seed: int,
    width: int,
    height: int,
    store: Any = None,
    stored_from: int,
) -> list[list[dict[str, Any]]]:
    """The placeholder backend's answers: for each prompt, `num_generations` dicts
    `{"images": [picture], "seed": seed, "statistics": {"image_bytes": size}}`; a picture
    of `stored_from` bytes or more goes to `store` (its `put` returns what the answer
    holds)."""

def write_artifacts(
    rows: list[dict[str, Any]],
    *,
    image_column: str,
    path_column: str,
    metadata_column: str,
    error_key: str,
    folder: str | os.PathLike[str],
    prefix: str,
    convert: Callable[[bytes], bytes] | None = None,
) -> list[tuple[int, int, str]]:
    """Writes each row's image to `folder/<sha256>.<ext>` and sets its path column to
    `prefix/<sha256>.<ext>` once the file is on disk; returns `(row, generation, error)`
    for the images that could not be written (their path is `None`)."""

@final
class RowBuilder:
    """Builds the output rows of one task configuration.

    `inputs` and `outputs` are `(task name, dataset column)` pairs; the first input is the
    prompt column of the native path, and `outputs` are the columns written on every row
    besides `model_name_column`; the metadata column and keys are the task's
    `OutputSchema`'s. A `num_generations` outside 1..`MAX_GENERATIONS` or no input is a
    `ConfigError`.
    """

    def __new__(
        cls,
        *,
        model_name: Any,
        inputs: list[tuple[str, str]],
        outputs: list[tuple[str, str]],
        num_generations: int,
        group_generations: bool,
        add_raw_output: bool,
        add_raw_input: bool,
        image_bytes: bool,
        inline_raw_images: bool,
        pass_invalid_rows: bool,
        model_name_column: str,
        metadata_column: str,
        raw_output_key: str,
        raw_input_key: str,
        statistics_key: str,
        error_key: str,
        images_as_received: bool = False,
    ) -> RowBuilder: ...
    def prepare(
        self,
        rows: list[Any],
        format_input: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Prepared:
        """Reads every row once and formats the prompt of each valid one.

        Raises `InputRowError` for the first invalid row unless `pass_invalid_rows`; an
        exception that is not an `Exception` (Ctrl-C) raised by a row or a hook propagates.
        """
    def build(
        self,
        prepared: Prepared,
        answers: Any,
        format_output: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None,
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int, str]]]:
        """Builds the output rows of a prepared batch: `(rows, [(row, generation, error)])`.

        `answers` is what the model returned for the prepared prompts (or the exception it
        raised); an image kept in a file (`ImageFile`) is read into its answer dict (what
        its `read()` raises propagates). A batch is built once: a second build is a
        `ConfigError`.
        """

@final
class Prepared:
    """A batch whose rows were read and whose prompts were formatted."""

    @property
    def prompts(self) -> list[str]:
        """The prompts of the valid rows, in order."""
    def __len__(self) -> int:
        """How many rows the batch holds."""

@final
class AnswerFacts:
    """What a batch's answers hold, found in one pass over the images their dicts list
    under `"images"` (`answer_facts`)."""

    @property
    def image_bytes(self) -> int:
        """The length of the images held as text or bytes."""
    @property
    def cost_usd(self) -> float:
        """Each dict's `statistics["cost_usd"]` (a finite number, not negative) times its
        images that are not `None`, summed."""
    @property
    def priced_images(self) -> int:
        """The images `cost_usd` counts."""

def answer_facts(answers: object) -> AnswerFacts:
    """The `AnswerFacts` of a batch's answers (lists or tuples of lists or tuples of
    dicts; anything else holds no image)."""

def json_text(value: Any) -> str:
    """The JSON text the columnar path stores for a value (bytes as base64 text, a value
    of another kind as its `str()`)."""

@final
class ArrowRowsDigest:
    """A digest of the rows of Arrow tables in order, each row in Arrow's row format: the
    same after N rows however they were cut into tables. Every table must have the first
    one's columns (names and types), else `ReadError`."""

    FORMAT: ClassVar[str]
    """The row encoding's name: digests made with another cannot be compared."""

    def __init__(self) -> None: ...
    @staticmethod
    def reads(schema: Any) -> bool:
        """Whether rows of `schema` (an object with `__arrow_c_schema__`) have a row
        encoding."""
    def add(self, data: Any) -> None:
        """Extends the digest with the rows of `data` (an object with
        `__arrow_c_stream__`)."""
    def hexdigest(self) -> str:
        """The digest of the rows so far, as hexadecimal text."""

@final
class ArrowTable:
    """An Arrow table (one record batch) handed to Python through the Arrow PyCapsule
    interface: `pyarrow.table(it)` takes it without copying."""

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        """A stream capsule of the table's one record batch."""
    def __len__(self) -> int:
        """How many rows the table holds."""

@final
class ColumnBuilder:
    """Builds the output table of one task configuration from Arrow input (a
    `num_generations` outside 1..`MAX_GENERATIONS` is a `ConfigError`); `schema` names
    what it writes."""

    def __new__(
        cls,
        *,
        schema: OutputSchema,
        prompt_column: str,
        model_name: str,
        num_generations: int,
        inline_raw_images: bool,
        pass_invalid_rows: bool,
    ) -> ColumnBuilder: ...
    def prepare(self, table: Any) -> PreparedColumns:
        """Reads a table (any object exporting an Arrow stream of record batches) and its
        prompt column.

        Raises `InputRowError` for the first null prompt unless `pass_invalid_rows`, and
        `ReadError` for data that is not a valid Arrow stream or a prompt column that is
        missing or not strings.
        """
    def build(
        self,
        prepared: PreparedColumns,
        answers: Any,
        artifacts_folder: str | os.PathLike[str] | None = None,
        artifacts_prefix: str | None = None,
        schema_metadata: dict[str, str] | None = None,
        spool_folder: str | os.PathLike[str] | None = None,
        spool_prefix: str | None = None,
    ) -> tuple[Any, list[tuple[int, int, str]]]:
        """Builds the output table of a prepared batch, its schema carrying
        `schema_metadata`: `(table, failures)`, the table a `pyarrow.Table` (its pyarrow
        schema made once for the tables of one schema in a row), each failure `(row,
        generation, error)`. A batch is built once: a second build is a `ConfigError`.
        An `ImageFile` is read as by `RowBuilder.build`.

        A `StoredImage` in `artifacts_folder` (when a column records the paths) or in
        `spool_folder` stays in its file (unless the raw output inlines images): its
        `Image` struct holds its path alone, `<prefix>/<name>`."""

def assemble_rows(
    *,
    schema: OutputSchema,
    num_generations: int,
    table: Any,
    rows: list[dict[str, Any]],
    infer: Callable[[list[Any]], Any],
) -> ArrowTable:
    """The output table of `table` (each row `num_generations` times) from the dict
    `rows` a task's own hooks built for it, their cells read natively: the image column
    as bytes (base64 text decoded), the artifact paths, `model_name` and the recorded
    metadata keys as text (the raw output and statistics as JSON text). `infer` makes an
    Arrow array (an object exporting an Arrow stream) of the list of values of each other
    output column. Raises `ReadError` naming the row and column of a cell that is not of
    its kind."""

def check_repeatable(*, table: Any, columns: list[str], num_generations: int) -> None:
    """Raises `ConfigError` when one of `columns` of `table` cannot be repeated
    `num_generations` times (its offsets or run ends, at any depth, cannot count the
    repeated values): the repeat itself, made and dropped."""

@final
class PreparedColumns:
    """An Arrow batch whose prompts were read."""

    @property
    def prompts(self) -> list[str]:
        """The prompts of the valid rows, in order."""
    @property
    def prompt_bytes(self) -> int:
        """The bytes of text in the prompt column."""
    def __len__(self) -> int:
        """How many rows the batch holds."""

@final
class StoredImage:
    """An image an `ImageStore` wrote: its file, SHA-256, size and format. Pickles; equal
    when every field is."""

    def __new__(
        cls, path: str | os.PathLike[str], sha256: str, size: int, format: str
    ) -> StoredImage: ...
    @property
    def sha256(self) -> str:
        """The SHA-256 of the image's bytes, in hex."""
    @property
    def size(self) -> int:
        """The image's length in bytes."""
    @property
    def format(self) -> str:
        """The image's format, as its file extension (`png`, `jpg`, ...)."""
    @property
    def path(self) -> str:
        """The file's path."""
    def read(self) -> bytes:
        """The image's bytes (`ReadError` when its file cannot be read)."""
    def json_string(self) -> bytes:
        """The image's base64 text as a JSON string, quotes included (base64 needs no
        escapes): what a JSON encoder can copy as it is."""

@final
class ImagesAnswer:
    """What an Images API response body held, per image: the stored image (or, for an
    image that is none, the `b64_json` text as sent; for one in no known format, its
    bytes), or `None` where the server gave a `url`."""

    @property
    def images(self) -> list[StoredImage | bytes | str | None]: ...
    @property
    def urls(self) -> list[str | None]: ...
    @property
    def revised_prompts(self) -> list[str | None]: ...
    @property
    def usage(self) -> str | None:
        """The JSON text of the answer's `usage`, if any."""

@final
class OutputLine:
    """A line of a Batch API output or error file as `ImageStore.read_batch_output`
    reads it: a wanted request's 200 answer (`custom_id` and `answer`), or the line
    whole (`line`)."""

    @property
    def custom_id(self) -> str | None: ...
    @property
    def answer(self) -> ImagesAnswer | None: ...
    @property
    def line(self) -> bytes | None: ...

@final
class ImageStore:
    """Writes images into `folder` (made with the first), each once, as
    `<sha256>.<extension>` (to a temporary file, then renamed), with the GIL released;
    `durable`: each synced once written and its cached pages given back (a run's
    artifacts, not read back soon). Pickles."""

    def __new__(cls, folder: str | os.PathLike[str], durable: bool = False) -> ImageStore: ...
    @property
    def folder(self) -> Path: ...
    @property
    def durable(self) -> bool: ...
    @property
    def made(self) -> bool:
        """Whether this store made its folder (with its first image)."""
    def put(self, data: bytes) -> StoredImage | bytes:
        """Stores an image's bytes: its `StoredImage`, or the bytes themselves when they
        are empty or in no known image format. `SinkError` when the file cannot be written."""
    def read_images_body(self, body: bytes) -> ImagesAnswer:
        """Reads an OpenAI Images API response body (JSON, base64 decoded with SIMD
        instructions, SHA-256) and stores its `b64_json` images. `RequestError` for a body
        of another shape, `SinkError` when a file cannot be written."""
    def read_batch_output(self, fd: int, wanted: set[str]) -> list[OutputLine]:
        """Reads a Batch API output or error file from its current position (`fd`: its
        open descriptor), one line held at a time, with the GIL released: each 200 answer
        of a `wanted` request read as `read_images_body` reads a body, its images stored;
        any other JSON line handed over whole; a line that is not JSON, or answers a
        request not wanted, skipped. `ReadError` when the file cannot be read, `SinkError` when an
        image cannot be written."""
