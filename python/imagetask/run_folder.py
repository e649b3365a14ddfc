"""A run's output folder read back: its task, its rows and their images.

A run folder holds `run.json` (a finished run) or `checkpoint.json` (a run under way or
stopped), each recording the task's dump, and its rows in `data.jsonl`, `data.parquet` or
Hugging Face style shards `data/*.parquet`. An image cell is base64 text (JSONL), bytes
(Parquet), or a `{bytes, path}` struct (the Hugging Face `Image` feature).
"""

from __future__ import annotations

import base64
import binascii
import json
import reprlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from imagetask.errors import ReadError
from imagetask.extras import require
from imagetask.hf_dataset import STAGED_NAME, STAGING
from imagetask.readers import Reader

__all__ = [
    "ImagePayload",
    "RunFolder",
    "image_payload",
    "open_run",
    "read_record",
    "read_rows",
]


@dataclass(frozen=True)
class RunFolder:
    """A run's output folder.

    Attributes
    ----------
    path:
        The folder.
    task:
        The task's dump, as `run.json` or `checkpoint.json` recorded it.
    complete:
        Whether the run went through its whole input.
    data:
        The files holding its rows, in order.
    staged:
        The Arrow streams of a Parquet run that stopped before they became shards, with
        how many of their rows its checkpoint records.
    """

    path: Path
    task: dict[str, Any]
    complete: bool
    data: tuple[Path, ...]
    staged: tuple[tuple[Path, int], ...] = ()

    @property
    def format(self) -> Literal["jsonl", "parquet"]:
        """`jsonl` or `parquet`."""
        return "jsonl" if self.data and self.data[0].suffix == ".jsonl" else "parquet"


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


def read_record(file: Path) -> dict[str, Any]:
    """`run.json` or `checkpoint.json`: a JSON object whose `task` is the dump of a task
    with the fields a run is read back with; a `ReadError` names the file and the fault."""
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except RecursionError:
        raise ReadError(f"{file}: nested too deeply: not written by imagetask") from None
    except (OSError, ValueError) as exc:
        raise ReadError(f"{file}: unreadable: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("task"), dict):
        raise ReadError(f"{file}: no task recorded: not written by imagetask")
    if _nesting(state) > _DEPTH:
        raise ReadError(f"{file}: nested more than {_DEPTH} levels deep: not written by imagetask")
    for field, (valid, what) in _TASK_FIELDS.items():
        value = state["task"].get(field)
        if value is not None and not valid(value):
            raise ReadError(
                f"{file}: the task's `{field}` is {_SHOWN.repr(value)}, not {what}: not "
                "written by imagetask"
            )
    return state


def open_run(folder: str | Path) -> RunFolder:
    """The run in `folder` (an unfinished Parquet run with its staged rows); a
    `ReadError` says why it is not one."""
    path = Path(folder)
    if not path.is_dir():
        raise ReadError(f"{path}: no such folder")
    for name in ("run.json", "checkpoint.json"):
        record = path / name
        if record.is_file():
            state = read_record(record)
            break
    else:
        raise ReadError(f"{path}: not a run folder (it has no run.json or checkpoint.json)")
    data: tuple[Path, ...] = ()
    for pattern in ("data.jsonl", "data.parquet", "data/*.parquet"):
        data = tuple(sorted(path.glob(pattern)))
        if data:
            break
    staged = _staged(path, record, state)
    if not data and not staged:
        raise ReadError(f"{path}: the run has no data.jsonl, data.parquet or data/*.parquet")
    return RunFolder(path, state["task"], bool(state.get("complete")), data, staged)


def _staged(path: Path, record: Path, state: dict[str, Any]) -> tuple[tuple[Path, int], ...]:
    """The staged Arrow streams an unfinished Parquet run's checkpoint records (only
    names the sink writes: nothing outside its staging folder is read)."""
    sink = state.get("sink")
    files = sink.get("staged") if isinstance(sink, dict) else None
    if not isinstance(files, list):
        return ()
    staged = []
    for file in files:
        name, rows = (file.get("name"), file.get("rows")) if isinstance(file, dict) else (0, 0)
        if isinstance(name, str) and isinstance(rows, int) and rows > 0:
            if not STAGED_NAME.fullmatch(name):
                raise ReadError(
                    f"{record}: the sink names {_SHOWN.repr(name)}, not a "
                    f"staged stream of {STAGING}"
                )
            staged.append((path / STAGING / name, rows))
    return tuple(staged)


def read_rows(run: RunFolder) -> Iterator[dict[str, Any]]:
    """The run's rows in order, from every data file; a `ReadError` names the bad line."""
    for file in run.data:
        for _, row in Reader(file, run.format):
            yield row
    for file, rows in run.staged:
        yield from _staged_rows(file, rows)


def _staged_rows(file: Path, rows: int) -> Iterator[dict[str, Any]]:
    """The first `rows` rows of a staged Arrow stream (what the checkpoint records)."""
    arrow = require("pyarrow", "arrow", "reading a Parquet run")
    try:
        with arrow.OSFile(str(file), "rb") as source:
            for batch in arrow.ipc.open_stream(source):
                yield from batch.to_pylist()[:rows]
                rows -= batch.num_rows
                if rows <= 0:
                    return
    except (arrow.ArrowException, OSError) as exc:
        raise ReadError(f"{file}: cannot be read: {exc}") from None


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
