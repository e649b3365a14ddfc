"""`imagetask bench`: what building rows costs for a task configuration, at volume.

Rows go through the task batch by batch with a `ScriptedModel` (or a `ReplayModel` of a
finished run), on each path of `PATHS`: as dicts (`prepare`, `generate`, `finish`) and as
Arrow tables (`prepare_arrow`, ...), the paths taking turns (`TURN_ROWS`). The time spent
outside the model is reported per output row, with the process's peak memory. Nothing is
written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from imagetask.build._batch import Batch, failures_not_logged
from imagetask.build._columnar import ArrowBatch, ArrowOutput, arrow
from imagetask.errors import ImageTaskError, MissingExtraError, UsageError
from imagetask.models import ImageModel
from imagetask.outcome import Row
from imagetask.task._generation import ImageGeneration
from imagetask.task._task import ImageTask
from imagetask.testing.models import ReplayModel, ScriptedModel

__all__ = [
    "PATHS",
    "TURN_ROWS",
    "ArrowPath",
    "BenchPath",
    "DictPath",
    "PathResult",
    "add_command",
    "main",
    "measure",
]


@dataclass
class PathResult:
    """One path's figures: output rows, failed generations, seconds spent building rows
    (the model's own time excluded) and seconds spent in the model."""

    rows_out: int = 0
    failed: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0


class BenchPath:
    """A way of turning rows into output rows: `data` makes a batch's rows what the path
    takes (not timed), `prepare` makes them a batch of the task."""

    name = ""

    def data(self, rows: list[Row]) -> Any:
        """The rows as the path takes them."""
        return rows

    def prepare(self, task: ImageTask, data: Any) -> Batch | ArrowBatch:
        """A batch of `task` for `data`."""
        return task.prepare(data)


class DictPath(BenchPath):
    """The rows as dicts, as `process_batch`: copies, so that a task that changes its input
    rows does not change what the next path is given."""

    name = "dict"

    def data(self, rows: list[Row]) -> Any:
        return [dict(row) for row in rows]


class ArrowPath(BenchPath):
    """The rows as pyarrow tables, as `process_arrow`; each batch is made a table of the
    schema of the batch before when its rows fit it (as the batches of a Parquet file or
    a Hugging Face dataset share their schema)."""

    name = "arrow"

    def __init__(self) -> None:
        self.pa = arrow()
        self.schema: Any = None

    def data(self, rows: list[Row]) -> Any:
        table = self._of_schema(rows)
        if table is None:
            try:
                table = self.pa.Table.from_pylist(rows)
            except (self.pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                raise UsageError(f"the input rows cannot be made an Arrow table: {exc}") from None
        self.schema = table.schema
        return table

    def _of_schema(self, rows: list[Row]) -> Any:
        """The rows as a table of the last schema, or `None` if they do not fit it."""
        pa, schema = self.pa, self.schema
        if schema is None:
            return None
        names = set(schema.names)
        if any(row.keys() != names for row in rows):
            return None
        try:
            return pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None

    def prepare(self, task: ImageTask, data: Any) -> ArrowBatch:
        return task.prepare_arrow(data)


PATHS: tuple[type[BenchPath], ...] = (DictPath, ArrowPath)
"""The paths `imagetask bench` measures, one output line each."""

TURN_ROWS = 5_000
"""The input rows a path builds before the next path takes its turn: the paths take
turns through the run, so that a machine that slows down or speeds up meanwhile does so
for every path alike."""


def _timed(task: ImageTask, path: BenchPath, rows: list[Row], result: PathResult) -> None:
    """`prepare`, `generate`, `finish` for one batch, the model's time apart from the
    rest, added to `result`."""
    model = task.image_generation_model
    data = path.data(rows)
    started = time.perf_counter()
    batch = path.prepare(task, data)
    prepared = time.perf_counter()
    batch.generate()
    generated = time.perf_counter()
    output = batch.finish()
    finished = time.perf_counter()
    result.seconds += (prepared - started) + (finished - generated)
    result.model_seconds += generated - prepared
    result.rows_out += (
        output.table.num_rows if isinstance(output, ArrowOutput) else len(output.rows)
    )
    result.failed += len(output.failures)
    if isinstance(model, ScriptedModel):
        model.calls.clear()


def measure(
    task: ImageTask, paths: list[BenchPath], batches: Iterator[list[Row]]
) -> list[PathResult]:
    """Every path's figures for the same batches, the paths taking turns every
    `TURN_ROWS` input rows (at least a batch)."""
    results = [PathResult() for _ in paths]
    turn = max(1, TURN_ROWS // task.input_batch_size)
    while chunk := list(itertools.islice(batches, turn)):
        for path, result in zip(paths, results, strict=True):
            for rows in chunk:
                _timed(task, path, rows, result)
    return results


def add_command(commands: Any) -> None:
    """Adds the `bench` command to the command line's subparsers."""
    bench = commands.add_parser(
        "bench",
        help="measure what building rows costs for a task configuration",
        description=(
            "Build output rows at volume with a scripted model (or the images of a finished\n"
            "run) and print rows per second, the model's own time excluded, and peak memory.\n"
            f"The paths take turns every {TURN_ROWS:,} rows, so that a machine whose speed drifts\n"
            "meanwhile slows every path alike. Nothing is written."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--rows", type=int, default=100_000, metavar="N", help="input rows (default: 100000)"
    )
    bench.add_argument(
        "--num-generations", type=int, default=1, metavar="N", help="images per row (default: 1)"
    )
    bench.add_argument(
        "--batch-size", type=int, default=50, metavar="B", help="rows per batch (default: 50)"
    )
    bench.add_argument(
        "--raw",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record the raw output and raw input in the metadata (default: --raw)",
    )
    bench.add_argument(
        "--grouped", action="store_true", help="one row per input row (group_generations)"
    )
    bench.add_argument(
        "--task",
        metavar="MODULE:CLASS",
        help="your ImageTask subclass (importable from the current folder); default: "
        "ImageGeneration",
    )
    bench.add_argument(
        "--replay",
        metavar="OUTDIR",
        help="answer with the images of the finished run in OUTDIR, for its input rows in "
        "turn, instead of scripted 8x8 PNGs",
    )


def _task_class(spec: str) -> type[ImageTask]:
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise UsageError(f"--task: expected MODULE:CLASS, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"--task: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    for part in name.split("."):
        target = getattr(target, part, None)
    if not (isinstance(target, type) and issubclass(target, ImageTask)):
        raise UsageError(f"--task: {spec!r} is not an ImageTask subclass")
    return target


def _rows(task: ImageTask, count: int, replay: ReplayModel | None) -> Iterator[Row]:
    """`count` input rows: the replayed run's rows in turn, or rows with a distinct text
    in each of the task's input columns."""
    if replay is not None:
        if not replay.rows:
            raise UsageError(f"--replay: the run in {replay.output_dir} has no rows to replay")
        for row in itertools.islice(itertools.cycle(replay.rows), count):
            yield dict(row)
        return
    columns = [(task.input_mappings.get(name, name), name) for name in task.inputs]
    for i in range(count):
        yield {column: f"a photo of {name} {i}" for column, name in columns}


def _batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _peak_rss() -> int | None:
    """The process's peak resident memory in bytes (`ru_maxrss`), or `None` where the
    system has no `resource` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _describe(task: ImageTask, rows: int, args: argparse.Namespace) -> str:
    n = task.num_generations
    raw = "raw output and input on" if args.raw else "raw output and input off"
    layout = "one row per input" if task.group_generations else "one row per generation"
    model = f"replay of {args.replay}" if args.replay else "scripted (8x8 PNG bytes)"
    return (
        f"imagetask bench: {type(task).__name__}, {rows:,} rows x {n} generation"
        f"{'s' if n != 1 else ''}, {raw}, {layout}, batches of {task.input_batch_size}, "
        f"model: {model}"
    )


_HEADER = f"{'path':<6} {'rows out':>12} {'failed':>8} {'build s':>9} {'rows/s':>12} {'model s':>9}"


def _line(name: str, result: PathResult) -> str:
    """A path's line under `_HEADER`: rows/s is output rows per second of building."""
    rate = result.rows_out / result.seconds if result.seconds > 0 else float("inf")
    return (
        f"{name:<6} {result.rows_out:>12,} {result.failed:>8,} {result.seconds:>9.3f} "
        f"{rate:>12,.0f} {result.model_seconds:>9.3f}"
    )


def main(args: argparse.Namespace) -> int:
    """Runs `imagetask bench` with the parsed command line; prints one line per path."""
    for flag, value in (
        ("--rows", args.rows),
        ("--num-generations", args.num_generations),
        ("--batch-size", args.batch_size),
    ):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    replay = ReplayModel.from_run(args.replay) if args.replay else None
    model: ImageModel = replay if replay is not None else ScriptedModel()
    cls = _task_class(args.task) if args.task else ImageGeneration
    try:
        task = cls(
            image_generation_model=model,
            num_generations=args.num_generations,
            group_generations=args.grouped,
            add_raw_output=args.raw,
            add_raw_input=args.raw,
            input_batch_size=args.batch_size,
        )
    except ImageTaskError:
        raise
    except Exception as exc:  # the user's class could not be made
        raise UsageError(f"--task: {cls.__name__}: {type(exc).__name__}: {exc}") from None
    print(_describe(task, args.rows, args))
    with contextlib.suppress(MissingExtraError):
        arrow()  # loaded first: pyarrow's own libraries are not the rows' memory
    before = _peak_rss()
    print(_HEADER, flush=True)
    paths: list[BenchPath] = []
    missing: dict[str, MissingExtraError] = {}
    for kind in PATHS:
        try:
            paths.append(kind())
        except MissingExtraError as exc:
            missing[kind.name] = exc
    with failures_not_logged():
        results = measure(task, paths, _batches(_rows(task, args.rows, replay), args.batch_size))
    measured = {path.name: result for path, result in zip(paths, results, strict=True)}
    for kind in PATHS:
        if kind.name in missing:
            print(f"{kind.name:<6} not measured: {missing[kind.name]}")
        else:
            print(_line(kind.name, measured[kind.name]))
    peak = _peak_rss()
    if peak is None or before is None:
        print("peak memory: not measured (this system has no `resource` module)")
    else:
        print(
            f"peak memory: {peak / 2**20:.1f} MB resident (ru_maxrss of this process, "
            f"every path; {before / 2**20:.1f} MB before the first batch)"
        )
    return 0
