"""Writing a run's files: all or nothing, durable (fsync) before anything records them,
and never through a link planted in the folder."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from imagetask.errors import RunError

__all__ = [
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
    pages the next writes take, which on a virtual machine cost far less than pages the
    guest never touched (writing 600 MB: 0.2 s of CPU against 1.4 s)."""
    os.fsync(descriptor)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)


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
