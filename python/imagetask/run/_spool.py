"""Where a run's answers put their images: the one place that decides whether a batch's
answers hold `StoredImage` handles (written to disk as each request answers) or the
images themselves.

A task whose hooks are all its own (`takes_stored_images`) gets a store: with
`save_artifacts`, its artifacts folder (the row builder then only records each path);
otherwise a folder of its own per batch under `.spool/` in the output folder (made with
its first image), removed once the batch's rows are written (they hold the images
then). A run removes what a killed run left in `.spool/` when it starts. Any other task
(a user's `format_output`, `complete_rows`, ...) gets none: its answers hold the images,
as outside a run.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Any

from imagetask._core import ImageStore
from imagetask.build._artifacts import ArtifactTarget

__all__ = ["SPOOL", "AnswerSpool"]

SPOOL = ".spool"
"""The folder, inside the output folder, of the images of the batches not written yet."""


class AnswerSpool:
    """The stores of a run's batches (see the module's docstring)."""

    def __init__(self, task: Any, output: Path) -> None:
        self._folder = output / SPOOL
        shutil.rmtree(self._folder, ignore_errors=True)
        self._shared: ImageStore | None = None
        self._enabled = bool(getattr(task, "takes_stored_images", False))
        if self.stores_artifacts(task):
            self._shared = ImageStore(task.artifact_target().folder, durable=True)
        self._numbers = itertools.count()

    @staticmethod
    def stores_artifacts(task: Any) -> bool:
        """Whether a run of `task` stores its answers' images in its artifacts folder
        (rather than in `.spool/`, or not at all): those files are then the rows'
        images until the rows are written, and after. Asks without making the folder."""
        return bool(getattr(task, "takes_stored_images", False)) and bool(
            getattr(task, "save_artifacts", False)
        )

    @staticmethod
    def spools(task: Any) -> bool:
        """Whether a run of `task` spools its answers' images (in `.spool/`, each batch's
        removed once its rows are written)."""
        return bool(getattr(task, "takes_stored_images", False)) and not bool(
            getattr(task, "save_artifacts", False)
        )

    def target(self, store: ImageStore | None) -> ArtifactTarget | None:
        """Where the images of a batch's `store` are, as rows name them (relative to the
        output folder), when it is a spool's (`None`: the artifacts folder, or no store)."""
        if store is None or store is self._shared:
            return None
        return ArtifactTarget(store.folder, f"{SPOOL}/{store.folder.name}")

    def store(self) -> ImageStore | None:
        """The store of the next batch (`None`: its answers hold the images)."""
        if not self._enabled or self._shared is not None:
            return self._shared
        return ImageStore(os.path.join(self._folder, str(next(self._numbers))))

    def release(self, store: ImageStore | None) -> None:
        """A batch's rows are written: the images it spooled go (a store that stored none
        made no folder)."""
        if store is not None and store is not self._shared and store.made:
            shutil.rmtree(store.folder, ignore_errors=True)

    def close(self) -> None:
        """The run ends: whatever is spooled goes."""
        shutil.rmtree(self._folder, ignore_errors=True)
