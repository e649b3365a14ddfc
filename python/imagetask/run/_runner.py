"""Running a task over a whole dataset: streamed in batches, checkpointed, resumable.

The output folder holds `data.jsonl` (or, for Parquet, the Hugging Face layout of
`imagetask.io._parquet`: `data/` shards and `README.md`), `artifacts/` when the task saves
them, `checkpoint.json`, the lock file and, once the run has ended, `run.json`. A run holds
an exclusive lock on the folder from start to end. A fresh run writes its checkpoint
before the first byte of output. Each batch's rows are appended whole, after its image
files are on disk; a batch that cannot be written stops the run with the checkpoint at
the batch before. At most every `checkpoint_seconds` the output and the image files
written since the last checkpoint are synced, then the checkpoint records how many input
rows are done and where the output ends. A resumed run checks the checkpoint and the
output against each other and the input against the rows done (a digest of them), cuts
the output back to that point and goes on with the next input row, so a crash at any
moment loses nothing and repeats nothing; a finished run goes on the same way when its
input grew. A new run stopped before it recorded a row removes its checkpoint and output.

A run stops early, its batches before written and recorded, when the model refuses a
request in a way no retry changes (the batch that met it is not written) or when
`max_consecutive_failures` generations in a row failed. `retry_failed` makes the failed
generations of the rows done again (`imagetask.run._retry`): the output with them replaced is
written beside the old one, in `.retry/`, checkpointed as it goes, and then takes its place.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from imagetask._durable import fsync_dir, fsync_file, refuse_links, write_atomic
from imagetask._extras import require
from imagetask._runtime import Workers
from imagetask.build._artifacts import artifacts_folder
from imagetask.build._columnar import ArrowOutput
from imagetask.errors import (
    ConfigError,
    ImageTaskError,
    InputRowError,
    RunError,
    RunInterrupted,
    RunStopped,
    SinkError,
)
from imagetask.io._checkpoint import (
    CHECKPOINT,
    VERSION,
    Checkpoint,
    InputMark,
    RetryMark,
    RowsDigest,
    row_digest,
    write_checkpoint,
)
from imagetask.io._identity import UrlDigests, output_identity
from imagetask.io._jsonl import (
    OUTPUT_FORMATS,
    JsonlSink,
    OutputFormat,
    ParquetSink,
    empty_state,
    open_sink,
)
from imagetask.io._parquet import DATA, SHARD_BYTES, STAGING
from imagetask.io._readers import Reader
from imagetask.io._run_folder import SUMMARY, RunFolder
from imagetask.outcome import Ending, RunSummary
from imagetask.run._lock import FolderLock
from imagetask.run._progress import Progress
from imagetask.run._retry import RETRY, failed_generations, merge, rebuilt_input, units

if TYPE_CHECKING:
    from imagetask.build._batch import Batch
    from imagetask.build._columnar import ArrowBatch
    from imagetask.outcome import Failure, Row
    from imagetask.run._runnable import RunnableTask

__all__ = ["CHECKPOINT", "RunSummary", "run"]

_OUTPUTS = ("data.jsonl", DATA, STAGING)
"""What a run writes its rows to: a folder holding any of them without a checkpoint is
refused."""
_SYNC_THREADS = 4
"""Threads that fsync image files (concurrent fsyncs share the file system's journal commits)."""
_HELD_PER_BATCH_IN_FLIGHT = 8
"""How many batches a run may hold, per batch of `batches_in_flight`, while the oldest
waits on a request and the model has request slots to spare."""
_POLL_SECONDS = 0.02
"""How often a run waiting for its oldest batch asks the model whether it has slots to spare."""


@dataclass
class _Pending:
    """A batch whose model call runs on a worker, and where its first input row is."""

    batch: Batch | ArrowBatch
    generated: Future[None]
    where: str
    first: str | None
    last: str | None
    rows: str
    """The `RowsDigest` of the input up to the batch's last row."""


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))
    return f"`{path}` was {json.dumps(old)}, now {json.dumps(new)}"


def _empty_schema(task: RunnableTask) -> Any:
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


