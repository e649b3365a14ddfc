"""A flaky backend for tests of how a run ends and retries: the placeholder backend
failing, refusing or crashing as the module's `OUTAGE` says."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from imagetask import ImageGeneration
from imagetask.errors import RequestRefused
from imagetask.models import PlaceholderImageGeneration
from tests.support.outputs import recorded_table

ERROR = "error_image_generation_0"
META = "distilabel_metadata"


class Outage:
    """What the flaky model does: fail every generation of these prompts, fail only the
    last generation of those, refuse these, or crash (a process killed) at a call."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.down: set[str] = set()
        self.short: set[str] = set()
        self.refused: set[str] = set()
        self.crash_at: int | None = None
        self.calls: list[tuple[list[str], int]] = []


OUTAGE = Outage()


class Crash(BaseException):
    """Stands for `kill -9`: nothing after it runs but `finally` blocks."""


class Flaky(PlaceholderImageGeneration):
    """The placeholder backend, failing as `OUTAGE` says."""

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        if OUTAGE.crash_at is not None and len(OUTAGE.calls) >= OUTAGE.crash_at:
            raise Crash
        OUTAGE.calls.append((list(inputs), num_generations))
        answers: list[Any] = super().generate(inputs, num_generations, **kwargs)
        for index, prompt in enumerate(inputs):
            if prompt in OUTAGE.refused:
                answers[index] = RequestRefused("401: the key was refused")
            elif prompt in OUTAGE.down:
                answers[index] = RuntimeError("the server is down")
            elif prompt in OUTAGE.short:
                answers[index] = answers[index][:-1]
        return answers


def fresh_outage() -> Iterator[Outage]:
    """For an autouse fixture: `OUTAGE` reset before and after each test."""
    OUTAGE.reset()
    yield OUTAGE
    OUTAGE.reset()


def make_task(format: str = "jsonl", **fields: Any) -> ImageGeneration:
    fields.setdefault("input_batch_size", 3)
    fields.setdefault("num_generations", 2)
    return ImageGeneration(
        image_generation_model=Flaky(size="4x4"),
        images_as_bytes=format == "parquet",
        save_artifacts=True,
        **fields,
    )


def output(out: Path, format: str) -> list[dict[str, Any]]:
    """The output's rows, images as bytes."""
    if format == "jsonl":
        rows = [
            msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()
        ]
        for row in rows:
            image = row["image"]
            row["image"] = (
                [part and base64.b64decode(part) for part in image]
                if isinstance(image, list)
                else image and base64.b64decode(image)
            )
        return rows
    table = recorded_table(out)
    images = table.column("image").to_pylist()
    rows = table.drop_columns(["image"]).to_pylist()
    for row, image in zip(rows, images, strict=True):
        row["image"] = (
            [part and part["bytes"] for part in image]
            if isinstance(image, list)
            else image and image["bytes"]
        )
    return rows
