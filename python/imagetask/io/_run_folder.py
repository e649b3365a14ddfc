"""A run's output folder read back: its checkpoint, its record, its rows and their images.

A run folder holds `checkpoint.json` (written from a run's start, see `imagetask.io._checkpoint`),
`run.json` once the run has ended, and its rows in `data.jsonl`, `data.parquet` or Hugging
Face style shards `data/*.parquet`, with the staged Arrow streams of a Parquet run that
stopped before they became shards. `RunFolder` is the one reader of these files for resume,
the gallery, `ReplayModel` (and so `bench --replay`) and the Batch API: each file is read and
checked once, and a fault is the same error whoever reads it, naming the file (and line):
a `RunError` for `checkpoint.json`, a `ReadError` for the others. An image cell is base64
text (JSONL), bytes (Parquet), or a `{bytes, path}` struct (the Hugging Face `Image` feature).
"""

from __future__ import annotations

import base64
import binascii
import json
import reprlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import msgspec

from imagetask._extras import require
from imagetask.errors import ReadError, RunError
from imagetask.io._checkpoint import CHECKPOINT, Checkpoint
from imagetask.io._parquet import STAGED_NAME, STAGING
from imagetask.io._readers import Reader

__all__ = [
    "DATA_NAMES",
    "SUMMARY",
    "ImagePayload",
    "RunFolder",
    "RunRecord",
    "RunRow",
    "StagedStream",
    "image_payload",
    "open_run",
]

SUMMARY = "run.json"
"""The record of a run that ended."""
DATA_NAMES = ("data.jsonl", "data.parquet", "data/")
"""Where a run's rows are, as `run.json` names them."""
_DATA_PATTERNS = ("data.jsonl", "data.parquet", "data/*.parquet")


@dataclass(frozen=True)
class RunRecord:
    """What a run folder records of its run (`run.json`, else `checkpoint.json`).

    Attributes
    ----------
    file:
        The file it was read from.
    task:
        The task's dump, its fields a run is read back with checked.
    complete:
        Whether the run went through its whole input.
    report:
        Everything `run.json` holds (its counts, timings, ...); empty for a checkpoint.
    """

    file: Path
    task: dict[str, Any]
    complete: bool
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StagedStream:
    """A staged Arrow stream of a Parquet run under way, and how many of its rows the
    checkpoint records (the rows after them are not the run's)."""

    path: Path
    rows: int


@dataclass(frozen=True)
class RunRow:
    """One output row of a run, as its file holds it, and where it is (`path line N`,
    `path row N`) for errors."""

    row: dict[str, Any]
    where: str


@dataclass(frozen=True)
class ImagePayload:
    """An image cell: its bytes, or the path of its file, or both (or neither: no image)."""

    data: bytes | None
    path: str | None


_DEPTH = 64
"""The deepest a run's record nests lists and objects (a task's dump nests a few)."""


_SHOWN = reprlib.Repr()
"""Shows a recorded value in an error, cut short when long or deep."""
_SHOWN.maxstring = 160


def _column_names(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(name, str) for name in value.values())


_TASK_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda value: isinstance(value, str), "text"),
    "metadata_column": (lambda value: isinstance(value, str), "text"),
    "input_mappings": (_column_names, "an object of column names"),
    "output_mappings": (_column_names, "an object of column names"),
    "num_generations": (lambda value: type(value) is int and value >= 1, "a count of at least 1"),
    "group_generations": (lambda value: isinstance(value, bool), "true or false"),
    "add_raw_input": (lambda value: isinstance(value, bool), "true or false"),
}
"""The task fields a run is read back with, and what each is when recorded."""


def _nesting(value: Any) -> int:
    """How many levels of lists and objects `value` has (a scalar: 1)."""
    depth, level = 0, [value]
    while level and depth <= _DEPTH:
        depth += 1
        level = [
            item
            for node in level
            if isinstance(node, (dict, list))
            for item in (node.values() if isinstance(node, dict) else node)
        ]
    return depth


def _task_fault(task: dict[str, Any]) -> str | None:
    """What is wrong with a recorded task's dump (`None`: nothing)."""
    for name, (valid, what) in _TASK_FIELDS.items():
        value = task.get(name)
        if value is not None and not valid(value):
            return (
                f"the task's `{name}` is {_SHOWN.repr(value)}, not {what}: not written by imagetask"
            )
    return None


