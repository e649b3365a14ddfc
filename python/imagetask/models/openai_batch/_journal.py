"""The journal of a batch backend: which jobs were submitted for which batch, kept on disk.

Every record is appended and synced before the step it makes possible: a job's input file
is recorded before the job is created (so a job created just before a crash is found again
by its input file), the job's id right after. A record cut short by a crash is dropped
when the journal is read again; the step it announced had not happened.

Records, one JSON object per line:

```
{"version": 1}                                                 the first line
{"entry": 3, "key": "<sha256>", "offset": 1500, "rows": 500, "requests": 500}
                                                               a batch of prompts begins
{"job": "file-abc", "entry": 3, "custom_ids": [...], "time": 1.7e9}  its input file
{"batch": "batch_abc", "job": "file-abc"}                      the job created from it
{"delivered": 3}                                                its answers were returned
```
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from imagetask._durable import fsync_dir
from imagetask.errors import RunError

__all__ = ["JOURNAL", "Entry", "Job", "Journal"]

JOURNAL = "journal.jsonl"
_VERSION = 1


@dataclass
class Job:
    """One batch job: its input file, the requests in it and, once created, its id."""

    file: str
    custom_ids: list[str]
    time: float
    batch: str | None = None


@dataclass
class Entry:
    """The jobs of one batch of prompts (one `generate` call), identified by `key`.

    Attributes
    ----------
    id:
        The entry's number in the journal.
    key:
        The hash of the batch's requests: the same batch sent again has the same key.
    offset:
        The number of input rows of the run before this batch (of prompts, when the
        caller does not say): where it is in the run.
    delivered:
        When its answers were returned (a sequence number; `None`: never).
    earlier:
        Whether it was recorded before the journal was opened (by an earlier run).
    """

    id: int
    key: str
    offset: int
    rows: int
    requests: int
    jobs: list[Job] = field(default_factory=list)
    delivered: int | None = None
    earlier: bool = False


class _Begun(msgspec.Struct):
    """A batch of prompts begins."""

    entry: int
    key: str
    offset: int
    rows: int
    requests: int


class _Uploaded(msgspec.Struct):
    """A job's input file, uploaded."""

    job: str
    entry: int
    custom_ids: list[str]
    time: float


class _Created(msgspec.Struct):
    """The job created from an input file."""

    batch: str
    job: str


class _Delivered(msgspec.Struct):
    """An entry's answers were returned."""

    delivered: int