class _ImageSync:
    """fsyncs the image files of written batches on a few threads, while the next batches
    are generated; `wait` (before a checkpoint) waits for them and syncs their folders."""

    def __init__(self, output: Path) -> None:
        self._output = output
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._seen: set[str] = set()
        self._folders: set[Path] = set()

    def add(self, paths: Iterable[str]) -> None:
        for relative in paths:
            if relative in self._seen:
                continue
            self._seen.add(relative)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_SYNC_THREADS, "imagetask-fsync")
            path = self._output / relative
            self._pending.append(self._pool.submit(fsync_file, path))
            self._folders.add(path.parent)

    def wait(self) -> None:
        """Returns once every file added and its folders up to the output are durable."""
        for done in self._pending:
            done.result()
        folders = set(self._folders)
        for folder in self._folders:
            folders.update(parent for parent in folder.parents if self._output in parent.parents)
        for folder in folders:
            fsync_dir(folder)
        self._pending.clear()
        self._seen.clear()
        self._folders.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Run:
    """A run's output folder: its checkpoint, its sink and the image files to sync."""

    def __init__(
        self,
        task: RunnableTask,
        output: Path,
        format: OutputFormat,
        resume: bool,
        checkpoint_seconds: float,
        shard_bytes: int,
        retry_failed: bool = False,
        max_consecutive_failures: int = 0,
    ) -> None:
        self.task = task
        self.checkpoint_seconds = checkpoint_seconds
        self.max_consecutive_failures = max_consecutive_failures
        self.streak = 0
        self.ended: Ending = "complete"
        self.retrying = False  # whether the failed generations of the rows done are made again
        self._saved = time.monotonic()
        self.output = output
        self.format = format
        self.dump = task.dump()
        self.path = output / CHECKPOINT
        self.data = output / (DATA if format == "parquet" else "data.jsonl")
        self._images = _ImageSync(output)
        schema = task.output_schema
        self._path_column = schema.image_path
        options: dict[str, Any] = {}
        if format == "parquet":
            options = {
                "empty_schema": _empty_schema(task),
                "image_column": schema.image or schema.columns.get("image", "image"),
                "path_column": self._path_column,
                "shard_bytes": shard_bytes,
            }
        self._options = options
        previous = self._previous(resume)
        if previous is not None and previous.retry is not None and previous.retry.swap:
            previous = self._swap(previous, previous.retry)
        self.fresh = previous is None
        if previous is None:
            # The checkpoint comes before the first byte of output: a run killed at any
            # moment leaves a folder that `resume` accepts.
            self.checkpoint = Checkpoint(
                version=VERSION,
                format=format,
                task=self.dump,
                rows_in=0,
                rows_out=0,
                failed=0,
                seconds=0.0,
                complete=False,
                sink=empty_state(format),
                urls=UrlDigests.of(task),
            )
            write_checkpoint(self.path, self.checkpoint)
            self.sink: JsonlSink | ParquetSink | None = open_sink(output, format, None, **options)
        else:
            self.checkpoint = previous
            if previous.retry is None:  # what a retry left, before or after recording
                shutil.rmtree(output / RETRY, ignore_errors=True)
            self.retrying = previous.retry is not None or (retry_failed and previous.failed > 0)
            if not self.done:
                self.sink = open_sink(output, format, previous.sink, **options)
            else:
                self.sink = None
        self.resumed_from = self.checkpoint.rows_in

    @property
    def done(self) -> bool:
        """Whether the run has nothing left to do."""
        return self.checkpoint.complete and not self.retrying

    def _previous(self, resume: bool) -> Checkpoint | None:
        if not self.path.exists():
            if any((self.output / name).exists() for name in _OUTPUTS):
                raise RunError(
                    f"{self.output} holds output without a {CHECKPOINT}: choose an empty folder"
                )
            return None
        if not resume:
            raise RunError(
                f"{self.output} already holds a run ({CHECKPOINT}): resume it (--resume) "
                "or choose an empty folder"
            )
        folder = RunFolder(self.output)
        state = folder.checkpoint()
        assert state is not None  # the folder is locked and the file exists
        folder.staged()  # refuses names outside the staging folder, as every reader does
        if state.format != self.format:
            raise RunError(
                f"{self.output}: the run writes {state.format}, not {self.format}: "
                f"resume it with the same format"
            )
        urls = None if state.urls is None else UrlDigests.of(self.task, state.urls.key)
        old, new = output_identity(state.task, state.urls), output_identity(self.dump, urls)
        if old != new:
            raise RunError(
                f"{self.output}: the task differs from the run's: {_first_difference(old, new)}"
            )
        return state

    def commit(self, pending: _Pending, progress: Progress | None) -> None:
        """Writes a generated batch whole, or raises `SinkError` having written none of it
        (the checkpoint then stays at the batch before)."""
        pending.generated.result()
        batch = pending.batch
        refusal = batch.refusal()
        if refusal is not None:
            self.ended = "refused"
            raise RunStopped(
                f"{pending.where}: the model refused the request, which no retry changes: "
                f"{refusal}; the run stopped before this batch, {self._made()}: fix the "
                "cause, then run again with resume (--resume)"
            )
        output = batch.finish()
        failed = len(output.failures)
        assert self.sink is not None
        try:
            if isinstance(output, ArrowOutput):
                assert isinstance(self.sink, ParquetSink)
                self.sink.write_table(output.table)
            else:
                assert isinstance(self.sink, JsonlSink)
                self.sink.write(output.rows)
        except SinkError as exc:
            raise SinkError(
                f"{pending.where}: the batch from this row cannot be written, so the run "
                f"stops with the rows before it: {exc}"
            ) from None
        if self._path_column is not None:
            rows = (
                output.table.column(self._path_column).to_pylist()
                if isinstance(output, ArrowOutput)
                else [row.get(self._path_column) for row in output.rows]
            )
            self._images.add(_paths(rows))
        written = output.table.num_rows if isinstance(output, ArrowOutput) else len(output.rows)
        done = self.checkpoint
        # One assignment: a Ctrl-C lands before or after it, never halfway.
        mark = InputMark(
            done.input.first if done.rows_in else pending.first, pending.last, pending.rows
        )
        self.checkpoint = msgspec.structs.replace(
            done,
            input=mark,
            rows_in=done.rows_in + batch.size,
            rows_out=done.rows_out + written,
            failed=done.failed + failed,
            sink=self.sink.state(),
        )
        if time.monotonic() - self._saved >= self.checkpoint_seconds:
            self.save()
        if progress is not None:
            generations = batch.size * self.task.num_generations
            progress.update(batch.size, generations - failed, failed)
        self._count_streak(batch, output.failures)

    def _made(self) -> str:
        done = self.checkpoint
        images = done.rows_in * self.task.num_generations - done.failed
        return f"after {done.rows_in:,} input rows ({images:,} images, {done.failed:,} failed)"

    def _count_streak(self, batch: Batch | ArrowBatch, failures: list[Failure]) -> None:
        """Counts the generations that failed in a row; stops the run at the limit."""
        limit = self.max_consecutive_failures
        generations = self.task.num_generations
        last = -1
        for failure in sorted(failures):
            index = failure.row * generations + failure.generation
            if index == last:
                continue
            self.streak = self.streak + 1 if index == last + 1 else 1
            last = index
            if limit and self.streak >= limit:
                self.ended = "failures"
                raise RunStopped(
                    f"{batch.where(failure.row)}: {self.streak:,} generations failed in a row "
                    f"(the last: {failure.error}), so the run stopped {self._made()}: fix the "
                    "cause, then make them again with resume and retry_failed "
                    "(--resume --retry-failed)"
                )
        if last != batch.size * generations - 1:
            self.streak = 0

    def _swap(self, previous: Checkpoint, retry: RetryMark) -> Checkpoint:
        """Puts a retry's whole new output in the old one's place (or finishes doing so,
        after a crash in the middle), records it and removes the retry's folder."""
        side = self.output / RETRY
        new = side / self.data.name
        if new.exists():
            if self.data.is_dir():
                old = side / "old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.data, old)
            os.replace(new, self.data)
            fsync_dir(side)
            fsync_dir(self.output)
        checkpoint = msgspec.structs.replace(
            previous, sink=retry.sink, failed=retry.failed, retry=None
        )
        write_checkpoint(self.path, checkpoint)
        shutil.rmtree(side)
        return checkpoint

    def retry_failed(self, workers: Workers) -> None:
        """Makes the failed generations of the rows done again: the output with them
        replaced is written in `.retry/` (checkpointed as it goes), then takes the old
        output's place (see `imagetask.run._retry`)."""
        side = self.output / RETRY
        mark = self.checkpoint.retry
        if mark is None:
            side.mkdir()
            mark = RetryMark(rows_in=0, rows_out=0, failed=0, sink=empty_state(self.format))
            self.checkpoint = msgspec.structs.replace(self.checkpoint, retry=mark)
            write_checkpoint(self.path, self.checkpoint)
        assert self.sink is not None
        task = self.task
        schema, n = task.output_schema, task.num_generations
        per_unit = 1 if schema.grouped else n
        sink = open_sink(side, self.format, mark.sink, **self._options)
        try:
            old = units(islice(self.sink.recorded(), mark.rows_in * per_unit, None), schema, n)
            while chunk := list(islice(old, task.input_batch_size)):
                rows = [row for unit in self._retried(chunk, workers) for row in unit]
                if isinstance(sink, ParquetSink):
                    assert isinstance(self.sink, ParquetSink)
                    sink.write_table(_rows_table(rows, self.sink.written_schema()))
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
                if time.monotonic() - self._saved >= self.checkpoint_seconds:
                    self._save_retry(sink, mark)
            sink.finish(final=False, about=_about(self))
            self._save_retry(sink, msgspec.structs.replace(mark, sink=sink.state(), swap=True))
        finally:
            sink.close()
        self.sink.close()
        assert self.checkpoint.retry is not None
        self.checkpoint = self._swap(self.checkpoint, self.checkpoint.retry)
        self.sink = open_sink(self.output, self.format, self.checkpoint.sink, **self._options)
        self.retrying = False

    def _retried(self, chunk: list[list[Row]], workers: Workers) -> list[list[Row]]:
        """`chunk`'s units with their failed generations made again; the model is asked
        once for each count of failed generations a unit has."""
        task = self.task
        schema = task.output_schema
        failed = [failed_generations(unit, schema, task.num_generations) for unit in chunk]
        merged = list(chunk)
        for count in sorted({len(generations) for generations in failed} - {0}):
            positions = [index for index, found in enumerate(failed) if len(found) == count]
            again = copy.copy(task)
            again.num_generations = count
            inputs = [rebuilt_input(chunk[index], schema) for index in positions]
            batch = (
                again.prepare_arrow(_table(again, inputs, "the rows to retry"))
                if self.format == "parquet"
                else again.prepare(inputs)
            )
            workers.submit(batch.generate).result()
            refusal = batch.refusal()
            if refusal is not None:
                self.ended = "refused"
                raise RunStopped(
                    "the model refused a request to make a failed generation again, which no "
                    f"retry changes: {refusal}; the output is as it was: fix the cause, then "
                    "run again with resume (--resume)"
                )
            output = batch.finish()
            made = output.table.to_pylist() if isinstance(output, ArrowOutput) else output.rows
            per_unit = 1 if schema.grouped else count
            for number, index in enumerate(positions):
                new = made[number * per_unit : (number + 1) * per_unit]
                merged[index] = merge(chunk[index], failed[index], new, schema)
                if self._path_column is not None:
                    self._images.add(_paths([row.get(self._path_column) for row in new]))
        return merged

    def _save_retry(self, sink: JsonlSink | ParquetSink, mark: RetryMark) -> None:
        """Syncs a retry's new output and its image files, then records how far it got."""
        sink.sync()
        self._images.wait()
        self.checkpoint = msgspec.structs.replace(self.checkpoint, retry=mark)
        write_checkpoint(self.path, self.checkpoint)
        sink.saved(mark.sink)
        self._saved = time.monotonic()

    def reopen(self) -> None:
        """Takes a finished run up again (its input grew): opens its output where the
        checkpoint ends it and removes `run.json`, which is for a run that has ended."""
        self.checkpoint = msgspec.structs.replace(self.checkpoint, complete=False)
        self.sink = open_sink(self.output, self.format, self.checkpoint.sink, **self._options)
        (self.output / SUMMARY).unlink(missing_ok=True)

    def forget(self) -> None:
        """For a new run stopped before it recorded a row (a command refused at its first
        row): removes its output, then its checkpoint, so that nothing in the folder
        blocks the next command. A run that recorded rows is left to resume."""
        if not self.fresh or self.checkpoint.rows_in or self.done:
            return
        self.close()
        for path in (self.output / name for name in _OUTPUTS):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def discard_unrecorded(self) -> None:
        """Drops output written after the checkpoint's state: a Ctrl-C between writing
        a batch and recording it leaves the batch to be done again, not counted twice."""
        if self.sink is not None:
            self.sink.discard_after(self.checkpoint.sink)

    def save(self) -> None:
        """Syncs the output and its image files, then records the checkpoint that points
        to its end."""
        if self.sink is not None:
            self.sink.sync()
        self._images.wait()
        write_checkpoint(self.path, self.checkpoint)
        if self.sink is not None:
            self.sink.saved(self.checkpoint.sink)
        self._saved = time.monotonic()

    def complete(self, seconds: float, complete: bool) -> None:
        self.checkpoint = msgspec.structs.replace(
            self.checkpoint,
            complete=complete,
            seconds=round(self.checkpoint.seconds + seconds, 3),
        )

    def finish_sink(self, final: bool) -> None:
        """Completes the output (the last Parquet shard, the dataset card)."""
        assert self.sink is not None
        self.sink.finish(final=final, about=_about(self))
        self.checkpoint = msgspec.structs.replace(self.checkpoint, sink=self.sink.state())

    def finish_stopped(self) -> None:
        """After a stop other than Ctrl-C (an error, a refusal): completes what was
        written, as a `limit` does, so that the rows recorded load (for Parquet, the last
        shard and the dataset card). Should that fail too, the staged batches stay
        recorded as they are, for a resume to finish, and the stop's own error is the
        one reported. A run that recorded no row has nothing to complete (and leaves
        nothing behind, see `forget`)."""
        if self.sink is None or self.retrying or not self.checkpoint.rows_in:
            return
        try:
            self.finish_sink(False)
        except Exception:
            return

    def summary(self) -> RunSummary:
        state = self.checkpoint
        return RunSummary(
            images=state.rows_in * self.task.num_generations - state.failed,
            ended=self.ended,
            output=str(self.output),
            data=str(self.data),
            rows_in=state.rows_in,
            rows_out=state.rows_out,
            failed=state.failed,
            seconds=state.seconds,
            resumed_from=self.resumed_from,
            complete=state.complete,
        )

    def close(self) -> None:
        self._images.close()
        if self.sink is not None:
            self.sink.close()


