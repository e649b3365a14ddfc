"""The answered images of the Batch API outside a run, kept on disk until their batch's
rows are built.

A run gives the backend its own `ImageStore` (see `imagetask.models._store`): the
answers then hold `StoredImage` handles, and the run removes their files once the rows
are written. Outside a run nothing would remove them, so the backend keeps a spool: an
`ImageStore` of its own whose every image is counted by the answers holding it. The
output files are read natively into it (each image decoded once, written under its
SHA-256, a file there whole), and each answer holds `SpooledImage`s. Reading one (when
the batch builds its rows) hands its bytes over, and a file goes once every answer
naming it was read. A spool holds nothing a resumed run needs (the jobs' output files
stay at OpenAI, and a resumed run reads them again), so opening one empties its folder.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from imagetask._core import ImagesAnswer, ImageStore, StoredImage

__all__ = ["SPOOL_DIR", "Spool", "SpooledAnswer", "SpooledImage", "SpooledLine"]

SPOOL_DIR = "spool"
"""The folder of the spool, in the backend's `jobs_dir`."""


@dataclass(frozen=True)
class SpooledImage:
    """One answered image in a spool (an `ImageFile`): its SHA-256, its length and the
    store's handle of its file.

    `read()` gives its bytes once (the batch building its rows); `release()` gives it
    up unread (an answer that becomes a failure)."""

    sha256: str
    size: int
    stored: StoredImage = field(repr=False, compare=False)
    spool: Spool = field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        return Path(self.stored.path)

    def read(self) -> bytes:
        """The image's bytes; the file goes once every holder read or released it."""
        return self.spool.take(self)

    def release(self) -> None:
        """Gives the image up without reading it."""
        self.spool.drop(self)


@dataclass(frozen=True)
class SpooledAnswer:
    """An Images API body read into a spool: per image, a `SpooledImage` (or, as the
    store gives them, the text of an image that is none, the bytes of one in no known
    format, `None` for a `url`), its `url` and `revised_prompt`, and the body's `usage`
    (JSON text)."""

    images: list[SpooledImage | bytes | str | None]
    urls: list[str | None]
    revised_prompts: list[str | None]
    usage: str | None


@dataclass(frozen=True)
class SpooledLine:
    """A line of a Batch API file read into a spool (as `imagetask._core.OutputLine`): a
    wanted request's 200 answer, its images spooled, or the line whole."""

    custom_id: str | None
    answer: SpooledAnswer | None
    line: bytes | None


class Spool:
    """A folder of content-addressed images, each counted by the answers holding it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._holders: Counter[str] = Counter()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self._store = ImageStore(folder)

    def read_batch_output(self, file: IO[bytes], wanted: set[str]) -> list[SpooledLine]:
        """Reads a Batch API output or error file from its current position, the
        `b64_json` images of the `wanted` requests' answers stored in the spool (see
        `ImageStore.read_batch_output`)."""
        with self._lock:
            # Under the lock: an image written (or found written) here is held before the
            # last holder of an equal one may remove its file.
            return [
                SpooledLine(line.custom_id, self._spooled(line.answer), line.line)
                for line in self._store.read_batch_output(file.fileno(), wanted)
            ]

    def _spooled(self, answer: ImagesAnswer | None) -> SpooledAnswer | None:
        if answer is None:
            return None
        images = [self._hold(image) for image in answer.images]
        return SpooledAnswer(images, answer.urls, answer.revised_prompts, answer.usage)

    def _hold(self, image: StoredImage | bytes | str | None) -> SpooledImage | bytes | str | None:
        if not isinstance(image, StoredImage):
            return image
        self._holders[image.sha256] += 1
        return SpooledImage(image.sha256, image.size, image, self)

    def take(self, image: SpooledImage) -> bytes:
        """The bytes of `image`, given up by its holder."""
        with self._lock:
            self._check_held(image)
        data = image.stored.read()
        self.drop(image)
        return data

    def drop(self, image: SpooledImage) -> None:
        """One holder of `image` gives it up; the last one removes its file."""
        digest = image.sha256
        with self._lock:
            self._check_held(image)
            self._holders[digest] -= 1
            if not self._holders[digest]:
                del self._holders[digest]
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
