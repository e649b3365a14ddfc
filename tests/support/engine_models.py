"""Backends for the engine tests, which run them in other processes: placeholder images,
with every call recorded in a log file, and one that kills its own process once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from imagetask import Secret, Url
from imagetask.models import PlaceholderImageGeneration
from imagetask.models._base import Answer


def log_lines(log: Path) -> list[list[str]]:
    """The log's records: `[event, pid, prompt]` (`prompt` for `generate` only)."""
    if not log.exists():
        return []
    return [line.split("\t") for line in log.read_text().splitlines()]


class LoggedModel(PlaceholderImageGeneration):
    """Placeholder images; records `load`, `unload` and every prompt sent, with the pid,
    in `log`. A prompt in `fail` gets an error as its answer."""

    log: str
    fail: list[str] = msgspec.field(default_factory=list)

    def _record(self, *fields: str) -> None:
        with open(self.log, "a", encoding="utf-8") as file:
            file.write("\t".join(fields) + "\n")

    def load(self) -> None:
        self._record("load", str(os.getpid()))

    def unload(self) -> None:
        self._record("unload", str(os.getpid()))

    def generate(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:  # type: ignore[override]
        for prompt in inputs:
            self._record("generate", str(os.getpid()), prompt)
        answers = super().generate(inputs, num_generations, **kwargs)
        return [
            ValueError(f"no image for {prompt!r}") if prompt in self.fail else answer
            for prompt, answer in zip(inputs, answers, strict=True)
        ]


class KillOnceModel(LoggedModel):
    """A `LoggedModel` whose process exits (`os._exit`) on its first `generate` call
    anywhere: it creates `marker` first, so the call after the restart goes through."""

    marker: str

    def generate(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:  # type: ignore[override]
        marker = Path(self.marker)
        if not marker.exists():
            marker.touch()
            self._record("killed", str(os.getpid()))
            os._exit(17)
        return super().generate(inputs, num_generations, **kwargs)


class EndpointModel(LoggedModel):
    """A `LoggedModel` configured like a remote backend: a `base_url` (whose user info and
    query a dump masks) and an `api_key` (which a dump leaves out)."""

    base_url: Url[str]
    api_key: Secret[str | None] = None


SCRIPT_CLASSES = """
from __future__ import annotations

import os
from typing import Annotated, Any

import msgspec

from imagetask import ImageGeneration, Secret
from imagetask.models import PlaceholderImageGeneration


class StyledImages(ImageGeneration):
    template: str = "{prompt}, in the style of {style}"

    @property
    def inputs(self) -> list[str]:
        return ["prompt", "style"]

    def format_input(self, input: dict[str, Any]) -> str:
        return self.template.format(**input)


class TaggedModel(PlaceholderImageGeneration):
    tag: Annotated[str, msgspec.Meta(min_length=1)]
    token: Secret[str | None] = None

    @property
    def model_name(self) -> str:
        secret = ", ".join(sorted(type(self).__secret__))
        return f"{self.tag} in process {os.getpid()}, secret: {secret}"


def styled_task() -> StyledImages:
    model = TaggedModel(tag="ink", token="tok-0123456789", size="8x8")
    return StyledImages(
        image_generation_model=model, template="{prompt} in {style}", input_batch_size=2
    )
"""
"""What a user's script or notebook defines at module level, as script text: a task class
with its own hook and a backend class with a constrained and a secret field (annotations
as text), which go to other processes by value."""
