"""`RunState`: a run's output folder as the run goes: its checkpoint, its sink and the
image files to sync.

Opening it starts a new run (the checkpoint written before the first byte of output) or
takes up the run the folder holds, once its format and its task's identity are checked
to be the run's; then each generated batch is written whole and recorded, and the
checkpoint is written at most every `checkpoint_seconds`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from imagetask._core import StoredImage
from imagetask._durable import fsync_dir
from imagetask._extras import require
from imagetask.build._columnar import ArrowOutput
from imagetask.errors import BudgetReached, RunError, RunStopped, SinkError
from imagetask.io._checkpoint import (
    CHECKPOINT,
    VERSION,
    Checkpoint,
    InputMark,
    RetryMark,
    write_checkpoint,
)
from imagetask.io._identity import UrlDigests, output_identity
from imagetask.io._image_files import ImageFiles
from imagetask.io._jsonl import JsonlSink, OutputFormat, ParquetSink, empty_state, open_sink
from imagetask.io._parquet import DATA, STAGING
from imagetask.io._run_folder import SUMMARY, RunFolder
from imagetask.outcome import BatchOutput, Cost, Ending, RunSummary
from imagetask.run._images import ImageSync, image_paths
from imagetask.run._record import dataset_card
from imagetask.run._spool import SPOOL, AnswerSpool
from imagetask.run._streak import FailureStreak
from imagetask.run._tables import empty_schema

if TYPE_CHECKING:
    from imagetask.build._batch import Batch
    from imagetask.build._columnar import ArrowBatch
    from imagetask.run._progress import Progress
    from imagetask.run._runnable import RunnableTask

__all__ = ["RETRY", "BatchPlace", "RunState", "clear", "recorded_rows"]

RETRY = ".retry"
"""The folder, inside the output folder, where a retry writes the output that replaces it."""
_OUTPUTS = ("data.jsonl", DATA, STAGING)
"""What a run writes its rows to: a folder holding any of them without a checkpoint is
refused."""
_RUN_FILES = (
    CHECKPOINT,
    SUMMARY,
    "data.jsonl",
    DATA,
    STAGING,
    RETRY,
    SPOOL,
    "artifacts",
    "batch-jobs",
)


@dataclass(frozen=True)
class BatchPlace:
    """Where a batch is in the run's input.

    Attributes
    ----------
    where:
        How log lines and errors name its first row.
    input:
        The digests of its first and last rows, and of the input up to its last.
    """

    where: str
    input: InputMark


class RunState:
    """A run's output folder: its checkpoint, its sink and the image files to sync (see
    the module).

    Attributes
    ----------
    checkpoint:
        What the run has recorded so far (written to the folder by `save`).
    sink:
        Where the rows go (`None` once the run has nothing left to do).
    retrying:
        Whether the failed generations of the rows done are to be made again.
    ended:
        How the run ended, once it has.
    fresh:
        Whether the run is a new one (the folder held none).
    resumed_from:
        The input rows the run had done when it was opened.
    """

    def __init__(
        self,
        task: RunnableTask,
        output: Path,
        format: OutputFormat,
        *,
        resume: bool,
        checkpoint_seconds: float,
        shard_bytes: int,
        retry_failed: bool = False,
        max_consecutive_failures: int = 0,
    ) -> None:
        self.task = task
        self.checkpoint_seconds = checkpoint_seconds
        self.streak = FailureStreak(max_consecutive_failures)
        self.ended: Ending = "complete"
        self.retrying = False
        self._saved = time.monotonic()
        self.output = output
        self.format = format
        self.dump = task.dump()
        self.path = output / CHECKPOINT
        self.data = output / (DATA if format == "parquet" else "data.jsonl")
        self.images = ImageSync(output)
        schema = task.output_schema
        self.path_column = schema.image_path
        self.image_column = schema.image
        options: dict[str, Any] = {}
        if format == "parquet":
            spooled = AnswerSpool.spools(task)
            options = {
                "empty_schema": empty_schema(task),
                "image_column": schema.columns[schema.image_output],
                "path_column": self.path_column,
                "source_columns": schema.image_inputs,
                "shard_bytes": shard_bytes,
                "image_root": output if spooled or AnswerSpool.stores_artifacts(task) else None,
                "spooled": spooled,
            }
        root = options.get("image_root")
        self._image_files = None if root is None else ImageFiles(root)
        self.sink_options = options
        """The options every sink of the run is opened with (`open_sink`)."""
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
        """The checkpoint of the run the folder holds, checked to be the task's run."""
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

    def commit(
        self, batch: Batch | ArrowBatch, place: BatchPlace, progress: Progress | None
    ) -> None:
        """Writes a generated batch whole, or raises `SinkError` having written none of it
        (the checkpoint then stays at the batch before)."""
        refusal = batch.refusal()
        if isinstance(refusal, BudgetReached):
            self.ended = "budget"
            raise RunStopped(
                f"{place.where}: {refusal}; the run stopped before this batch, "
                f"{self._made()}, at an estimated cost of {self.cost.describe(0)}: to go on, "
                "run again with resume and a larger max_cost (--resume --max-cost USD)"
            )
        if refusal is not None:
            self.ended = "refused"
            raise RunStopped(
                f"{place.where}: the model refused the request, which no retry changes: "
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
                f"{place.where}: the batch from this row cannot be written, so the run "
                f"stops with the rows before it: {exc}"
            ) from None
        if self.path_column is not None:
            rows = (
                output.table.column(self.path_column).to_pylist()
                if isinstance(output, ArrowOutput)
                else [row.get(self.path_column) for row in output.rows]
            )
            self.images.add(image_paths(rows))
        written = output.table.num_rows if isinstance(output, ArrowOutput) else len(output.rows)
        cost = self.cost + batch.cost()
        done = self.checkpoint
        # One assignment: a Ctrl-C lands before or after it, never halfway.
        mark = place.input
        if done.rows_in:
            mark = msgspec.structs.replace(mark, first=done.input.first)
        self.checkpoint = msgspec.structs.replace(
            done,
            input=mark,
            rows_in=done.rows_in + batch.size,
            rows_out=done.rows_out + written,
            failed=done.failed + failed,
            sink=self.sink.state(),
            cost_usd=cost.usd,
            priced_images=cost.images,
        )
        if self.due():
            self.save()
        n = self.task.num_generations
        if progress is not None:
            image_bytes = _image_bytes(output, self.image_column, self._image_files)
            progress.update(batch.size, batch.size * n - failed, failed, image_bytes)
        reached = self.streak.add(output.failures, batch.size, n)
        if reached is not None:
            self.ended = "failures"
            raise RunStopped(
                f"{batch.where(reached.row)}: {self.streak.count:,} generations failed in a "
                f"row (the last: {reached.error}), so the run stopped {self._made()}: fix "
                "the cause, then make them again with resume and retry_failed "
                "(--resume --retry-failed)"
            )

    @property
    def cost(self) -> Cost:
        """The estimated cost of the images the run recorded, over all its sessions."""
        return Cost(self.checkpoint.cost_usd, self.checkpoint.priced_images)

    def add_cost(self, cost: Cost) -> None:
        """Counts `cost` (of images made again by a retry) in the run's cost."""
        total = self.cost + cost
        self.checkpoint = msgspec.structs.replace(
            self.checkpoint, cost_usd=total.usd, priced_images=total.images
        )

    def _made(self) -> str:
        done = self.checkpoint
        images = done.rows_in * self.task.num_generations - done.failed
        return f"after {done.rows_in:,} input rows ({images:,} images, {done.failed:,} failed)"

    def due(self) -> bool:
        """Whether `checkpoint_seconds` have passed since the checkpoint was last written."""
        return time.monotonic() - self._saved >= self.checkpoint_seconds

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

    def start_retry(self) -> RetryMark:
        """How far the retry of the failed generations got (see `imagetask.run._retry`):
        for a retry that had not begun, its folder made and its start recorded."""
        mark = self.checkpoint.retry
        if mark is None:
            (self.output / RETRY).mkdir()
            mark = RetryMark(rows_in=0, rows_out=0, failed=0, sink=empty_state(self.format))
            self.checkpoint = msgspec.structs.replace(self.checkpoint, retry=mark)
            write_checkpoint(self.path, self.checkpoint)
        return mark

    def save_retry(self, sink: JsonlSink | ParquetSink, mark: RetryMark) -> None:
        """Syncs a retry's new output and its image files, then records how far it got."""
        sink.sync()
        self.images.wait()
        self.checkpoint = msgspec.structs.replace(self.checkpoint, retry=mark)
        write_checkpoint(self.path, self.checkpoint)
        sink.saved(mark.sink)
        self._saved = time.monotonic()

    def end_retry(self) -> None:
        """Once a retry's whole output is recorded: puts it in the old output's place and
        opens it to go on."""
        assert self.sink is not None
        self.sink.close()
        assert self.checkpoint.retry is not None
        self.checkpoint = self._swap(self.checkpoint, self.checkpoint.retry)
        self.sink = open_sink(self.output, self.format, self.checkpoint.sink, **self.sink_options)
        self.retrying = False

    def card(self) -> str:
        """The text of the output's dataset card, as the run stands."""
        return dataset_card(self.task, self.checkpoint, self.output)

    def reopen(self) -> None:
        """Takes a finished run up again (its input grew): opens its output where the
        checkpoint ends it and removes `run.json`, which is for a run that has ended."""
        self.checkpoint = msgspec.structs.replace(self.checkpoint, complete=False)
        self.sink = open_sink(self.output, self.format, self.checkpoint.sink, **self.sink_options)
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
        self.images.wait()
        write_checkpoint(self.path, self.checkpoint)
        if self.sink is not None:
            self.sink.saved(self.checkpoint.sink)
        self._saved = time.monotonic()

    def complete(self, seconds: float, complete: bool) -> None:
        """Records the run's time spent, `seconds` more, and whether it is complete."""
        self.checkpoint = msgspec.structs.replace(
            self.checkpoint,
            complete=complete,
            seconds=round(self.checkpoint.seconds + seconds, 3),
        )

    def finish_sink(self, final: bool) -> None:
        """Completes the output (the last Parquet shard, the dataset card)."""
        assert self.sink is not None
        self.sink.finish(final=final, about=self.card())
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
        """What the run has done so far."""
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
            cost_usd=state.cost_usd if state.priced_images else None,
            priced_images=state.priced_images,
        )

    def close(self) -> None:
        self.images.close()
        if self.sink is not None:
            self.sink.close()


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))
    return f"`{path}` was {json.dumps(old)}, now {json.dumps(new)}"


