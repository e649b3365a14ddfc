"""Two runs of one configuration compared (answers holding their images against answers
stored as files): the configurations drawn, the task one makes, the rows a run wrote, its
artifact files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hypothesis import strategies as st

from imagetask import ImageGeneration
from imagetask.models import ImageModel
from tests.support.outputs import recorded_table

ARTIFACTS = Path("artifacts/image_generation_0/images")
"""Where a run of `generation_task` saves its images, in its output folder."""


@dataclass(frozen=True)
class RunShape:
    """A drawn run's configuration: images per row and per request, grouped or not, the
    output format, artifacts saved, images inlined in the rows, the prompts."""

    n: int
    per_request: int
    group: bool
    format: Literal["jsonl", "parquet"]
    artifacts: bool
    inline: bool
    prompts: tuple[str, ...]


@st.composite
def run_shapes(draw: st.DrawFn, *, one_per_request: bool = False) -> RunShape:
    """Run configurations; `one_per_request`: a backend that makes one image a request."""
    n = draw(st.integers(1, 3))
    format: Literal["jsonl", "parquet"] = draw(st.sampled_from(["jsonl", "parquet"]))
    artifacts = draw(st.booleans())
    return RunShape(
        n=n,
        per_request=1 if one_per_request else draw(st.sampled_from(sorted({1, n}))),
        group=draw(st.booleans()),
        format=format,
        artifacts=artifacts,
        inline=not (artifacts and format == "jsonl" and draw(st.booleans())),
        # Repeated prompts ask for the same images again.
        prompts=tuple(draw(st.lists(st.sampled_from(["a cat", "a dog", "fog"]), min_size=1))),
    )


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