def _paths(values: list[Any]) -> Iterator[str]:
    """The image paths of a batch's path column (lists of them when grouped)."""
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (path for path in value if isinstance(path, str))


def _numbered(rows: Iterable[Row] | Reader) -> tuple[Iterator[tuple[int, Row]], Any]:
    if isinstance(rows, Reader):
        return iter(rows), rows.where
    return enumerate(rows), lambda index: f"input row {index}"


def _check_options(
    format: Any,
    limit: Any,
    batches_in_flight: Any,
    checkpoint_seconds: Any,
    shard_bytes: Any,
    max_consecutive_failures: Any,
) -> None:
    failures = max_consecutive_failures
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ConfigError(
            f"run: max_consecutive_failures={failures!r}: expected an int >= 0 (0: no limit)"
        )
    if isinstance(shard_bytes, bool) or not isinstance(shard_bytes, int) or shard_bytes < 1:
        raise ConfigError(f"run: shard_bytes={shard_bytes!r}: expected an int >= 1")
    if format not in OUTPUT_FORMATS:
        raise ConfigError(f"run: format={format!r}: expected one of {list(OUTPUT_FORMATS)}")
    if not isinstance(batches_in_flight, int) or batches_in_flight < 1:
        raise ConfigError(f"run: batches_in_flight={batches_in_flight!r}: expected an int >= 1")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"run: limit={limit!r}: expected None or an int >= 0")
    if (
        isinstance(checkpoint_seconds, bool)
        or not isinstance(checkpoint_seconds, (int, float))
        or not math.isfinite(checkpoint_seconds)
        or checkpoint_seconds < 0
    ):
        raise ConfigError(
            f"run: checkpoint_seconds={checkpoint_seconds!r}: expected a finite number >= 0"
        )


