"""Where a backend puts the images of its answers: the `ImageStore` a run installs for
the batch being generated (none outside a run, or for a task whose hooks read images as
text or bytes: see `imagetask.run._spool`). With a store, an answer's `images` hold
`StoredImage` handles, written to disk as each request answers, instead of the images."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token

from imagetask._core import ImageStore, StoredImage

__all__ = ["StoringAnswers", "answer_store", "kept"]

_STORE: ContextVar[ImageStore | None] = ContextVar("imagetask_answer_store", default=None)


def answer_store() -> ImageStore | None:
    """The store the answers being made go to (`None`: answers hold the images)."""
    return _STORE.get()


class StoringAnswers:
    """`with StoringAnswers(store):` answers made in the block (in this thread, and in the
    requests it starts) go to `store`."""

    __slots__ = ("_store", "_token")

    def __init__(self, store: ImageStore | None) -> None:
        self._store = store
        self._token: Token[ImageStore | None] | None = None

    def __enter__(self) -> None:
        self._token = _STORE.set(self._store)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _STORE.reset(self._token)


async def kept(image: bytes) -> StoredImage | bytes:
    """An image as its answer holds it: stored (in a worker thread) when answers go to a
    store, else its bytes."""
    store = _STORE.get()
    if store is None or not isinstance(image, bytes):
        return image
    return await asyncio.to_thread(store.put, image)