class RunFolder:
    """A run's output folder, read back.

    Each file is read and checked once, when first asked for; nothing is read on creation.

    Parameters
    ----------
    path:
        The folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def ended(self) -> bool:
        """Whether the run has ended (the folder holds `run.json`)."""
        return (self.path / SUMMARY).is_file()

    def checkpoint(self) -> Checkpoint | None:
        """`checkpoint.json`, every key and type checked (`None`: the folder has none).

        Raises `RunError` naming the file and the fault (unreadable, not JSON, nested too
        deeply, a missing or unknown key, a wrong type, a negative count, another version,
        a task field of the wrong type, `sink.rows` other than `rows_out`).
        """
        return self._checkpoint

    @cached_property
    def _checkpoint(self) -> Checkpoint | None:
        path = self.path / CHECKPOINT
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RunError(f"{path}: unreadable checkpoint: {exc}") from None
        fault = f"{path}: not a checkpoint this version can resume"
        try:
            checkpoint = msgspec.json.decode(data, type=Checkpoint, strict=True)
        except msgspec.DecodeError as exc:
            raise RunError(f"{fault}: {exc}") from None
        except RecursionError:
            raise RunError(f"{fault}: nested too deeply") from None
        if checkpoint.sink.get("rows") != checkpoint.rows_out:
            raise RunError(
                f"{fault}: `sink.rows` ({checkpoint.sink.get('rows')!r}) is not `rows_out` "
                f"({checkpoint.rows_out})"
            )
        task_fault = _task_fault(checkpoint.task)
        if task_fault is not None:
            raise RunError(f"{path}: {task_fault}")
        return checkpoint

    def record(self) -> RunRecord:
        """What the folder records of its run: `run.json` when the run has ended (see
        `summary`), else `checkpoint.json` (see `checkpoint`).

        Raises `ReadError` when the folder does not exist or holds neither file.
        """
        return self._record

    @cached_property
    def _record(self) -> RunRecord:
        if self.ended:
            return self.summary()
        if not self.path.is_dir():
            raise ReadError(f"{self.path}: no such folder")
        checkpoint = self.checkpoint()
        if checkpoint is None:
            raise ReadError(f"{self.path}: not a run folder (it has no {SUMMARY} or {CHECKPOINT})")
        return RunRecord(self.path / CHECKPOINT, checkpoint.task, checkpoint.complete)

    def summary(self) -> RunRecord:
        """`run.json`, the record of a run that ended, checked.

        Raises `ReadError` when the folder does not exist or holds no `run.json`, or its
        `run.json` is not one a run writes: a JSON object, at most 64 levels deep, with
        the task's dump (its name text, the fields a run is read back with of the right
        type) and, if any, `data` one of `DATA_NAMES`.
        """
        return self._summary

    @cached_property
    def _summary(self) -> RunRecord:
        if not self.path.is_dir():
            raise ReadError(f"{self.path}: no such folder")
        file = self.path / SUMMARY
        if not file.is_file():
            raise ReadError(
                f"{self.path} holds no finished run (no {SUMMARY}): finish the run first "
                "(imagetask generate ... --resume)"
            )
        try:
            state = json.loads(file.read_text(encoding="utf-8"))
        except RecursionError:
            raise ReadError(f"{file}: nested too deeply: not written by imagetask") from None
        except (OSError, ValueError) as exc:
            raise ReadError(f"{file}: unreadable: {exc}") from None
        if not isinstance(state, dict) or not isinstance(state.get("task"), dict):
            raise ReadError(f"{file}: no task recorded: not written by imagetask")
        if _nesting(state) > _DEPTH:
            raise ReadError(
                f"{file}: nested more than {_DEPTH} levels deep: not written by imagetask"
            )
        task_fault = _task_fault(state["task"])
        if task_fault is not None:
            raise ReadError(f"{file}: {task_fault}")
        if not isinstance(state["task"].get("name"), str):
            raise ReadError(f"{file}: not a run summary (no task name)")
        if "data" in state and state["data"] not in DATA_NAMES:
            raise ReadError(
                f"{file}: `data` is {_SHOWN.repr(state['data'])}, not one of "
                f"{', '.join(DATA_NAMES)}: not a run summary"
            )
        return RunRecord(file, state["task"], bool(state.get("complete")), state)

    @property
    def task(self) -> dict[str, Any]:
        """The task's dump, as the run recorded it."""
        return self.record().task

    @property
    def complete(self) -> bool:
        """Whether the run went through its whole input."""
        return self.record().complete

    @cached_property
    def data(self) -> tuple[Path, ...]:
        """The files holding the run's rows, in order (none: the run has no data file)."""
        for pattern in _DATA_PATTERNS:
            found = tuple(sorted(self.path.glob(pattern)))
            if found:
                return found
        return ()

    @property
    def format(self) -> Literal["jsonl", "parquet"]:
        """`jsonl` or `parquet`."""
        return "jsonl" if self.data and self.data[0].suffix == ".jsonl" else "parquet"

    def staged(self) -> tuple[StagedStream, ...]:
        """The staged Arrow streams of a Parquet run under way, as its checkpoint records
        them (a run that ended has none: its checkpoint is not read). Only names the sink
        writes are read: a `ReadError` names the checkpoint that names another file."""
        return self._staged

    @cached_property
    def _staged(self) -> tuple[StagedStream, ...]:
        checkpoint = None if self.ended else self.checkpoint()  # `run.json` tells the rest
        files = None if checkpoint is None else checkpoint.sink.get("staged")
        if not isinstance(files, list):
            return ()
        staged = []
        for file in files:
            name, rows = (file.get("name"), file.get("rows")) if isinstance(file, dict) else (0, 0)
            if isinstance(name, str) and isinstance(rows, int) and rows > 0:
                if not STAGED_NAME.fullmatch(name):
                    raise ReadError(
                        f"{self.path / CHECKPOINT}: the sink names {_SHOWN.repr(name)}, not a "
                        f"staged stream of {STAGING}"
                    )
                staged.append(StagedStream(self.path / STAGING / name, rows))
        return tuple(staged)

    def check(self) -> None:
        """Checks that the folder holds a run with rows: its record, and a data file or
        staged rows; a `ReadError` (`RunError` for `checkpoint.json`) says what is wrong."""
        self.record()
        if not self.data and not self.staged():
            raise ReadError(
                f"{self.path}: the run has no data.jsonl, data.parquet or data/*.parquet"
            )

    def arrow_schema(self) -> Any:
        """The Arrow schema of a Parquet run's rows (its first shard's, else its first staged
        stream's; `None`: a JSONL run, or no rows); a `ReadError` names the file that cannot
        be read."""
        if self.format != "parquet":
            return None
        arrow = require("pyarrow", "arrow", "reading a Parquet run")
        parquet = require("pyarrow.parquet", "parquet", "reading a Parquet run")
        try:
            if self.data:
                return parquet.read_schema(self.data[0])
            for stream in self.staged():
                with arrow.OSFile(str(stream.path), "rb") as source:
                    return arrow.ipc.open_stream(source).schema
        except (arrow.ArrowException, OSError) as exc:
            file = self.data[0] if self.data else self.staged()[0].path
            raise ReadError(f"{file}: cannot be read: {exc}") from None
        return None

    def rows(self) -> Iterator[RunRow]:
        """The run's rows in order, from every data file then the staged streams, each as
        its file holds it; a `ReadError` names the file and line that cannot be read."""
        for file in self.data:
            reader = Reader(file, self.format)
            for number, row in reader:
                yield RunRow(row, reader.where(number))
        for stream in self.staged():
            yield from _staged_rows(stream)