def run(
    task: RunnableTask,
    rows: Iterable[Row] | Reader,
    output_dir: str | Path,
    *,
    format: OutputFormat = "jsonl",
    resume: bool = False,
    limit: int | None = None,
    progress: bool | Progress = False,
    batches_in_flight: int = 2,
    checkpoint_seconds: float = 1.0,
    shard_bytes: int = SHARD_BYTES,
    max_consecutive_failures: int = 50,
    retry_failed: bool = False,
    overwrite: bool = False,
) -> RunSummary:
    """Runs `task` over `rows` into `output_dir`; see the module's docstring.

    `rows` is any iterable of dicts, or a `Reader` (then errors name the file's line).
    `limit` caps the input rows of the whole run (resumed ones included); a run it
    stopped before the input's end is not complete, and resuming it goes further. Batches of
    `task.input_batch_size` rows are generated `batches_in_flight` at a time while the
    finished ones are written in order; while the oldest waits on a request (its retries,
    a slow answer) and the model has request slots to spare (`idle_slots`), more start,
    up to 8 times as many. Memory stays bounded whatever the input size.
    The output is synced and the checkpoint written at most every `checkpoint_seconds`
    (and when the run ends or stops): a crash repeats at most that much work.
    The run stops (`RunStopped`, after writing the batches before) at a request the model
    refuses in a way no retry changes, and once `max_consecutive_failures` generations
    failed in a row (0: never). With `resume`, `retry_failed` first makes the failed
    generations of the rows done again. `overwrite` deletes a run the folder holds (its
    output, artifacts, checkpoint) and starts afresh.
    The run holds an exclusive lock on `output_dir` and works on a copy of `task` (its
    `output_dir` set to the folder): the caller's task is left as it was.

    Raises `ConfigError` for a bad option, `RunError` when the folder is in use, holds
    another run or an output that does not match its checkpoint, or for a bad input row
    (after writing the batches before it), `SinkError` for a batch that cannot be
    written (after writing the batches before it), `RunStopped` when it stops early, and
    `RunInterrupted` on Ctrl-C.
    """
    _check_options(
        format, limit, batches_in_flight, checkpoint_seconds, shard_bytes, max_consecutive_failures
    )
    if overwrite and resume:
        raise ConfigError("run: overwrite=True starts afresh and resume=True goes on: choose one")
    if retry_failed and not resume:
        raise ConfigError(
            "run: retry_failed=True makes a run's failed rows again: it needs resume=True"
        )
    started = time.monotonic()
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise RunError(f"{output}: a file, not a folder: choose a folder for the output")
    output.mkdir(parents=True, exist_ok=True)
    task = copy.copy(task)
    if hasattr(task, "output_dir"):
        task.set_runtime_parameters({"output_dir": str(output)})
    lock = FolderLock(output)
    try:
        _tell_start(task.image_generation_model, output)
        task.load()
        try:
            if overwrite:  # once the task could load: a run that cannot start deletes nothing
                _clear(output)
            if getattr(task, "save_artifacts", False):  # refused before anything is written
                refuse_links(output, artifacts_folder(task.name))
            state = _Run(
                task,
                output,
                format,
                resume,
                checkpoint_seconds,
                shard_bytes,
                retry_failed,
                max_consecutive_failures,
            )
            try:
                return _stream(state, rows, limit, progress, batches_in_flight, started)
            except BaseException:
                state.forget()
                raise
            finally:
                state.close()
        finally:
            task.unload()
    finally:
        lock.release()


