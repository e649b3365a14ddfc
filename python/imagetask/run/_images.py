"""`ImageSync`: the image files of written batches made durable on a few threads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from imagetask._durable import fsync_and_uncache, fsync_dir

__all__ = ["ImageSync", "image_paths"]

_SYNC_THREADS = 4
"""Threads that fsync image files (concurrent fsyncs share the file system's journal commits)."""


class ImageSync:
    """fsyncs the image files of written batches on a few threads, while the next batches
    are generated, then gives their pages back to the page cache (the run does not read
    them again, and writes into reused pages cost less); `wait` (before a checkpoint)
    waits for them and syncs their folders."""

    def __init__(self, output: Path) -> None:
        self._output = output
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._seen: set[str] = set()
        self._folders: set[Path] = set()

    def add(self, paths: Iterable[str]) -> None:
        """Starts syncing the files at `paths` (relative to the output folder)."""
        for relative in paths:
            if relative in self._seen:
                continue
            self._seen.add(relative)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_SYNC_THREADS, "imagetask-fsync")
            path = self._output / relative
            self._pending.append(self._pool.submit(fsync_and_uncache, path))
            self._folders.add(path.parent)

    def wait(self) -> None:
        """Returns once every file added and its folders up to the output are durable."""
        for done in self._pending:
            done.result()
        folders = set(self._folders)
        for folder in self._folders:
            folders.update(parent for parent in folder.parents if self._output in parent.parents)
        for folder in folders:
            fsync_dir(folder)
        self._pending.clear()
        self._seen.clear()
        self._folders.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def image_paths(values: list[Any]) -> Iterator[str]:
    """The image paths of a batch's path column (lists of them when grouped)."""
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (path for path in value if isinstance(path, str))
