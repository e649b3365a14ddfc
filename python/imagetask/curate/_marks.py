"""The marks file: which images of a run to keep or reject, as the gallery page exports it
and `imagetask select` reads it.

```json
{"format": "imagetask-marks", "version": 1, "run": "<run folder name>",
 "marks": [{"input": 0, "generation": 1, "sha256": "<hex>", "mark": "reject"}]}
```

- `run` is the name of the run folder the marks were made on (its last path part).
- An image is named by `input`, the 0-based index of its input row in the run's output
  order, `generation`, its 0-based generation of that row, and `sha256`, the hex SHA-256
  of its bytes. Output row numbers are not used: a retry or a grown input shifts them.
- `mark` is `keep` or `reject`. An image without a mark is kept; at most one mark per
  image.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from imagetask._durable import write_atomic
from imagetask.errors import ReadError

__all__ = ["MARKS_FORMAT", "MARKS_VERSION", "Mark", "Marks", "read_marks", "write_marks"]

MARKS_FORMAT = "imagetask-marks"
MARKS_VERSION = 1

_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"input", "generation", "sha256", "mark"}


@dataclass(frozen=True)
class Mark:
    """The mark of one image: `input` row (0-based, in the run's output order),
    `generation` of that row (0-based), `sha256` of its bytes (hex), `keep` or `reject`."""

    input: int
    generation: int
    sha256: str
    mark: Literal["keep", "reject"]

    @property
    def image(self) -> str:
        """How an error names the image."""
        return f"input {self.input} generation {self.generation}"


@dataclass(frozen=True)
class Marks:
    """A marks file: the name of the run folder it was made on and its marks, in order."""

    run: str
    marks: tuple[Mark, ...]

    def rejected(self) -> int:
        """How many images are marked `reject`."""
        return sum(mark.mark == "reject" for mark in self.marks)


def _index(value: Any) -> bool:
    return type(value) is int and value >= 0


def _mark(entry: Any, where: str) -> Mark:
    """One entry of `marks`, checked; `ReadError` naming `where` and the fault."""
    if not isinstance(entry, dict):
        raise ReadError(f"{where}: not an object")
    missing = sorted(_KEYS - set(entry))
    if missing:
        raise ReadError(f"{where}: no `{missing[0]}`")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ReadError(f"{where}: unknown key `{unknown[0]}`")
    for key in ("input", "generation"):
        if not _index(entry[key]):
            raise ReadError(f"{where}: `{key}` is {entry[key]!r}, not a 0-based index")
    if not (isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"])):
        raise ReadError(f"{where}: `sha256` is not 64 lowercase hex digits")
    if entry["mark"] not in ("keep", "reject"):
        raise ReadError(f"{where}: `mark` is {entry['mark']!r}, not keep or reject")
    return Mark(entry["input"], entry["generation"], entry["sha256"], entry["mark"])


def read_marks(path: str | Path) -> Marks:
    """Reads and checks a marks file.

    Raises `ReadError` naming the file (and the entry, `marks[i]`) when it cannot be read,
    is not JSON, is not a marks file of this version, or an entry is malformed or marks an
    image a second time.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise ReadError(f"{path}: not a readable marks file: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != MARKS_FORMAT:
        raise ReadError(f'{path}: not a marks file (no "format": "{MARKS_FORMAT}")')
    if data.get("version") != MARKS_VERSION:
        raise ReadError(f"{path}: marks file version {data.get('version')!r}, not {MARKS_VERSION}")
    if not isinstance(data.get("run"), str) or not data["run"]:
        raise ReadError(f"{path}: `run` is not the name of a run folder")
    if not isinstance(data.get("marks"), list):
        raise ReadError(f"{path}: `marks` is not a list")
    marks = []
    seen: dict[tuple[int, int], int] = {}
    for number, entry in enumerate(data["marks"]):
        mark = _mark(entry, f"{path}: marks[{number}]")
        first = seen.setdefault((mark.input, mark.generation), number)
        if first != number:
            raise ReadError(
                f"{path}: marks[{number}]: {mark.image} is marked already (marks[{first}])"
            )
        marks.append(mark)
    return Marks(data["run"], tuple(marks))


def write_marks(path: str | Path, marks: Marks) -> None:
    """Writes `marks` as a marks file at `path` (all or nothing)."""
    data = {
        "format": MARKS_FORMAT,
        "version": MARKS_VERSION,
        "run": marks.run,
        "marks": [
            {"input": m.input, "generation": m.generation, "sha256": m.sha256, "mark": m.mark}
            for m in marks.marks
        ],
    }
    write_atomic(Path(path), (json.dumps(data, indent=1) + "\n").encode())