def _tell_start(model: object, output: Path) -> None:
    """Tells a model that `takes_position` and has `start_at` where the run starts: the
    input rows the folder's checkpoint records (0 without one; `None` when it cannot be
    read, which the run then refuses, saying why)."""
    start_at = getattr(model, "start_at", None)
    if not getattr(model, "takes_position", False) or not callable(start_at):
        return
    try:
        checkpoint = RunFolder(output).checkpoint()
    except RunError:
        start_at(None)
        return
    start_at(0 if checkpoint is None else checkpoint.rows_in)


_RUN_FILES = (CHECKPOINT, SUMMARY, "data.jsonl", DATA, STAGING, RETRY, "artifacts", "batch-jobs")


def _clear(output: Path) -> None:
    """Deletes what a run wrote in `output` (its dataset card too), nothing else."""
    card = output / "README.md"
    if card.is_file() and not card.is_symlink() and b'- "imagetask"' in card.read_bytes():
        card.unlink()
    for name in _RUN_FILES:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _skip_done(state: _Run, numbered: Iterator[tuple[int, Row]], where: Any) -> RowsDigest:
    """Skips the input rows a resumed run had done, checking that they are its rows;
    returns their digest, to be extended with the rows that follow."""
    done = state.resumed_from
    digest = RowsDigest()
    skipped, first, last = 0, None, None
    for index, row in islice(numbered, done):
        if skipped == 0:
            first = (index, row)
        last = (index, row)
        skipped += 1
        digest.add(row)
    if skipped < done:
        raise RunError(f"the input has {skipped:,} rows, but the run to resume had done {done:,}")
    mark = state.checkpoint.input
    for seen, recorded in ((first, mark.first), (last, mark.last)):
        if seen is not None and recorded is not None and row_digest(seen[1]) != recorded:
            raise RunError(
                f"{where(seen[0])}: not the row the run to resume read there: resume it "
                "with the input it started with"
            )
    if last is not None and mark.rows is not None and digest.hexdigest() != mark.rows:
        raise RunError(
            f"{where(last[0])}: the rows up to this one are not the ones the run to resume "
            "read (a row was changed, added or removed): resume it with the input it "
            "started with"
        )
    return digest


