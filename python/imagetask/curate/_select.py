"""A run's dataset narrowed to the images chosen: `select(run, output, ...)`.

The run is read through `RunFolder` and the kept rows are written, in the run's order and
format, through the run's own sinks (`data.jsonl`, or Parquet shards under `data/` with
their card), with a `run.json` recording where they came from; the artifact files the
kept rows name are copied. No model is called. The result is a run folder: the gallery,
`load_dataset` and `imagetask publish` read it as they read a run.

What is kept:

- An image marked `reject` in the marks file leaves; an image without a mark, or marked
  `keep`, stays.
- `reject_failed`: a failed generation (its error in the metadata, no image) leaves.
- `where`: a row whose cell does not satisfy every condition leaves.
- Ungrouped runs have one row per image: a row leaves with its image. With
  `group_generations`, a row holds every image of its input: a rejected image leaves the
  row's lists (each output column's and the metadata's), and a row left with none leaves.

An ungrouped run's rows are read `num_generations` at a time as the images of one input
row. When the selection keeps some but not all of an input's images, that no longer holds:
the selected dataset's task then records `num_generations: 1` (each row its own input, for
the gallery and for marks made on it) and the run's value under `selected_from`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagetask._durable import write_atomic
from imagetask._extras import require
from imagetask.curate._marks import Marks, read_marks
from imagetask.errors import ConfigError, ReadError, RunError
from imagetask.io._jsonl import JsonlSink
from imagetask.io._parquet import DATA, ParquetSink
from imagetask.io._run_folder import SUMMARY, RunFolder, RunRow, open_run
from imagetask.io._run_images import GeneratedImage, RunImages

__all__ = ["Selection", "Where", "select"]

_BATCH = 256
"""Rows written at a time."""


@dataclass(frozen=True)
class Where:
    """A condition on a column: `COLUMN=VALUE` keeps the rows whose cell equals VALUE,
    `COLUMN!=VALUE` those whose cell does not. VALUE is read as JSON where it parses
    (`3`, `true`, `null`, `"3"`), else as text."""

    column: str
    value: Any
    equal: bool = True

    @classmethod
    def parse(cls, text: str) -> Where:
        """Reads `COLUMN=VALUE` or `COLUMN!=VALUE`; `ConfigError` for anything else."""
        column, sep, raw = text.partition("=")
        equal = not column.endswith("!")
        column = column if equal else column[:-1]
        if not sep or not column:
            raise ConfigError(f"--where: expected COLUMN=VALUE or COLUMN!=VALUE, got {text!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        return cls(column, value, equal)

    def __str__(self) -> str:
        return f"{self.column}{'=' if self.equal else '!='}{json.dumps(self.value)}"

    def holds(self, run_row: RunRow) -> bool:
        """Whether the row satisfies the condition; `ConfigError` when it has no such column."""
        if self.column not in run_row.row:
            raise ConfigError(f"--where {self}: {run_row.where} has no column {self.column!r}")
        return bool(run_row.row[self.column] == self.value) == self.equal


@dataclass(frozen=True)
class Selection:
    """What `select` wrote.

    Attributes
    ----------
    output:
        The new run folder.
    inputs:
        Input rows with at least one image kept (of `source_inputs`).
    rows:
        Rows written.
    images:
        Generations kept that have an image.
    failed:
        Failed generations kept (none with `reject_failed`).
    rejected:
        Images left out by a `reject` mark.
    dropped_failed:
        Failed generations left out by `reject_failed`.
    dropped_where:
        Generations left out because their row did not satisfy `where`.
    """

    output: Path
    source_inputs: int
    inputs: int
    rows: int
    images: int
    failed: int
    rejected: int = 0
    dropped_failed: int = 0
    dropped_where: int = 0


def _check_marks(reader: RunImages, marks: Marks, source: Path) -> None:
    """Checks that `marks` was made on the run and that each marked image is the run's image
    at its input row and generation; `ReadError` naming the marks file and the first entry
    that is not."""
    name = reader.run.path.resolve().name
    if marks.run != name:
        raise ReadError(f"{source}: the marks are of the run {marks.run!r}, not {name!r}")
    wanted = {(mark.input, mark.generation) for mark in marks.marks}
    found: dict[tuple[int, int], str | None] = {}
    inputs = {index for index, _ in wanted}
    for unit in reader.inputs():
        if unit.index not in inputs:
            continue
        generations = [g for run_row in unit.rows for g in reader.generations(run_row)]
        for k, generation in enumerate(generations):
            if (unit.index, k) in wanted:
                found[unit.index, k] = generation.sha256
    for number, mark in enumerate(marks.marks):
        where = f"{source}: marks[{number}]"
        key = (mark.input, mark.generation)
        if key not in found:
            raise ReadError(f"{where}: the run has no image at {mark.image}")
        if found[key] is None:
            raise ReadError(f"{where}: {mark.image} of the run failed: it has no image")
        if found[key] != mark.sha256:
            raise ReadError(
                f"{where}: the image at {mark.image} is not the one marked (its sha256 is "
                f"{found[key]}, not {mark.sha256}): the marks are of another version of the run"
            )


class _Writer:
    """Writes the kept rows through the run's sink and copies their artifact files."""

    def __init__(self, reader: RunImages, output: Path) -> None:
        self.reader = reader
        self.output = output
        self.copied: set[str] = set()
        self.folders: set[Path] = set()
        self.batch: list[dict[str, Any]] = []
        run = reader.run
        self.arrow_schema = run.arrow_schema()
        self.sink: JsonlSink | ParquetSink
        if run.format == "parquet":
            self.sink = ParquetSink(
                output,
                image_column=reader.image,
                path_column=reader.path,
                empty_schema=self.arrow_schema,
            )
        else:
            self.sink = JsonlSink(output)

    def add(self, row: dict[str, Any], kept: Sequence[GeneratedImage], where: str) -> None:
        """Queues `row` for writing and copies the files of its `kept` generations."""
        for generation in kept:
            if generation.path is not None and generation.path not in self.copied:
                self.copy(generation.path, where)
        self.batch.append(row)
        if len(self.batch) >= _BATCH:
            self.flush()

    def copy(self, path: str, where: str) -> None:
        """Copies an artifact file to the same place in the output, with the
        `metadata.json` of its artifact folder."""
        source = self.reader.artifact(path, where)
        target = self.output / path
        if target.parent not in self.folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            metadata = source.parent.parent / "metadata.json"
            if metadata.is_file():
                shutil.copyfile(metadata, target.parent.parent / "metadata.json")
            self.folders.add(target.parent)
        shutil.copyfile(source, target)
        self.copied.add(path)

    def flush(self) -> None:
        """Writes the queued rows."""
        if not self.batch:
            return
        if isinstance(self.sink, JsonlSink):
            self.sink.write(self.batch)
        else:
            arrow = require("pyarrow", "parquet", "writing Parquet")
            self.sink.write_table(arrow.Table.from_pylist(self.batch, schema=self.arrow_schema))
        self.batch = []

    def finish(self, about: str) -> None:
        """Writes the last rows and completes the output (the card of a Parquet one)."""
        self.flush()
        self.sink.sync()
        self.sink.finish(final=True, about=about)
        self.sink.saved(self.sink.state())
        self.sink.close()


