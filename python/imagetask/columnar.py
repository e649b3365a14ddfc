"""The columnar path: Arrow tables in, Arrow tables out, built natively.

`task.process_arrow(data)` takes any object that exports the Arrow PyCapsule interface (a
pyarrow Table or RecordBatch, a Polars DataFrame, the table under a Hugging Face
Dataset) and returns a `pyarrow.Table` with the information `process_batch` gives for
the same rows, laid out as columns:

- the input columns, as they are, in their own types (each row repeated when
  `num_generations > 1` and the generations are not grouped); an input column named like
  a column the task writes (an output column, `model_name`, the metadata column) is
  replaced by it;
- the task's output columns; for `ImageGeneration`, `image` is the Hugging Face `Image`
  struct `struct<bytes: binary, path: string>` (the image's bytes, whatever
  `images_as_bytes` says, and its artifact's path, as `image_path` holds it);
- `model_name` (string);
- the metadata column, a struct whose fields are the input's metadata struct fields
  (but those named like one of the following, which replace them), then
  `raw_output_<name>` (with `add_raw_output`), `raw_input_<name>` (with
  `add_raw_input`), `statistics_<name>` and `error_<name>`. The raw output and the
  statistics are JSON text (their keys depend on the backend, so text keeps the schema
  the same for every batch of a configuration): bytes in them become base64 text, a
  float that is not finite `null`, a dict key that is not a string its `str()`, a value
  JSON has no kind for (a set, an object) its `str()` as a string, and text that cannot
  be encoded (lone surrogates) has those characters replaced.

With `group_generations=True` the output columns and the metadata are lists, one item
per generation. The table's schema carries the `huggingface` metadata naming its
features (the image as `Image`), so a table written to Parquet loads in `datasets` with
its images. `dict_rows(task, table)` turns such a table back into the dict rows
`process_batch` returns (`RowConverter`): images as (padded) base64 text of their
bytes unless `images_as_bytes`, the JSON texts parsed, and the metadata fields that are
null left out (a null field stands for a key that is absent) but the raw output and raw
input.

`ImageGeneration` with its own hooks builds every column natively. A task whose
`format_input` or `format_output` is overridden, an `image_format` conversion, a prompt
column that is not text or a metadata column that is not a struct take a slower path:
the rows are materialised as dicts for the hooks, built as `process_batch` builds them,
and converted to the same columns (an image a `format_output` gives as an `Image` struct
dict, `{"bytes": ..., "path": ...}`, keeps its path).

The extension assembles the output table (`_core.ColumnBuilder`, or `_core.assemble_rows`
reading the cells of the slower path's dict rows, pyarrow inferring only the types of
the output columns a task's own hooks fill). A batch whose columns cannot be repeated is refused
before the model is called with a `ConfigError` naming the column: a run-end encoded
column whose run ends (at any depth) cannot count the repeated rows, or text that would
not fit one Arrow string column once repeated `num_generations` times (the raw inputs,
one per generation, hold the prompts that many times).
"""

from imagetask.build._columnar import (
    MAX_STRING_BYTES,
    ArrowBatch,
    ArrowOutput,
    as_table,
    dict_rows,
)

__all__ = ["MAX_STRING_BYTES", "ArrowBatch", "ArrowOutput", "as_table", "dict_rows"]
