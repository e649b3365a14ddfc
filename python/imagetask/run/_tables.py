"""The Arrow tables of a run that writes Parquet: a batch's input rows, the rows a retry
made again, and the schema of a run without rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagetask._extras import require
from imagetask.build._schema import with_image_types
from imagetask.errors import RunError, SinkError

if TYPE_CHECKING:
    from imagetask.outcome import Row
    from imagetask.run._runnable import RunnableTask

__all__ = ["empty_schema", "input_table", "rows_table"]


def empty_schema(task: RunnableTask) -> Any:
    """The Parquet schema of a run without rows: the task's input columns as text, its
    outputs as `OutputSchema.arrow_types` gives them, or text (lists of it when grouped),
    and no metadata column (it has no field)."""
    arrow = require("pyarrow", "parquet", "writing Parquet")
    schema = task.output_schema
    known = schema.arrow_types()
    text = arrow.list_(arrow.string()) if schema.grouped else arrow.string()
    mapped_in = task.input_mappings
    fields = [arrow.field(mapped_in.get(name, name), arrow.string()) for name in task.inputs]
    for name, column in schema.columns.items():
        if name in schema.outputs or column == schema.model_name:
            fields.append(arrow.field(column, known.get(column, text)))
    return arrow.schema(fields)


def input_table(task: RunnableTask, rows: list[Row], where: str) -> Any:
    """A batch's input rows as an Arrow table, for the columnar path (Parquet output).

    A row that is not a mapping or lacks a column raises `InputRowError` as
    `process_batch` does; columns whose values cannot share one Arrow type are a
    `RunError` naming the batch's first line (`where`).
    """
    arrow = require("pyarrow", "arrow", "writing Parquet")
    if not all(isinstance(row, dict) for row in rows):
        task.prepare(rows)  # raises InputRowError naming the row
    names = dict.fromkeys(name for row in rows for name in row)
    try:
        table = arrow.table({name: [row.get(name) for row in rows] for name in names})
    except (arrow.ArrowException, TypeError, ValueError, OverflowError, RecursionError) as exc:
        reason = " ".join(str(exc).split())
        raise RunError(
            f"{where}: the rows of the batch from this row cannot be one Arrow table for "
            f"Parquet (a column's values must share one type): {reason}"
        ) from None
    return with_image_types(table)


def rows_table(rows: list[Row], schema: Any) -> Any:
    """Output rows as an Arrow table of `schema` (the output's, to keep its types)."""
    arrow = require("pyarrow", "parquet", "writing Parquet")
    try:
        return arrow.Table.from_pylist(rows, schema=schema)
    except (arrow.ArrowException, TypeError, ValueError, OverflowError) as exc:
        reason = " ".join(str(exc).split())
        raise SinkError(
            f"the rows made again cannot take the output's column types: {reason}"
        ) from None
