"""Writing a run's files: all or nothing, durable (fsync) before anything records them,
and never through a link planted in the folder."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from pathlib import Path
from typing import Any

from imagetask.errors import RunError

__all__ = [
    "RECYCLE_BYTES",
    "OutputFile",
    "fsync_and_uncache",
    "fsync_dir",
    "fsync_file",
    "own_folder",
    "refuse_links",
    "sync_and_uncache",
    "write_atomic",
]

_NEW_FILE = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)  # Windows: no newline translation
)


RECYCLE_BYTES = 16 * 2**20
"""How much of a long file the run writes and does not read back (the JSONL output, a
Parquet shard) is written between two `sync_and_uncache` of it, so that what the kernel
holds of it stays small and its pages serve the next writes soon. On a virtual machine
whose host takes back the guest's free pages, a write into pages never given back costs
several times more system time (`benches/bench_page_cache.py`: 800 MB at 110 MB/s,
1.56 s never given back, 0.46 s every 16 MB)."""


def fsync_dir(folder: Path) -> None:
    """Makes a folder's entries (a file created or renamed into it) durable."""
    if os.name == "nt":  # Windows opens no folder as a file; its renames are durable
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: Path) -> None:
    """Makes a file's content durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_and_uncache(path: Path) -> None:
    """`sync_and_uncache` of the file at `path`."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        sync_and_uncache(descriptor)
    finally:
        os.close(descriptor)


def sync_and_uncache(descriptor: int) -> None:
    """Makes an open file's content durable, then tells the kernel its cached pages will
    not be read again soon (where the system has `posix_fadvise`): they go back to the
    pages the next writes take (see `RECYCLE_BYTES`)."""
    os.fsync(descriptor)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)


class OutputFile(io.FileIO):
    """A file the run writes and does not read back (the JSONL output, a Parquet shard):
    each `write` written whole, and every `RECYCLE_BYTES` written synced and its cached
    pages given back (`sync_and_uncache`)."""

    def __init__(self, path: Path, mode: str) -> None:
        super().__init__(path, mode)
        self._unsynced = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += super().write(view[done:]) or 0
        self._unsynced += done
        if self._unsynced >= RECYCLE_BYTES:
            self.sync()
        return done

    def sync(self) -> None:
        """Makes what was written durable, and gives its pages back."""
        sync_and_uncache(self.fileno())
        self._unsynced = 0


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Writes `path` all or nothing: a new file of its own beside it, synced when `durable`,
    renamed over it.

    The temporary file has a random name and is created exclusively, never through a link
    (mode 0o666 less the umask, as any file the process makes); the rename replaces a link
    at `path` rather than writing where it points.
    """
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            descriptor = os.open(temp, _NEW_FILE, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        fsync_dir(path.parent)


def own_folder(path: Path) -> Path:
    """Makes the folder `path` (and its missing parents); a link in its place is removed
    first (only the link), so nothing written in the folder lands where the link points."""
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def refuse_links(folder: Path, relative: str) -> None:
    """Raises `RunError` when a folder on the way from `folder` to `folder/relative` (a
    run's own subfolder) is a link: files written there would land where it points."""
    path = folder
    for part in Path(relative).parts:
        path = path / part
        if path.is_symlink():
            raise RunError(
                f"{path} is a link: imagetask writes no file through a link; remove it and "
                "start again"
            )
