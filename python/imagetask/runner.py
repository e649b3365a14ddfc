"""Running a task over a whole dataset: streamed in batches, checkpointed, resumable.

The output folder holds `data.jsonl` (or `data.parquet`), `artifacts/` when the task saves
them, `checkpoint.json` and, once the run has ended, `run.json`. Each batch's rows are
appended whole, after its artifacts are on disk; then, at most every `checkpoint_seconds`,
the output is synced and the checkpoint records how many input rows are done and where
the output ends. A resumed run cuts the output back to that point and goes on with the
next input row, so a crash at any moment loses nothing and repeats nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagetask.errors import ImageTaskError, InputRowError, RunError, RunInterrupted
from imagetask.progress import Progress
from imagetask.readers import Reader
from imagetask.sinks import OutputFormat, fsync_dir, open_sink

if TYPE_CHECKING:
    from imagetask.batch import Batch
    from imagetask.task import ImageTask, Row

__all__ = ["CHECKPOINT", "RunSummary", "run"]

CHECKPOINT = "checkpoint.json"
SUMMARY = "run.json"
_VERSION = 1
_FREE_TASK_FIELDS = frozenset({"output_dir", "input_batch_size"})
_FREE_MODEL_FIELDS = frozenset({"max_concurrency", "max_retries", "timeout", "retry_backoff"})


@dataclass(frozen=True)
class RunSummary:
    """What a run did, as recorded in `run.json`."""

    output: str
    rows_in: int
    rows_out: int
    failed: int
    seconds: float
    resumed_from: int
    complete: bool


@dataclass
class _Pending:
    """A batch whose model call runs in the pool."""

    batch: Batch
    generated: Future[None]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes `path` all or nothing: a synced temporary file renamed over it."""
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def _identity(dump: dict[str, Any]) -> dict[str, Any]:
    """The part of a task's dump that decides its output rows."""
    task = {name: value for name, value in dump.items() if name not in _FREE_TASK_FIELDS}
    model = task.get("image_generation_model")
    if isinstance(model, dict):
        task["image_generation_model"] = {
            name: value for name, value in model.items() if name not in _FREE_MODEL_FIELDS
        }
    return task


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))
    return f"`{path}` was {json.dumps(old)}, now {json.dumps(new)}"


class _Run:
    def __init__(
        self,
        task: ImageTask,
        output: Path,
        format: OutputFormat,
        resume: bool,
        checkpoint_seconds: float,
    ) -> None:
        self.task = task
        self.checkpoint_seconds = checkpoint_seconds
        self._saved = time.monotonic()
        self.output = output
        self.format = format
        output.mkdir(parents=True, exist_ok=True)
        if hasattr(task, "output_dir"):
            task.set_runtime_parameters({"output_dir": str(output)})
        self.dump = task.dump()
        self.checkpoint = output / CHECKPOINT
        state = self._previous(resume)
        self.state: dict[str, Any] = state or {
            "version": _VERSION,
            "format": format,
            "task": self.dump,
            "rows_in": 0,
            "rows_out": 0,
            "failed": 0,
            "seconds": 0.0,
            "complete": False,
            "sink": None,
        }
        self.resumed_from = self.state["rows_in"]
        self.sink = open_sink(output, format, self.state["sink"]) if not self.done else None
        if state is None:
            self.save()  # a run killed before its first checkpoint can be resumed too

    @property
    def done(self) -> bool:
        return bool(self.state["complete"])

    def _previous(self, resume: bool) -> dict[str, Any] | None:
        data = [self.output / f"data.{kind}" for kind in ("jsonl", "parquet")]
        if not self.checkpoint.exists():
            if any(path.exists() for path in data):
                raise RunError(
                    f"{self.output} holds output without a {CHECKPOINT}: choose an empty folder"
                )
            return None
        if not resume:
            raise RunError(
                f"{self.output} already holds a run ({CHECKPOINT}): resume it (--resume) "
                "or choose an empty folder"
            )
        try:
            state: dict[str, Any] = json.loads(self.checkpoint.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.checkpoint}: unreadable checkpoint: {exc}") from None
        if state.get("version") != _VERSION:
            raise RunError(f"{self.checkpoint}: checkpoint version {state.get('version')!r}")
        if state["format"] != self.format:
            raise RunError(
                f"{self.output}: the run writes {state['format']}, not {self.format}: "
                f"resume it with the same format"
            )
        old, new = _identity(state["task"]), _identity(self.dump)
        if old != new:
            raise RunError(
                f"{self.output}: the task differs from the run's: {_first_difference(old, new)}"
            )
        return state

    def commit(self, pending: _Pending, progress: Progress | None) -> None:
        pending.generated.result()
        batch = pending.batch
        output = batch.finish()
        failed = len(output.failures)
        assert self.sink is not None
        self.sink.write(output.rows)
        state = self.state
        state["rows_in"] += batch.size
        state["rows_out"] += len(output.rows)
        state["failed"] += failed
        state["sink"] = self.sink.state()
        if time.monotonic() - self._saved >= self.checkpoint_seconds:
            self.save()
        if progress is not None:
            generations = batch.size * self.task.num_generations
            progress.update(batch.size, generations - failed, failed)

    def save(self) -> None:
        """Syncs the output, then records the checkpoint that points to its end."""
        if self.sink is not None:
            self.sink.sync()
        _write_json(self.checkpoint, self.state)
        self._saved = time.monotonic()

    def summary(self, seconds: float) -> RunSummary:
        state = self.state
        return RunSummary(
            output=str(self.output),
            rows_in=state["rows_in"],
            rows_out=state["rows_out"],
            failed=state["failed"],
            seconds=round(state["seconds"] + seconds, 3),
            resumed_from=self.resumed_from,
            complete=state["complete"],
        )


