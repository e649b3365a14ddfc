"""The built-in offline backend: placeholder pictures made from the prompt (and, for an
edit, from the source images)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from imagetask import _core
from imagetask.config import RuntimeParameter
from imagetask.errors import ConfigError
from imagetask.models._base import Answer, EditInput, ImageGenerationModel, check_edit_inputs
from imagetask.models._store import answer_store

__all__ = ["PlaceholderImageGeneration", "parse_size"]

_STORED_FROM = 64 * 1024
"""The size from which a run's answer store gets a placeholder image: a batch holds little
of smaller ones, and a file each (written, then removed with its batch's spool) cost far
more than it spared (100,000 prompts at 4x4 ran at a tenth of a plain loop's speed)."""

_SIZE = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
_MAX_SIDE = 8192


def parse_size(size: str) -> tuple[int, int]:
    """`"WIDTHxHEIGHT"` as `(width, height)`; a `ValueError` names what is wrong."""
    found = _SIZE.match(size)
    if found is None:
        raise ValueError(f"size {size!r} is not WIDTHxHEIGHT (e.g. '256x256')")
    width, height = int(found.group(1)), int(found.group(2))
    if max(width, height) > _MAX_SIDE:
        raise ValueError(f"size {size!r} is larger than {_MAX_SIDE} pixels on a side")
    return width, height


class PlaceholderImageGeneration(ImageGenerationModel):
    """Makes placeholder pictures, not model output: no network, no GPU, no extra.

    Each picture is a PNG of `size` pixels (a two-colour gradient with a coloured block)
    whose colours are derived from the prompt, `seed` and the generation index: distinct
    per generation and identical across runs. It is for trying a pipeline end to end,
    testing and benchmarking; the pictures show nothing of the prompt. The PNGs are
    encoded natively with the GIL released. Each image's raw output holds the seed, its
    statistics the PNG's size.

    It edits too (an `ImageEditingModel`): an edit's pictures are those of a prompt made
    of the sha256 of the source images and mask and of the instruction, so they differ
    with any byte of the sources (the pictures show nothing of the sources either).

    `generation_kwargs` may set `size` and `seed` for every call.
    """

    size: RuntimeParameter[str] = "256x256"
    seed: RuntimeParameter[int] = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._checked(self.size, self.seed, self.generation_kwargs)

    def _checked(self, size: Any, seed: Any, kwargs: dict[str, Any]) -> tuple[int, int, int]:
        cls = type(self).__name__
        unknown = sorted(set(kwargs) - {"size", "seed"})
        if unknown:
            raise ConfigError(
                f"{cls}: unknown generation kwargs {unknown}: it takes `size` and `seed`"
            )
        size = kwargs.get("size", size)
        seed = kwargs.get("seed", seed)
        try:
            width, height = parse_size(size) if isinstance(size, str) else parse_size(repr(size))
        except ValueError as exc:
            raise ConfigError(f"{cls}: bad `size`: {exc}") from None
        if type(seed) is not int or not 0 <= seed < 2**64:
            raise ConfigError(f"{cls}: bad `seed` = {seed!r}: expected an int in [0, 2**64)")
        return width, height, seed

    @property
    def model_name(self) -> str:
        return "placeholder"

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> list[Answer]:
        width, height, seed = self._checked(self.size, self.seed, kwargs)
        answers: list[Answer] = _core.placeholder_answers(
            inputs,
            num_generations=num_generations,
            seed=seed,
            width=width,
            height=height,
            store=answer_store(),
            stored_from=_STORED_FROM,
        )
        return answers

    def edit(
        self, inputs: list[EditInput], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:
        """Edits each input: the pictures of `_edit_key(input)` as a prompt."""
        check_edit_inputs(type(self).__name__, inputs)
        keys = [_edit_key(input) for input in inputs]
        return [answer for answer in self.generate(keys, num_generations, **kwargs)]


def _edit_key(input: EditInput) -> str:
    """The prompt whose pictures stand for an edit: the digest of the sources, then the
    instruction."""
    digest = hashlib.sha256()
    for image in input.images:
        digest.update(hashlib.sha256(image.data).digest())
    if input.mask is not None:
        digest.update(b"mask" + hashlib.sha256(input.mask.data).digest())
    return f"{digest.hexdigest()}:{input.prompt}"