class Journal:
    """The entries of one folder's journal (in memory only when `folder` is `None`).

    `claim(key, offset)` hands each recorded entry to at most one batch between two
    `reset`s. When the run's start is known (`reset(start)`: the input rows a resumed run
    had already written), an entry is still wanted if it lies at or after the start, or
    was never delivered (its answers cannot have been written); among the wanted
    entries of that key, the one at the same offset, else the first. When the start is
    unknown, the undelivered entries of that key come first (in the order they began),
    then the delivered ones, the most recently delivered first.
    """

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / JOURNAL if folder is not None else None
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._jobs: dict[str, Job] = {}
        self._claimed: set[int] = set()
        self._start: int | None = None
        self._deliveries = 0
        self._fd: int | None = None
        if self.path is not None:
            self._open(self.path)

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if new:
            fsync_dir(path.parent)
            self._append({"version": _VERSION})
            return
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            os.ftruncate(self._fd, len(complete))
            os.fsync(self._fd)
        for number, line in enumerate(complete.splitlines(), 1):
            try:
                record = json.loads(line)
                self._replay(record, number)
            except ValueError as exc:
                raise RunError(f"{path}, line {number}: unreadable journal record: {exc}") from None
            except RecursionError:
                raise RunError(
                    f"{path}, line {number}: unreadable journal record: nested too deeply"
                ) from None
        if not complete:
            self._append({"version": _VERSION})
        for entry in self._entries:
            entry.earlier = True

    def _replay(self, record: Any, number: int) -> None:
        """Applies one record read back; raises `ValueError` for a record of the wrong
        shape or naming an entry or job recorded nowhere before it."""
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if "version" in record:
            if record["version"] != _VERSION or number != 1:
                raise ValueError(f"journal version {record['version']!r}")
        elif "key" in record:
            begun = msgspec.convert(record, _Begun)
            if begun.entry != len(self._entries):
                raise ValueError(f"entry {begun.entry} where entry {len(self._entries)} comes next")
            self._entries.append(
                Entry(begun.entry, begun.key, begun.offset, begun.rows, begun.requests)
            )
        elif "batch" in record:
            created = msgspec.convert(record, _Created)
            if created.job not in self._jobs:
                raise ValueError(f"no job {created.job!r}")
            self._jobs[created.job].batch = created.batch
        elif "job" in record:
            uploaded = msgspec.convert(record, _Uploaded)
            job = Job(uploaded.job, uploaded.custom_ids, uploaded.time)
            self._entry(uploaded.entry).jobs.append(job)
            self._jobs[job.file] = job
        elif "delivered" in record:
            delivered = msgspec.convert(record, _Delivered)
            self._deliveries += 1
            self._entry(delivered.delivered).delivered = self._deliveries
        else:
            raise ValueError(f"unknown record {sorted(record)}")

    def _entry(self, number: int) -> Entry:
        """The entry recorded as `number`."""
        if not 0 <= number < len(self._entries):
            raise ValueError(f"no entry {number}")
        return self._entries[number]

    def _append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        os.write(self._fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")
        os.fsync(self._fd)

    def reset(self, start: int | None) -> None:
        """Makes every entry claimable again, for a run that starts at prompt `start`
        (`None`: unknown)."""
        with self._lock:
            self._claimed.clear()
            self._start = start

    def claim(self, key: str, offset: int) -> Entry | None:
        """The recorded entry for the batch of `key` at `offset`, if any (see the class)."""
        with self._lock:
            free = [e for e in self._entries if e.key == key and e.id not in self._claimed]
            start = self._start
            if start is not None:
                wanted = [e for e in free if e.offset >= start or e.delivered is None]
                wanted.sort(key=lambda entry: entry.offset != offset)
            else:
                wanted = [entry for entry in free if entry.delivered is None]
                wanted += sorted(
                    (entry for entry in free if entry.delivered is not None),
                    key=lambda entry: -(entry.delivered or 0),
                )
            if not wanted:
                return None
            self._claimed.add(wanted[0].id)
            return wanted[0]

    def begin(self, key: str, offset: int, rows: int, requests: int) -> Entry:
        """Records (and claims) a new entry."""
        with self._lock:
            entry = Entry(len(self._entries), key, offset, rows, requests)
            record = {"entry": entry.id, "key": key, "offset": offset}
            self._append({**record, "rows": rows, "requests": requests})
            self._entries.append(entry)
            self._claimed.add(entry.id)
            return entry

    def uploaded(self, entry: Entry, file: str, custom_ids: list[str], time: float) -> Job:
        """Records a job's input file, before the job is created."""
        with self._lock:
            job = Job(file, custom_ids, time)
            self._append({"job": file, "entry": entry.id, "custom_ids": custom_ids, "time": time})
            entry.jobs.append(job)
            self._jobs[file] = job
            return job

    def created(self, job: Job, batch: str) -> None:
        """Records the id of the job created from `job.file`."""
        with self._lock:
            self._append({"batch": batch, "job": job.file})
            job.batch = batch

    def delivered(self, entry: Entry) -> None:
        """Records that the entry's answers were returned."""
        with self._lock:
            self._append({"delivered": entry.id})
            self._deliveries += 1
            entry.delivered = self._deliveries

    def left_over(self) -> list[Entry]:
        """Entries of earlier runs never delivered and not claimed since the last `reset`."""
        with self._lock:
            return [
                entry
                for entry in self._entries
                if entry.earlier and entry.delivered is None and entry.id not in self._claimed
            ]

    def close(self) -> None:
        """Closes the journal's file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