def _rest(
    state: _Run, numbered: Iterator[tuple[int, Row]], limit: int | None
) -> Iterator[tuple[int, Row]] | None:
    """The input rows after those done; for a finished run, `None` when there are none
    (or `limit` is reached), else the run is taken up again."""
    if not state.done:
        return numbered
    if limit is not None and limit <= state.resumed_from:
        return None
    following = next(numbered, None)
    if following is None:
        return None
    state.reopen()
    return chain([following], numbered)


def _stream(
    state: _Run,
    rows: Iterable[Row] | Reader,
    limit: int | None,
    progress: bool | Progress,
    batches_in_flight: int,
    started: float,
) -> RunSummary:
    task = state.task
    model = task.image_generation_model
    reporter = progress if isinstance(progress, Progress) else None
    pending: deque[_Pending] = deque()
    # The input is checked before anything is written: a refused resume changes nothing.
    numbered, where = _numbered(rows)
    digest = _skip_done(state, numbered, where)
    rest = _rest(state, numbered, limit)
    if rest is None:
        return state.summary()
    numbered = rest
    most = batches_in_flight
    if callable(getattr(model, "idle_slots", None)):
        most *= _HELD_PER_BATCH_IN_FLIGHT
    workers = Workers(most, "imagetask")
    try:
        if state.retrying:
            state.retry_failed(workers)
        if progress is True:
            reporter = Progress(_total(rows, limit), done=state.resumed_from)
        budget = None if limit is None else max(limit - state.resumed_from, 0)
        stop: ImageTaskError | None = None
        position = state.resumed_from
        while True:
            size = task.input_batch_size if budget is None else min(task.input_batch_size, budget)
            try:
                chunk = list(islice(numbered, size)) if size else []
                if not chunk:
                    break
                columnar = state.format == "parquet"
                pending.append(_start(task, chunk, position, where, workers, columnar, digest))
            except ImageTaskError as exc:
                stop = exc  # a bad input row: the batches before it are written first
                break
            position += len(chunk)
            if budget is not None:
                budget -= len(chunk)
            while len(pending) >= batches_in_flight and _write_oldest_next(pending, model, most):
                state.commit(pending.popleft(), reporter)
        while pending:
            state.commit(pending.popleft(), reporter)
        if stop is not None:
            raise stop
        # A run stopped by `limit` before the input's end can be resumed further.
        complete = budget != 0 or _exhausted(numbered)
        state.ended = "complete" if complete else "limit"
        state.complete(time.monotonic() - started, complete)
        state.finish_sink(complete)
        state.save()
    except RunStopped:
        state.complete(time.monotonic() - started, False)
        state.finish_stopped()
        state.save()
        _report(state)
        raise
    except KeyboardInterrupt:
        state.discard_unrecorded()
        state.complete(time.monotonic() - started, False)
        state.save()
        raise RunInterrupted(state.summary()) from None
    except Exception:
        state.complete(time.monotonic() - started, False)
        state.finish_stopped()
        state.save()
        raise
    finally:
        workers.shutdown()
        if reporter is not None:
            reporter.close()
    return _report(state)


