"""The answered images of the Batch API, kept on disk until their batch's rows are built.

Each image is decoded from its answer line once and written to the spool folder under
its SHA-256 (to a temporary name, then renamed: a file there is whole), and the answer
holds a `SpooledImage` naming it. Reading a `SpooledImage` (when the batch builds its
rows) hands its bytes over, and a file goes once every answer naming it was read. A
spool holds nothing a resumed run needs (the jobs' output files stay at OpenAI, and a
resumed run reads them again), so opening one empties its folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SPOOL_DIR", "Spool", "SpooledImage"]

SPOOL_DIR = "spool"
"""The folder of the spool, in the backend's `jobs_dir`."""


@dataclass(frozen=True)
class SpooledImage:
    """One answered image in a spool: its SHA-256 (the file's name) and its length.

    `read()` gives its bytes once (the batch building its rows); `release()` gives it
    up unread (an answer that becomes a failure)."""

    sha256: str
    size: int
    spool: Spool = field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.spool.folder / self.sha256

    def read(self) -> bytes:
        """The image's bytes; the file goes once every holder read or released it."""
        return self.spool.take(self)

    def release(self) -> None:
        """Gives the image up without reading it."""
        self.spool.drop(self)


class Spool:
    """A folder of content-addressed images, each counted by the answers holding it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._holders: Counter[str] = Counter()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def put(self, image: bytes) -> SpooledImage:
        """Keeps `image` (written once however many answers hold it)."""
        digest = hashlib.sha256(image).hexdigest()
        with self._lock:
            if not self._holders[digest]:
                self._write(digest, image)
            self._holders[digest] += 1
        return SpooledImage(digest, len(image), self)

    def _write(self, digest: str, image: bytes) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(image)
            os.replace(temporary, self.folder / digest)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        # Not synced: a crash loses the spool, and a resumed run reads the jobs' files again.

    def take(self, image: SpooledImage) -> bytes:
        """The bytes of `image`, given up by its holder."""
        with self._lock:
            self._check_held(image)
        data = image.path.read_bytes()
        self.drop(image)
        return data

    def drop(self, image: SpooledImage) -> None:
        """One holder of `image` gives it up; the last one removes its file."""
        with self._lock:
            self._check_held(image)
            self._holders[image.sha256] -= 1
            if not self._holders[image.sha256]:
                del self._holders[image.sha256]
                image.path.unlink(missing_ok=True)

    def _check_held(self, image: SpooledImage) -> None:
        if self._holders[image.sha256] <= 0:
            raise ValueError(f"the spooled image {image.sha256} was already given up")

    def held(self) -> int:
        """How many images the spool holds."""
        with self._lock:
            return len(self._holders)

    def remove(self) -> None:
        """Deletes the folder and everything in it."""
        with self._lock:
            self._holders.clear()
            shutil.rmtree(self.folder, ignore_errors=True)
