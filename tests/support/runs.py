"""Runs of the placeholder backend and what their folders record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from imagetask import ImageGeneration
from imagetask.models import PlaceholderImageGeneration


def make_task(**fields: Any) -> ImageGeneration:
    fields.setdefault("input_batch_size", 3)
    return ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"), **fields)


def prompts(count: int) -> list[dict[str, Any]]:
    return [{"prompt": f"prompt {i}", "id": i} for i in range(count)]


def lines(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


def checkpoint(out: Path) -> dict[str, Any]:
    return json.loads((out / "checkpoint.json").read_text())  # type: ignore[no-any-return]


def rows_done(out: Path) -> int:
    """The input rows the checkpoint records as done (0 before the first)."""
    try:
        return int(json.loads((out / "checkpoint.json").read_text())["rows_in"])
    except (OSError, ValueError):
        return 0


class StopsAt30(PlaceholderImageGeneration):
    """Stops the run (as Ctrl-C does) when the prompt p30 comes."""

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        if "p30" in inputs:
            raise KeyboardInterrupt
        return super().generate(inputs, num_generations, **kwargs)