def recorded_rows(output: Path) -> int | None:
    """The input rows the checkpoint in `output` records as done (0 without one; `None`
    when it cannot be read, which a run then refuses, saying why)."""
    try:
        checkpoint = RunFolder(output).checkpoint()
    except RunError:
        return None
    return 0 if checkpoint is None else checkpoint.rows_in


def clear(output: Path) -> None:
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


def _image_bytes(
    output: BatchOutput | ArrowOutput, column: str | None, files: ImageFiles | None
) -> int:
    """How many bytes the images of a batch's output hold (base64 text counted as the
    bytes it encodes, a path-only image as its file's when `files` finds them)."""
    if column is None:
        return 0
    if isinstance(output, ArrowOutput):
        arrow = require("pyarrow", "arrow", "Parquet output")
        compute = require("pyarrow.compute", "arrow", "Parquet output")
        images = output.table.column(column)
        if arrow.types.is_list(images.type) or arrow.types.is_large_list(images.type):
            images = compute.list_flatten(images)
        sizes = compute.binary_length(compute.struct_field(images, "bytes"))
        total = int(compute.sum(sizes).as_py() or 0)
        if files is not None:
            total += sum(files.sizes(output.table.column(column)))
        return total
    total = 0
    for row in output.rows:
        value = row.get(column)
        for image in value if isinstance(value, list) else [value]:
            if isinstance(image, StoredImage):
                total += image.size
            elif isinstance(image, (bytes, bytearray)):
                total += len(image)
            elif isinstance(image, str):
                total += len(image) * 3 // 4
    return total
