"""Two runs of one configuration compared (answers holding their images against answers
stored as files): the task a drawn configuration makes, the rows a run wrote, its
artifact files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from imagetask import ImageGeneration
from imagetask.models import ImageModel
from tests.support.outputs import recorded_table

ARTIFACTS = Path("artifacts/image_generation_0/images")
"""Where a run of `generation_task` saves its images, in its output folder."""


class RunShape(Protocol):
    """What a drawn configuration says of the task: images per row, grouped or not,
    artifacts saved, images inlined in the rows."""

    @property
    def n(self) -> int: ...
    @property
    def group(self) -> bool: ...
    @property
    def artifacts(self) -> bool: ...
    @property
    def inline(self) -> bool: ...


def generation_task(backend: ImageModel, shape: RunShape) -> ImageGeneration:
    """The `ImageGeneration` of `shape` over `backend`, in batches of 2 rows."""
    return ImageGeneration(
        image_generation_model=backend,
        num_generations=shape.n,
        group_generations=shape.group,
        save_artifacts=shape.artifacts,
        inline_images=shape.inline,
        input_batch_size=2,
    )


def written_rows(out: Path, format: str) -> list[dict[str, Any]]:
    """The rows a run wrote in `out` (`format`: "jsonl" or "parquet"), as read back."""
    if format == "jsonl":
        return [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    rows: list[dict[str, Any]] = recorded_table(out).to_pylist()
    return rows


def artifacts_of(out: Path) -> dict[str, bytes]:
    """The bytes of each image file of a run's artifacts, by name."""
    folder = out / ARTIFACTS
    return {path.name: path.read_bytes() for path in folder.iterdir()} if folder.is_dir() else {}
