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
request in a way no retry changes (the batch that met it is not written), when
`max_consecutive_failures` generations in a row failed, or before a request whose most
possible cost would take the run's estimated cost past `max_cost` (the model reserves
each request's most in a `CostBudget` before sending it; the budget is for the whole
run, its earlier sessions' cost counted, and the batch that met it is not written).
`retry_failed` makes the failed generations of the rows done again
(`imagetask.run._retry`): the output with them replaced is written beside the old one,
in `.retry/`, checkpointed as it goes, and then takes its place.

This module is the loop: the input read (`_input`), batches started on workers and
written in order into the run's folder (`_state`), the run's record written when it ends
(`_record`).
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, wait
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagetask._durable import refuse_links
from imagetask._runtime import CallDispatcher, Workers
from imagetask.build._artifacts import artifacts_folder
from imagetask.build._schema import with_image_types
from imagetask.errors import (
    ConfigError,
    ImageTaskError,
    InputRowError,
    RunError,
    RunInterrupted,
    RunStopped,
)
from imagetask.io._checkpoint import CHECKPOINT
from imagetask.io._jsonl import OUTPUT_FORMATS, OutputFormat
from imagetask.io._parquet import SHARD_BYTES
from imagetask.io._readers import Reader
from imagetask.models._budget import CostBudget
from imagetask.outcome import RunSummary
from imagetask.run._input import (
    Chunk,
    RowInput,
    TableInput,
    Where,
    exhausted,
    input_of,
    total,
)
from imagetask.run._lock import FolderLock
from imagetask.run._progress import Progress
from imagetask.run._record import write_record
from imagetask.run._retry import retry_failed
from imagetask.run._spool import AnswerSpool
from imagetask.run._state import BatchPlace, RunState, clear, recorded_rows
from imagetask.run._tables import input_table

if TYPE_CHECKING:
    from imagetask.build._batch import Batch
    from imagetask.build._columnar import ArrowBatch
    from imagetask.outcome import Row
    from imagetask.run._runnable import RunnableTask

__all__ = ["CHECKPOINT", "RunSummary", "run"]

_HELD_PER_BATCH_IN_FLIGHT = 8
"""How many batches a run may hold, per batch of `batches_in_flight`, while the oldest
waits on a request and the model has request slots to spare."""
_HELD_IMAGE_BYTES = 256 << 20
"""The images the batches started may hold while they wait for an older one to be
written (as answered, or as expected from the images seen so far): beyond them no other
batch starts, whatever the model's idle request slots."""
_POLL_SECONDS = 0.02
"""How often a run waiting for its oldest batch asks the model whether it has slots to spare."""

_QUICK_CALL_SECONDS = 0.001
"""A model call shorter than this (a local placeholder's) makes the next run on the run's
own thread: a worker thread's handover costs more."""


@dataclass
class _ImageSizes:
    """The images of the batches written so far: what a batch's images are expected to
    weigh before it is answered."""

    images: int = 0
    bytes: int = 0

    def record(self, batch: Batch | ArrowBatch) -> None:
        """Counts the images of an answered batch."""
        self.images += len(batch.prompts) * batch.n
        self.bytes += batch.image_bytes()

    def held(self, pending: deque[_Pending]) -> int:
        """The bytes of images the pending batches hold: as answered, or as expected
        from every answered batch's images."""
        answered: list[Batch | ArrowBatch] = []
        waiting: list[Batch | ArrowBatch] = []
        for item in pending:
            (answered if item.generated.done() else waiting).append(item.batch)
        held = sum(batch.image_bytes() for batch in answered)
        images = self.images + sum(len(batch.prompts) * batch.n for batch in answered)
        each = (self.bytes + held) / images if images else 0.0
        return held + int(sum(len(batch.prompts) * batch.n for batch in waiting) * each)


@dataclass
class _Pending:
    """A batch whose model call runs on a worker, and where it is in the input."""

    batch: Batch | ArrowBatch
    generated: Future[None]
    place: BatchPlace