def _numbered(rows: Iterable[Row] | Reader) -> tuple[Iterator[tuple[int, Row]], Any]:
    if isinstance(rows, Reader):
        return iter(rows), rows.where
    return enumerate(rows), lambda index: f"input row {index}"


def run(
    task: ImageTask,
    rows: Iterable[Row] | Reader,
    output_dir: str | Path,
    *,
    format: OutputFormat = "jsonl",
    resume: bool = False,
    limit: int | None = None,
    progress: bool | Progress = False,
    batches_in_flight: int = 2,
    checkpoint_seconds: float = 1.0,
) -> RunSummary:
    """Runs `task` over `rows` into `output_dir`; see the module's docstring.

    `rows` is any iterable of dicts, or a `Reader` (then errors name the file's line).
    `limit` caps the input rows of the whole run (resumed ones included); a run it
    stopped before the input's end is not complete, and resuming it goes further. Batches of
    `task.input_batch_size` rows are generated `batches_in_flight` at a time while the
    finished ones are written in order; memory stays bounded whatever the input size.
    The output is synced and the checkpoint written at most every `checkpoint_seconds`
    (and when the run ends or stops): a crash repeats at most that much work.
    Raises `RunError` for a bad input row (after writing the batches before it) and
    `RunInterrupted` on Ctrl-C.
    """
    if batches_in_flight < 1:
        raise ValueError("batches_in_flight must be >= 1")
    if format == "parquet" and not task.images_as_bytes:
        raise RunError(
            "format='parquet' stores images as bytes: create the task with images_as_bytes=True"
        )
    started = time.monotonic()
    task.load()
    try:
        state = _Run(task, Path(output_dir), format, resume, checkpoint_seconds)
        try:
            if state.done:
                return state.summary(0.0)
            return _stream(state, rows, limit, progress, batches_in_flight, started)
        finally:
            if state.sink is not None:
                state.sink.close()
    finally:
        task.unload()


def _stream(
    state: _Run,
    rows: Iterable[Row] | Reader,
    limit: int | None,
    progress: bool | Progress,
    batches_in_flight: int,
    started: float,
) -> RunSummary:
    task = state.task
    numbered, where = _numbered(rows)
    skipped = sum(1 for _ in islice(numbered, state.resumed_from))
    if skipped < state.resumed_from:
        raise RunError(
            f"the input has {skipped:,} rows, but the run to resume had done {state.resumed_from:,}"
        )
    reporter = progress if isinstance(progress, Progress) else None
    if progress is True:
        reporter = Progress(_total(rows, limit), done=state.resumed_from)
    pending: deque[_Pending] = deque()
    pool = ThreadPoolExecutor(max_workers=batches_in_flight, thread_name_prefix="imagetask")
    budget = None if limit is None else max(limit - state.resumed_from, 0)
    try:
        try:
            while True:
                size = (
                    task.input_batch_size if budget is None else min(task.input_batch_size, budget)
                )
                chunk = list(islice(numbered, size)) if size else []
                if not chunk:
                    break
                if budget is not None:
                    budget -= len(chunk)
                pending.append(_start(task, chunk, where, pool))
                while len(pending) >= batches_in_flight:
                    state.commit(pending.popleft(), reporter)
            while pending:
                state.commit(pending.popleft(), reporter)
        except ImageTaskError:
            while pending:
                state.commit(pending.popleft(), reporter)
            state.save()
            raise
        # A run stopped by `limit` before the input's end can be resumed further.
        complete = budget != 0 or next(numbered, None) is None
        assert state.sink is not None
        state.sink.finish(final=complete)
        state.state["complete"] = complete
    except KeyboardInterrupt:
        raise RunInterrupted(_finish(state, started, ended=False)) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if reporter is not None:
            reporter.close()
    return _finish(state, started, ended=True)


def _total(rows: Iterable[Row] | Reader, limit: int | None) -> int | None:
    if isinstance(rows, Reader):
        total = rows.count()
    else:
        total = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
    if limit is not None:
        return limit if total is None else min(total, limit)
    return total


def _start(
    task: ImageTask,
    chunk: list[tuple[int, Row]],
    where: Any,
    pool: ThreadPoolExecutor,
) -> _Pending:
    try:
        batch = task.prepare([row for _, row in chunk])
    except InputRowError as exc:
        detail = str(exc).removeprefix(f"row {exc.row} of the batch ")
        raise RunError(f"{where(chunk[exc.row][0])}: the row {detail}") from None
    return _Pending(batch, pool.submit(batch.generate))


def _finish(state: _Run, started: float, *, ended: bool) -> RunSummary:
    """Records the time spent and, for a run that ended (not interrupted), `run.json`."""
    seconds = time.monotonic() - started
    state.state["seconds"] = round(state.state["seconds"] + seconds, 3)
    state.save()
    summary = state.summary(0.0)
    if ended:
        images = summary.rows_in * state.task.num_generations - summary.failed
        _write_json(
            state.output / SUMMARY,
            {
                **asdict(summary),
                "data": f"data.{state.format}",
                "images": images,
                "rows_per_s": round(summary.rows_in / max(summary.seconds, 1e-9), 1),
                "images_per_s": round(images / max(summary.seconds, 1e-9), 1),
                "task": state.dump,
            },
        )
    return summary