def _write_oldest_next(pending: deque[_Pending], model: Any, most: int) -> bool:
    """Whether to write the oldest batch next (`commit` waits for it) rather than start
    another first: while the oldest still waits on a request (retries, a slow answer) and
    the model has request slots that nothing uses (its `idle_slots`), another batch
    starts, up to `most` held, so that one request does not hold the others back."""
    idle_slots = getattr(model, "idle_slots", None)
    if len(pending) >= most or not callable(idle_slots):
        return True
    oldest = pending[0].generated
    while not wait([oldest], timeout=_POLL_SECONDS).done:
        if idle_slots() > 0:
            return False
    return True


def _exhausted(numbered: Iterator[tuple[int, Row]]) -> bool:
    """Whether the input has no row left (a row that cannot be read counts as one)."""
    try:
        return next(numbered, None) is None
    except ImageTaskError:
        return False


def _total(rows: Iterable[Row] | Reader, limit: int | None) -> int | None:
    if isinstance(rows, Reader):
        total = rows.count()
    else:
        total = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
    if limit is not None:
        return limit if total is None else min(total, limit)
    return total


def _start(
    task: RunnableTask,
    chunk: list[tuple[int, Row]],
    position: int,
    where: Any,
    workers: Workers,
    columnar: bool,
    digest: RowsDigest,
) -> _Pending:
    """Prepares a chunk's batch and sends it to a worker; `digest` (of the rows before
    the chunk) takes the chunk's rows."""
    rows = [row for _, row in chunk]
    for row in rows:
        digest.add(row)
    batch: Batch | ArrowBatch
    try:
        batch = (
            task.prepare_arrow(_table(task, rows, where(chunk[0][0])))
            if columnar
            else task.prepare(rows)
        )
    except InputRowError as exc:
        detail = str(exc).removeprefix(f"row {exc.row} of the batch ")
        raise RunError(f"{where(chunk[exc.row][0])}: the row {detail}") from None
    batch.position = position
    batch.names = lambda row: str(where(chunk[row][0]))
    return _Pending(
        batch,
        workers.submit(batch.generate),
        where(chunk[0][0]),
        row_digest(rows[0]),
        row_digest(rows[-1]),
        digest.hexdigest(),
    )