def _check_options(
    format: Any,
    limit: Any,
    batches_in_flight: Any,
    checkpoint_seconds: Any,
    shard_bytes: Any,
    max_consecutive_failures: Any,
    max_cost: Any,
) -> None:
    if max_cost is not None and (
        isinstance(max_cost, bool)
        or not isinstance(max_cost, (int, float))
        or not math.isfinite(max_cost)
        or max_cost < 0
    ):
        raise ConfigError(
            f"run: max_cost={max_cost!r}: expected None or a number of US dollars >= 0"
        )
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
    max_cost: float | None = None,
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
    output, artifacts, checkpoint) and starts afresh. With `max_cost` (US dollars), no
    request is sent that could take the run's estimated cost, its earlier sessions'
    included, past it: the run stops (`RunStopped`) before the batch that met it; the
    model must price its requests (OpenAI's image models, or `price_per_image`).
    The run holds an exclusive lock on `output_dir` and works on a copy of `task` (its
    `output_dir` set to the folder): the caller's task is left as it was.

    Raises `ConfigError` for a bad option, `RunError` when the folder is in use, holds
    another run or an output that does not match its checkpoint, or for a bad input row
    (after writing the batches before it), `SinkError` for a batch that cannot be
    written (after writing the batches before it), `RunStopped` when it stops early, and
    `RunInterrupted` on Ctrl-C.
    """
    _check_options(
        format,
        limit,
        batches_in_flight,
        checkpoint_seconds,
        shard_bytes,
        max_consecutive_failures,
        max_cost,
    )
    if format == "parquet" and getattr(task, "inline_images", True) is False:
        raise ConfigError(
            "run: format='parquet' keeps each image's bytes in its shards: inline_images=False "
            "is for JSONL runs"
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
    budget = None if max_cost is None else CostBudget(float(max_cost))
    try:
        _use_budget(task.image_generation_model, budget)
        _tell_start(task.image_generation_model, output)
        task.load()
        try:
            if overwrite:  # once the task could load: a run that cannot start deletes nothing
                clear(output)
            if getattr(task, "save_artifacts", False):  # refused before anything is written
                refuse_links(output, artifacts_folder(task.name))
            state = RunState(
                task,
                output,
                format,
                resume=resume,
                checkpoint_seconds=checkpoint_seconds,
                shard_bytes=shard_bytes,
                retry_failed=retry_failed,
                max_consecutive_failures=max_consecutive_failures,
            )
            if budget is not None:
                budget.count_spent(state.checkpoint.cost_usd)
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
        if budget is not None:
            _use_budget(task.image_generation_model, None)
        lock.release()


def _use_budget(model: object, budget: CostBudget | None) -> None:
    """Gives `model` the run's budget (`None`: takes it back); raises `ConfigError` for a
    model that cannot keep to one."""
    use_budget = getattr(model, "use_budget", None)
    if not callable(use_budget):
        if budget is None:
            return
        raise ConfigError(
            f"run: max_cost: {type(model).__name__} does not price its requests one by one, "
            "so it cannot keep to a budget"
        )
    use_budget(budget)


def _tell_start(model: object, output: Path) -> None:
    """Tells a model that `takes_position` and has `start_at` where the run starts: the
    input rows the folder's checkpoint records (see `recorded_rows`)."""
    start_at = getattr(model, "start_at", None)
    if getattr(model, "takes_position", False) and callable(start_at):
        start_at(recorded_rows(output))


def _goes_on(state: RunState, rows: RowInput | TableInput, limit: int | None) -> bool:
    """Whether the run has input rows to do after those done: for a finished run, only
    when a row follows (and `limit` is not reached), and the run is then taken up again."""
    if not state.done:
        return True
    if limit is not None and limit <= state.resumed_from:
        return False
    if not rows.more():
        return False
    state.reopen()
    return True


def _stream(
    state: RunState,
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
    columnar = state.format == "parquet"
    source = input_of(rows, columnar)
    source.skip(state.resumed_from, state.checkpoint.input)
    if not _goes_on(state, source, limit):
        return state.summary()
    most = batches_in_flight
    if callable(getattr(model, "idle_slots", None)):
        most *= _HELD_PER_BATCH_IN_FLIGHT
    workers = Workers(most, "imagetask")
    calls = CallDispatcher(workers, _QUICK_CALL_SECONDS)
    sizes = _ImageSizes()
    spool = AnswerSpool(task, state.output)
    try:
        if state.retrying:
            retry_failed(state, workers)
        if progress is True:
            reporter = Progress(total(rows, limit), done=state.resumed_from)
        budget = None if limit is None else max(limit - state.resumed_from, 0)
        stop: ImageTaskError | None = None
        position = state.resumed_from
        while True:
            size = task.input_batch_size if budget is None else min(task.input_batch_size, budget)
            try:
                chunk = source.take(size) if size else None
                if chunk is None:
                    break
                pending.append(_start(task, chunk, position, source.where, calls, columnar, spool))
            except ImageTaskError as exc:
                stop = exc  # a bad input row: the batches before it are written first
                break
            position += len(chunk.numbers)
            if budget is not None:
                budget -= len(chunk.numbers)
            while len(pending) >= batches_in_flight and _write_oldest_next(
                pending, model, most, sizes, reporter
            ):
                _commit(state, pending.popleft(), sizes, reporter, spool)
        while pending:
            _commit(state, pending.popleft(), sizes, reporter, spool)
        if stop is not None:
            raise stop
        # A run stopped by `limit` before the input's end can be resumed further.
        complete = budget != 0 or exhausted(source)
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
        spool.close()
        if reporter is not None:
            reporter.close()
    return _report(state)


def _commit(
    state: RunState,
    pending: _Pending,
    sizes: _ImageSizes,
    progress: Progress | None,
    spool: AnswerSpool,
) -> None:
    """Waits for the oldest batch's model call, then writes and records it, and lets its
    spooled images go."""
    with nullcontext() if progress is None else progress.waiting():
        pending.generated.result()
    sizes.record(pending.batch)
    state.commit(pending.batch, pending.place, progress)
    spool.release(pending.batch.store)


def _write_oldest_next(
    pending: deque[_Pending],
    model: Any,
    most: int,
    sizes: _ImageSizes,
    progress: Progress | None,
) -> bool:
    """Whether to write the oldest batch next (`commit` waits for it) rather than start
    another first: while the oldest still waits on a request (retries, a slow answer) and
    the model has request slots that nothing uses (its `idle_slots`), another batch
    starts, up to `most` held and `_HELD_IMAGE_BYTES` of images (`sizes`), so that one
    request does not hold the others back."""
    idle_slots = getattr(model, "idle_slots", None)
    if len(pending) >= most or not callable(idle_slots):
        return True
    oldest = pending[0].generated
    with nullcontext() if progress is None else progress.waiting():
        while not wait([oldest], timeout=_POLL_SECONDS).done:
            if idle_slots() > 0 and sizes.held(pending) <= _HELD_IMAGE_BYTES:
                return False
    return True


def _start(
    task: RunnableTask,
    chunk: Chunk,
    position: int,
    where: Where,
    calls: CallDispatcher,
    columnar: bool,
    spool: AnswerSpool,
) -> _Pending:
    """Prepares a chunk's batch and hands its model call to `calls` (a worker, or this
    thread for a quick model), its answers' images going to the `spool`'s next store."""
    numbers = chunk.numbers
    batch: Batch | ArrowBatch
    store = spool.store()
    try:
        if columnar:
            table = (
                with_image_types(chunk.table)
                if chunk.rows is None
                else input_table(task, chunk.rows, where(numbers[0]))
            )
            arrow_batch = task.prepare_arrow(table)
            arrow_batch.spool = spool.target(store)
            batch = arrow_batch
        else:
            batch = task.prepare(chunk.dicts())
    except InputRowError as exc:
        detail = str(exc).removeprefix(f"row {exc.row} of the batch ")
        raise RunError(f"{where(numbers[exc.row])}: the row {detail}") from None
    batch.position = position
    batch.store = store
    batch.names = lambda row: str(where(numbers[row]))
    place = BatchPlace(where(numbers[0]), chunk.mark)
    return _Pending(batch, calls.submit(batch.generate), place)


def _report(state: RunState) -> RunSummary:
    """Writes `run.json` for a run that ended (not interrupted)."""
    summary = state.summary()
    write_record(summary, state.dump)
    return summary
