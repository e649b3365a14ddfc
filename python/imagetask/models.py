"""Image generation backends: the base classes every backend derives from."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Annotated, Any, Protocol, runtime_checkable

import msgspec

from imagetask.config import Configurable, RuntimeParameter
from imagetask.runtime import BackgroundLoop

__all__ = [
    "Answer",
    "AsyncImageGenerationModel",
    "ImageGenerationModel",
    "ImageModel",
]

Answer = list[dict[str, Any]]
"""One input's answer: dicts of `{"images": [str | bytes, ...], ...}`."""


@runtime_checkable
class ImageModel(Protocol):
    """What a task needs of a backend; a distilabel image model is one as it is."""

    @property
    def model_name(self) -> str: ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def generate(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> Sequence[Answer | BaseException]: ...


class ImageGenerationModel(Configurable, ABC):
    """A synchronous image generation backend.

    Subclasses implement `model_name` and `generate`, and may override `load` and
    `unload` to acquire and release resources.
    """

    generation_kwargs: RuntimeParameter[dict[str, Any]] = msgspec.field(default_factory=dict)

    @property
    @abstractmethod
    def model_name(self) -> str:
        """The name recorded in the `model_name` column."""

    def load(self) -> None:
        """Acquires what `generate` needs (clients, weights)."""

    def unload(self) -> None:
        """Releases what `load` acquired."""

    @abstractmethod
    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> list[Answer]:
        """Generates `num_generations` images per input; returns one answer per input."""

    def generate_outputs(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer]:
        """Same as `generate` (the name distilabel's tasks call)."""
        return self.generate(inputs=inputs, num_generations=num_generations, **kwargs)

    def get_generation_kwargs(self) -> dict[str, Any]:
        """The keyword arguments passed to every `generate` call."""
        return dict(self.generation_kwargs)


class AsyncImageGenerationModel(ImageGenerationModel):
    """A backend whose requests are coroutines, run concurrently.

    Subclasses implement `agenerate` for one input. `generate` runs the inputs of a batch
    concurrently, at most `max_concurrency` at once; an input whose request raises gets
    the exception as its answer, so only its own rows fail.
    """

    max_concurrency: RuntimeParameter[Annotated[int, msgspec.Meta(ge=1)]] = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not hasattr(self, "_loop"):
            self._loop = BackgroundLoop()

    @abstractmethod
    async def agenerate(self, input: str, num_generations: int = 1, **kwargs: Any) -> Answer:
        """Generates `num_generations` images for one input."""

    async def agenerate_batch(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:
        """Answers every input concurrently; a failed request's answer is its exception."""
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(prompt: str) -> Answer:
            async with limit:
                return await self.agenerate(input=prompt, num_generations=num_generations, **kwargs)

        return await asyncio.gather(*(one(prompt) for prompt in inputs), return_exceptions=True)

    def generate(  # type: ignore[override]
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:
        return self._loop.run(self.agenerate_batch(inputs, num_generations, **kwargs))

    def unload(self) -> None:
        self._loop.close()
