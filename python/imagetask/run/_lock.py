"""An exclusive lock on an output folder, held by one run at a time."""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path

from imagetask.errors import RunError

__all__ = ["LOCK", "FolderLock"]

LOCK = ".imagetask.lock"
"""The lock file in the folder; it holds the process id of the run that has the lock."""

_LOCKED_BYTE = 64
"""The byte of the lock file that is locked, past the process id (Windows locks forbid
reading what they cover)."""

_BUSY = {errno.EACCES, errno.EAGAIN, errno.EDEADLK}
"""How the system says another process holds the lock."""

_HELD: set[tuple[int, int]] = set()
"""The lock files (device, inode) this process holds: a process's own locks never
conflict at the system level, and closing any descriptor of a file drops them (POSIX)."""

_HELD_GUARD = threading.Lock()


def _lock_byte(descriptor: int) -> None:
    """Locks `_LOCKED_BYTE` at once or raises `OSError` (`msvcrt` on Windows, `lockf`
    elsewhere: the system releases either when its process ends)."""
    os.lseek(descriptor, _LOCKED_BYTE, os.SEEK_SET)
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
    else:
        os.lockf(descriptor, os.F_TLOCK, 1)


def _key(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`, or `None` when there is none."""
    try:
        found = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class FolderLock:
    """A system lock on the folder's lock file, taken at once or not at all.

    The system releases the lock when its holder ends, however it ends (`kill -9`
    included), so a lock is never left stale. Two runs in one process conflict too.

    Raises
    ------
    RunError
        When another run holds the lock (the message names its process id), or the lock
        file is a link (it is never written through).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._descriptor: int | None = None
        with _HELD_GUARD:
            if self.path.is_symlink():
                raise RunError(
                    f"{self.path} is a link: imagetask writes no file through a link; remove "
                    "it and start again"
                )
            if _key(self.path) in _HELD:
                raise self._in_use(folder, str(os.getpid()))
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            descriptor = os.open(self.path, flags | getattr(os, "O_BINARY", 0), 0o666)
            try:
                _lock_byte(descriptor)
            except OSError as exc:
                if exc.errno not in _BUSY:
                    os.close(descriptor)
                    raise
                os.lseek(descriptor, 0, os.SEEK_SET)
                holder = os.read(descriptor, 32).decode("ascii", "replace").strip()
                os.close(descriptor)
                raise self._in_use(folder, holder) from None
            except BaseException:
                os.close(descriptor)
                raise
            stat = os.fstat(descriptor)
            _HELD.add((stat.st_dev, stat.st_ino))
        os.ftruncate(descriptor, 0)
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor
        self._held = (stat.st_dev, stat.st_ino)

    def _in_use(self, folder: Path, holder: str) -> RunError:
        who = f"process {holder}" if holder.isdigit() else "another process"
        return RunError(
            f"{folder} is in use by another run ({who} holds {self.path}): wait for it "
            "to end, or choose another folder"
        )

    def release(self) -> None:
        """Releases the lock (closing the file releases it)."""
        if self._descriptor is not None:
            with _HELD_GUARD:
                os.close(self._descriptor)
                _HELD.discard(self._held)
            self._descriptor = None
