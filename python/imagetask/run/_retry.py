"""Making a run's failed generations again (`run(..., retry_failed=True)`).

The output rows of one input row (its *unit*: `num_generations` rows, or one grouped row)
say which of its generations failed: their metadata holds `error_<name>`. The input row is
rebuilt from the unit (the input columns pass through; the task's own metadata keys are
dropped), the model is asked for exactly as many images as failed, and the new rows take
the failed ones' places. Nothing that succeeded is generated again.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagetask.build._schema import OutputSchema
    from imagetask.outcome import Row

__all__ = ["RETRY", "Unit", "failed_generations", "merge", "rebuilt_input", "units"]

RETRY = ".retry"
"""The folder, inside the output folder, where a retry writes the output that replaces it."""

Unit = list["Row"]


def units(rows: Iterator[Row], schema: OutputSchema, n: int) -> Iterator[Unit]:
    """The output rows grouped by input row, of `n` generations each."""
    size = 1 if schema.grouped else n
    unit: Unit = []
    for row in rows:
        unit.append(row)
        if len(unit) == size:
            yield unit
            unit = []
    if unit:
        yield unit


def _errors(unit: Unit, schema: OutputSchema, n: int) -> list[Any]:
    """Each generation's metadata (a dict, or None) in order."""
    column = schema.metadata
    if schema.grouped:
        found = unit[0].get(column)
        return list(found) if isinstance(found, list) else [None] * n
    return [row.get(column) for row in unit]


def failed_generations(unit: Unit, schema: OutputSchema, n: int) -> list[int]:
    """The generations of a unit (of `n` generations) that have no image."""
    key = schema.error
    return [
        index
        for index, meta in enumerate(_errors(unit, schema, n))
        if isinstance(meta, dict) and meta.get(key) is not None
    ]


def rebuilt_input(unit: Unit, schema: OutputSchema) -> Row:
    """The input row a unit was made from: its columns but the task's outputs, and its
    metadata without the task's own keys (dropped when nothing else is left)."""
    outputs = set(schema.columns.values())
    column = schema.metadata
    row = {name: value for name, value in unit[0].items() if name not in outputs}
    meta = row.get(column)
    if isinstance(meta, list):
        meta = meta[0] if meta else None
    if isinstance(meta, dict):
        upstream = {key: value for key, value in meta.items() if key not in schema.own_keys}
        if upstream:
            row[column] = upstream
        else:
            del row[column]
    return row


def merge(unit: Unit, failed: list[int], made: Unit, schema: OutputSchema) -> Unit:
    """`unit` with its `failed` generations replaced, in order, by the rows `made` for
    them (a grouped row's lists element by element)."""
    if not schema.grouped:
        merged = list(unit)
        for index, row in zip(failed, made, strict=True):
            merged[index] = row
        return merged
    (row,) = unit
    (new,) = made
    merged_row = copy.copy(row)
    for name in [*schema.output_columns, schema.metadata]:
        values = merged_row.get(name)
        if not isinstance(values, list):
            continue
        values = list(values)
        for position, index in enumerate(failed):
            values[index] = new[name][position]
        merged_row[name] = values
    return [merged_row]