@dataclass
class _Counts:
    """What a selection counted so far (see `Selection`)."""

    source_inputs: int = 0
    inputs: int = 0
    rows: int = 0
    images: int = 0
    failed: int = 0
    rejected: int = 0
    dropped_failed: int = 0
    dropped_where: int = 0
    irregular: bool = False
    """Whether an ungrouped input kept some but not all of its generations."""


def _kept_row(reader: RunImages, row: dict[str, Any], keep: list[bool]) -> dict[str, Any]:
    """A grouped row with only the kept generations in its lists."""
    if all(keep):
        return row
    trimmed = dict(row)
    for column in reader.lists:
        cell = row.get(column)
        if isinstance(cell, list) and len(cell) == len(keep):
            trimmed[column] = [item for item, kept in zip(cell, keep, strict=True) if kept]
    return trimmed


def _about(name: str, source: str, selection: Selection) -> str:
    return (
        f"# {name}\n\nImages selected with imagetask from the run `{source}`: "
        f"{selection.images:,} images of {selection.inputs:,} of its {selection.source_inputs:,} "
        f"input rows ({selection.rejected:,} rejected by marks, {selection.dropped_failed:,} "
        f"failed generations and {selection.dropped_where:,} not matching left out).\n\n"
        "How the run was made and what was chosen is in `run.json`."
    )


