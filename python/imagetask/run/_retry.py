"""Making a run's failed generations again (`run(..., retry_failed=True)`).

The output rows of one input row (its *unit*: `num_generations` rows, or one grouped row)
say which of its generations failed: their metadata holds `error_<name>`. The input row is
rebuilt from the unit (the input columns pass through; the task's own metadata keys are
dropped), the model is asked for exactly as many images as failed, and the new rows take
the failed ones' places. Nothing that succeeded is generated again. The output with them
replaced is written beside the old one, in `.retry/`, checkpointed as it goes, and then
takes its place.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import msgspec

from imagetask.build._columnar import ArrowOutput
from imagetask.errors import BudgetReached, RunStopped
from imagetask.io._checkpoint import RetryMark
from imagetask.io._jsonl import ParquetSink, open_sink
from imagetask.run._images import image_paths
from imagetask.run._state import RETRY
from imagetask.run._tables import input_table, rows_table

if TYPE_CHECKING:
    from imagetask._runtime import Workers
    from imagetask.build._schema import OutputSchema
    from imagetask.outcome import Row
    from imagetask.run._state import RunState

__all__ = ["Unit", "failed_generations", "merge", "rebuilt_input", "retry_failed", "units"]

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


def retry_failed(state: RunState, workers: Workers) -> None:
    """Makes the failed generations of the rows `state` records again (see the module),
    the model's calls on `workers`."""
    mark = state.start_retry()
    task = state.task
    schema, n = task.output_schema, task.num_generations
    per_unit = 1 if schema.grouped else n
    recorded = state.sink
    assert recorded is not None
    sink = open_sink(state.output / RETRY, state.format, mark.sink, **state.sink_options)
    try:
        old = units(islice(recorded.recorded(), mark.rows_in * per_unit, None), schema, n)
        while chunk := list(islice(old, task.input_batch_size)):
            rows = [row for unit in _made_again(state, chunk, workers) for row in unit]
            if isinstance(sink, ParquetSink):
                assert isinstance(recorded, ParquetSink)
                sink.write_table(rows_table(rows, recorded.written_schema()))
            else:
                sink.write(rows)
            made = units(iter(rows), schema, n)
            failed = sum(len(failed_generations(unit, schema, n)) for unit in made)
            mark = RetryMark(
                rows_in=mark.rows_in + len(chunk),
                rows_out=mark.rows_out + len(rows),
                failed=mark.failed + failed,
                sink=sink.state(),
            )
            if state.due():
                state.save_retry(sink, mark)
        sink.finish(final=False, about=state.card())
        state.save_retry(sink, msgspec.structs.replace(mark, sink=sink.state(), swap=True))
    finally:
        sink.close()
    state.end_retry()


def _made_again(state: RunState, chunk: list[Unit], workers: Workers) -> list[Unit]:
    """`chunk`'s units with their failed generations made again; the model is asked
    once for each count of failed generations a unit has."""
    task = state.task
    schema = task.output_schema
    failed = [failed_generations(unit, schema, task.num_generations) for unit in chunk]
    merged = list(chunk)
    for count in sorted({len(generations) for generations in failed} - {0}):
        positions = [index for index, found in enumerate(failed) if len(found) == count]
        again = copy.copy(task)
        again.num_generations = count
        inputs = [rebuilt_input(chunk[index], schema) for index in positions]
        batch = (
            again.prepare_arrow(input_table(again, inputs, "the rows to retry"))
            if state.format == "parquet"
            else again.prepare(inputs)
        )
        workers.submit(batch.generate).result()
        refusal = batch.refusal()
        if isinstance(refusal, BudgetReached):
            state.ended = "budget"
            raise RunStopped(
                f"making the failed generations again: {refusal}; the output is as it "
                "was: to go on, run again with resume and a larger max_cost "
                "(--resume --max-cost USD)"
            )
        if refusal is not None:
            state.ended = "refused"
            raise RunStopped(
                "the model refused a request to make a failed generation again, which no "
                f"retry changes: {refusal}; the output is as it was: fix the cause, then "
                "run again with resume (--resume)"
            )
        output = batch.finish()
        state.add_cost(batch.cost())
        made = output.table.to_pylist() if isinstance(output, ArrowOutput) else output.rows
        per_unit = 1 if schema.grouped else count
        for number, index in enumerate(positions):
            new = made[number * per_unit : (number + 1) * per_unit]
            merged[index] = merge(chunk[index], failed[index], new, schema)
            if state.path_column is not None:
                state.images.add(image_paths([row.get(state.path_column) for row in new]))
    return merged
