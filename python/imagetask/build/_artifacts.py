"""Image artifacts: content-addressed files under `artifacts/<task name>/images/`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagetask import _core
from imagetask._durable import refuse_links, write_atomic
from imagetask._extras import require
from imagetask.outcome import Failure

if TYPE_CHECKING:
    from imagetask.build._schema import OutputSchema

__all__ = ["ArtifactTarget", "artifact_target", "artifacts_folder", "converter", "write_artifacts"]


def artifacts_folder(task_name: str) -> str:
    """Where a task's images go, relative to the output folder."""
    return f"artifacts/{task_name}/images"


def converter(image_format: str) -> Callable[[bytes], bytes]:
    """Re-encodes image bytes in `image_format` (Pillow's name), unless already in it."""
    image = require("PIL.Image", "images", f"image_format={image_format!r}")

    def convert(data: bytes) -> bytes:
        with image.open(io.BytesIO(data)) as picture:
            if picture.format == image_format:
                return data
            out = io.BytesIO()
            picture.save(out, format=image_format)
            return out.getvalue()

    return convert


def _write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    """Writes `metadata.json` once per artifact folder (all or nothing: threads and
    processes may write the folder at once)."""
    target = folder / "metadata.json"
    if target.exists():
        return
    write_atomic(target, (json.dumps(metadata, indent=2) + "\n").encode())


@dataclass(frozen=True)
class ArtifactTarget:
    """Where a batch's image files go: `folder`, recorded in rows as `prefix/<name>`."""

    folder: Path
    prefix: str


def artifact_target(
    *, task_name: str, model_name: str, output_dir: Path, image_format: str | None
) -> ArtifactTarget:
    """Makes a task's artifact folder (and its `metadata.json`) under `output_dir`;
    `RunError` when a folder on the way is a link (nothing is written through it)."""
    prefix = artifacts_folder(task_name)
    refuse_links(output_dir, prefix)
    images = output_dir / prefix
    images.mkdir(parents=True, exist_ok=True)
    _write_metadata(
        images.parent,
        {
            "type": "image",
            "task": task_name,
            "model_name": model_name,
            "naming": "sha256 of the file's bytes, extension from its format",
            "format": image_format or "as generated",
        },
    )
    return ArtifactTarget(images, prefix)


def write_artifacts(
    rows: list[dict[str, Any]],
    *,
    target: ArtifactTarget,
    schema: OutputSchema,
    image_format: str | None,
    num_generations: int,
    keep_images: bool = True,
) -> list[Failure]:
    """Saves the image of every row and sets its path column; returns the failures, each
    naming its input row and generation (`rows` are a batch's output rows: one per input
    row when grouped, else `num_generations` per input row). `keep_images=False` then
    removes the image column from every row. The rows are saved one at a time, so that no
    more than one row's images are copied at once."""
    image_column = schema.columns[schema.image_output]
    convert = converter(image_format) if image_format else None
    failures: list[Failure] = []
    for index, row in enumerate(rows):
        written = _core.write_artifacts(
            [row],
            image_column=image_column,
            path_column=schema.columns["image_path"],
            metadata_column=schema.metadata,
            error_key=schema.error,
            folder=target.folder,
            prefix=target.prefix,
            convert=convert,
        )
        row_in, first = (index, 0) if schema.grouped else divmod(index, num_generations)
        failures.extend(Failure(row_in, first + k, error) for _, k, error in written)
        if not keep_images:
            del row[image_column]
    return failures