def _table(task: RunnableTask, rows: list[Row], where: str) -> Any:
    """A batch's input rows as an Arrow table, for the columnar path (Parquet output).

    A row that is not a mapping or lacks a column raises `InputRowError` as
    `process_batch` does; columns whose values cannot share one Arrow type are a
    `RunError` naming the batch's first line.
    """
    arrow = require("pyarrow", "arrow", "writing Parquet")
    if not all(isinstance(row, dict) for row in rows):
        task.prepare(rows)  # raises InputRowError naming the row
    names = dict.fromkeys(name for row in rows for name in row)
    try:
        return arrow.table({name: [row.get(name) for row in rows] for name in names})
    except (arrow.ArrowException, TypeError, ValueError, OverflowError, RecursionError) as exc:
        reason = " ".join(str(exc).split())
        raise RunError(
            f"{where}: the rows of the batch from this row cannot be one Arrow table for "
            f"Parquet (a column's values must share one type): {reason}"
        ) from None


def _rows_table(rows: list[Row], schema: Any) -> Any:
    """Output rows as an Arrow table of `schema` (the output's, to keep its types)."""
    arrow = require("pyarrow", "parquet", "writing Parquet")
    try:
        return arrow.Table.from_pylist(rows, schema=schema)
    except (arrow.ArrowException, TypeError, ValueError, OverflowError) as exc:
        reason = " ".join(str(exc).split())
        raise SinkError(
            f"the rows made again cannot take the output's column types: {reason}"
        ) from None


def _about(state: _Run) -> str:
    """What the run was, for the dataset card."""
    task, done = state.task, state.checkpoint
    model = task.image_generation_model
    generations = done.rows_in * task.num_generations
    status = "complete" if done.complete else "not complete (resume it to go on)"
    return (
        f"# {state.output.name or 'imagetask output'}\n\n"
        f"Images generated with imagetask: task `{type(task).__name__}` (`{task.name}`), "
        f"model `{model.model_name}` ({type(model).__name__}), "
        f"{task.num_generations} generation(s) per input row.\n\n"
        "| input rows | output rows | images | failed generations | run |\n"
        "| --- | --- | --- | --- | --- |\n"
        f"| {done.rows_in:,} | {done.rows_out:,} | {generations - done.failed:,} | "
        f"{done.failed:,} | {status} |\n\n"
        "The task's configuration is in `run.json`; failed generations have a null image "
        f"and their error in `{task.output_schema.metadata}`."
    )


def _report(state: _Run) -> RunSummary:
    """Writes `run.json` for a run that ended (not interrupted)."""
    summary = state.summary()
    images = summary.rows_in * state.task.num_generations - summary.failed
    report = {
        **asdict(summary),
        "data": state.data.name + ("/" if state.data.name == DATA else ""),
        "images": images,
        "rows_per_s": round(summary.rows_in / max(summary.seconds, 1e-9), 1),
        "images_per_s": round(images / max(summary.seconds, 1e-9), 1),
        "task": state.dump,
    }
    write_atomic(state.output / SUMMARY, json.dumps(report, indent=2).encode() + b"\n")
    return summary
