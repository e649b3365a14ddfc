"""An exclusive lock on an output folder, held by one run at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from imagetask.errors import RunError

__all__ = ["LOCK", "FolderLock"]

LOCK = ".imagetask.lock"
"""The lock file in the folder; it holds the process id of the run that has the lock."""


class FolderLock:
    """`flock(LOCK_EX)` on the folder's lock file, taken at once or not at all.

    The kernel releases the lock when its holder ends, however it ends (`kill -9`
    included), so a lock is never left stale. Two runs in one process conflict too.

    Raises
    ------
    RunError
        When another run holds the lock; the message names its process id.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
            os.close(descriptor)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunError(
                f"{folder} is in use by another run ({who} holds {self.path}): wait for it "
                "to end, or choose another folder"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        """Releases the lock (closing the file releases it)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