def select(
    run: str | Path,
    output: str | Path,
    *,
    marks: str | Path | None = None,
    reject_failed: bool = False,
    where: Sequence[Where] = (),
) -> Selection:
    """Writes the rows of the run folder `run` that are kept (see the module's docstring)
    as a new run folder `output`, which must not exist or be empty.

    Raises `ReadError` for a run or a marks file that cannot be read, marks made on another
    run or naming an image the run does not have at that place (the first such entry
    named), `ConfigError` for a `where` column a row lacks, `RunError` for an output
    folder that holds files.
    """
    started = time.perf_counter()
    folder = open_run(run)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RunError(f"{output}: the output folder exists and is not empty")
    if output.resolve() == folder.path.resolve():
        raise RunError(f"{output}: the output folder is the run folder")
    reader = RunImages(folder)
    rejected: set[tuple[int, int]] = set()
    if marks is not None:
        chosen = read_marks(marks)
        _check_marks(reader, chosen, Path(marks))
        rejected = {(m.input, m.generation) for m in chosen.marks if m.mark == "reject"}
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    writer: _Writer | None = None
    try:
        writer = _Writer(reader, output)
        counts = _write_kept(reader, writer, rejected, reject_failed, where)
        selection = Selection(
            output=output,
            source_inputs=counts.source_inputs,
            inputs=counts.inputs,
            rows=counts.rows,
            images=counts.images,
            failed=counts.failed,
            rejected=counts.rejected,
            dropped_failed=counts.dropped_failed,
            dropped_where=counts.dropped_where,
        )
        writer.finish(_about(output.resolve().name, folder.path.resolve().name, selection))
        selected_from: dict[str, Any] = {
            "run": folder.path.resolve().name,
            "rows_in": selection.source_inputs,
            "marks": None if marks is None else str(marks),
            "rejected": selection.rejected,
            "reject_failed": reject_failed,
            "dropped_failed": selection.dropped_failed,
            "where": [str(condition) for condition in where],
            "dropped_where": selection.dropped_where,
        }
        _record(folder, selection, selected_from, counts.irregular, started)
    except BaseException:
        if writer is not None:
            writer.sink.close()
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
    return selection


def _write_kept(
    reader: RunImages,
    writer: _Writer,
    rejected: set[tuple[int, int]],
    reject_failed: bool,
    where: Sequence[Where],
) -> _Counts:
    """Writes the kept rows of the run, in order, and counts what was kept and left out."""
    counts = _Counts()
    for unit in reader.inputs():
        counts.source_inputs += 1
        k = kept_here = 0
        for run_row in unit.rows:
            generations = reader.generations(run_row)
            matches = all(condition.holds(run_row) for condition in where)
            keep = []
            for generation in generations:
                if not matches:
                    counts.dropped_where += 1
                elif (unit.index, k) in rejected:
                    counts.rejected += 1
                elif reject_failed and generation.failed:
                    counts.dropped_failed += 1
                elif generation.failed:
                    counts.failed += 1
                else:
                    counts.images += 1
                keep.append(
                    matches
                    and (unit.index, k) not in rejected
                    and not (reject_failed and generation.failed)
                )
                k += 1
            kept = [g for g, wanted in zip(generations, keep, strict=True) if wanted]
            if kept:
                row = _kept_row(reader, run_row.row, keep) if reader.grouped else run_row.row
                writer.add(row, kept, run_row.where)
                counts.rows += 1
                kept_here += len(kept)
        counts.inputs += kept_here > 0
        if not reader.grouped and kept_here not in (0, reader.per_input):
            counts.irregular = True
    return counts


def _record(
    run: RunFolder,
    selection: Selection,
    selected_from: dict[str, Any],
    irregular: bool,
    started: float,
) -> None:
    """Writes the selected run's `run.json`: its counts, its task, where it came from."""
    task = dict(run.task)
    if irregular:
        selected_from["num_generations"] = task.get("num_generations")
        task["num_generations"] = 1
    report = {
        "output": selection.output.name,
        "data": "data.jsonl" if run.format == "jsonl" else f"{DATA}/",
        "rows_in": selection.inputs,
        "rows_out": selection.rows,
        "failed": selection.failed,
        "seconds": round(time.perf_counter() - started, 3),
        "resumed_from": 0,
        "complete": True,
        "images": selection.images,
        "ended": "complete",
        "selected_from": selected_from,
        "task": task,
    }
    write_atomic(selection.output / SUMMARY, json.dumps(report, indent=2).encode() + b"\n")