def open_run(folder: str | Path) -> RunFolder:
    """The run in `folder`, checked (see `RunFolder.check`)."""
    run = RunFolder(folder)
    run.check()
    return run


def _staged_rows(stream: StagedStream) -> Iterator[RunRow]:
    """The rows of a staged Arrow stream that its checkpoint records."""
    arrow = require("pyarrow", "arrow", "reading a Parquet run")
    number, left = 0, stream.rows
    try:
        with arrow.OSFile(str(stream.path), "rb") as source:
            for batch in arrow.ipc.open_stream(source):
                for row in batch.to_pylist()[:left]:
                    number += 1
                    yield RunRow(row, f"{stream.path} row {number}")
                left -= batch.num_rows
                if left <= 0:
                    return
    except (arrow.ArrowException, OSError) as exc:
        raise ReadError(f"{stream.path}: cannot be read: {exc}") from None


def image_payload(value: Any) -> ImagePayload:
    """Reads an image cell: bytes, base64 text, a `{bytes, path}` struct, or `None`.

    Raises `ValueError` for anything else (text that is not base64, another type).
    """
    if value is None:
        return ImagePayload(None, None)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImagePayload(bytes(value), None)
    if isinstance(value, str):
        try:
            return ImagePayload(
                base64.b64decode(value + "=" * (-len(value) % 4), validate=True), None
            )
        except binascii.Error as exc:
            raise ValueError(f"the image text is not base64 ({exc})") from None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if (data is None or isinstance(data, bytes)) and (path is None or isinstance(path, str)):
            return ImagePayload(data or None, path or None)
    raise ValueError(
        f"an image is bytes, base64 text or a {{bytes, path}} struct, not {type(value).__name__}"
    )
