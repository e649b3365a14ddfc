"""OpenAI Images API backend (`imagetask[openai]`): OpenAI and OpenAI-compatible servers."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec

from imagetask._core import ImagesAnswer, StoredImage
from imagetask._extras import require
from imagetask.config import Secret, Url
from imagetask.errors import ConfigError
from imagetask.models._base import Answer, AsyncImageEditingModel, EditInput, SourceImage
from imagetask.models._budget import RequestCost
from imagetask.models._prices import most_request_cost, request_cost
from imagetask.models._store import answer_store, kept
from imagetask.models._transport import WholeBodyTransport, httpx_library

if TYPE_CHECKING:
    import openai

__all__ = ["MAX_EDIT_IMAGES", "OpenAIImageGeneration"]

_ONE_PER_REQUEST = ("dall-e-3",)
_MAX_PER_REQUEST = 10
_RESPONSE_FORMATS = ("url", "b64_json")
MAX_EDIT_IMAGES = 16
"""The most images one edit takes (GPT image models)."""


@functools.cache
def _signature_names(method: Any) -> frozenset[str]:
    return frozenset(inspect.signature(method).parameters)


def _parameters(method: Any) -> frozenset[str]:
    """The keyword parameters the installed client's `images.generate` knows; the others
    are sent in `extra_body` (parameters of OpenAI-compatible servers, such as `seed`)."""
    return _signature_names(getattr(method, "__func__", method))


def _fields(value: Any) -> dict[str, Any]:
    """A JSON object of an answer as a dict, whether the client made it a model or kept
    it as it came; `{}` for a value of any other shape."""
    openai = require("openai", "openai", "OpenAIImageGeneration")
    if isinstance(value, openai.BaseModel):
        return dict(value)
    return value if isinstance(value, dict) else {}


def _upload(image: SourceImage, name: str) -> tuple[str, bytes, str]:
    """An image as a multipart file: its name (with the extension of its MIME type), its
    bytes and its MIME type."""
    return (f"{name}.{image.mime_type.split('/')[1]}", image.data, image.mime_type)


def _uploads(edit: EditInput) -> dict[str, Any]:
    """The files of an edit: `image` for one image (sent as the `image` field), a list
    for several (sent as `image[]` fields, in order), and the `mask`."""
    images = [_upload(image, f"image-{index}") for index, image in enumerate(edit.images)]
    files: dict[str, Any] = {"image": images[0] if len(images) == 1 else images}
    if edit.mask is not None:
        files["mask"] = _upload(edit.mask, "mask")
    return files


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _token_counts(usage: Any) -> dict[str, Any]:
    """The token counts of an answer's `usage` in the shape the SDK documents: counts,
    and objects of counts (`input_tokens_details`); a value of another shape (a server
    that sends text, a list, `null`) is left out rather than failing the image."""
    counts: dict[str, Any] = {}
    for name, value in _fields(usage).items():
        details = _fields(value)
        if _is_count(value):
            counts[name] = value
        elif details and all(_is_count(count) for count in details.values()):
            counts[name] = details
    return counts


@dataclass(frozen=True)
class _Item:
    """One image of an answer: the image (`None`: to be downloaded from `url`), and the
    prompt the server says it drew."""

    image: str | bytes | StoredImage | None
    url: str | None
    revised_prompt: str | None


def _sdk_items(response: Any) -> list[_Item]:
    """The images of an answer the SDK parsed."""
    return [
        _Item(
            item.b64_json,
            item.url,
            item.revised_prompt if isinstance(item.revised_prompt, str) else None,
        )
        for item in response.data or []
    ]


def _stored_items(answer: ImagesAnswer) -> list[_Item]:
    """The images of an answer read natively, its `b64_json` images stored."""
    return [
        _Item(image, url, revised)
        for image, url, revised in zip(
            answer.images, answer.urls, answer.revised_prompts, strict=True
        )
    ]


def _usage(response: Any) -> dict[str, Any]:
    """The token counts of an answer, parsed by the SDK or read natively."""
    if isinstance(response, ImagesAnswer):
        return _token_counts(None if response.usage is None else json.loads(response.usage))
    return _token_counts(response.usage)


def _size(image: str | bytes | StoredImage) -> int:
    """The bytes of an image (base64 text counted as the bytes it encodes)."""
    if isinstance(image, StoredImage):
        return image.size
    if isinstance(image, bytes):
        return len(image)
    return len(image) * 3 // 4 - image[-2:].count("=")


class OpenAIImageGeneration(AsyncImageEditingModel):
    """Images from `POST /v1/images/generations` (GPT image, DALL-E, or any compatible
    server through `base_url`: LocalAI, vLLM-Omni, ...), with the official `openai` client.

    Only the parameters in `generation_kwargs` are sent (`size`, `quality`,
    `response_format`, ...; those the client does not know, such as a compatible server's
    `seed`, in the request body as they are), plus `model`, `prompt` and `n` when more
    than one image is asked. `num_generations` images are asked `images_per_request` at a
    time (1 for DALL-E 3, 10 otherwise). `b64_json` answers are used as they are; `url` answers are
    downloaded. Each image's raw output keeps `revised_prompt` and the `seed` sent;
    its statistics hold the request's latency, the image's size in bytes, the
    request's token usage and, for the models `imagetask.models._prices` lists or with
    `price_per_image` set (which overrides the table), the image's share of the
    request's estimated cost in US dollars (`cost_usd`).

    It edits too (an `ImageEditingModel`): `edit` posts each input's images (up to 16),
    optional mask and prompt to `/v1/images/edits` as multipart form data (`image` for one
    image, `image[]` for several; the other parameters as form fields), with the same
    requests per `images_per_request`, retries, concurrency and rate limits as generation,
    and answers in the same shape.

    Parameters
    ----------
    model:
        The model name sent to the server (`gpt-image-1`, `dall-e-3`, ...).
    base_url:
        The server's API root (default: `OPENAI_BASE_URL`, else OpenAI's).
    api_key:
        The API key (default: `OPENAI_API_KEY`); never dumped, shown or logged. A server
        at `base_url` that needs no key may be used without one.
    images_per_request:
        The most images asked in one request (`n`).
    """

    model: str
    base_url: Url[str | None] = None
    api_key: Secret[str | None] = None
    images_per_request: Annotated[int, msgspec.Meta(ge=1)] | None = None

    _calls_requests: ClassVar[bool] = True
    _reads_answers_whole: ClassVar[bool] = True
    """Whether the client reads each answer whole on a thread (`WholeBodyTransport`):
    image answers are a few MB; a backend streaming large files keeps httpx's transport."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require("openai", "openai", type(self).__name__)

    @property
    def model_name(self) -> str:
        return self.model

    def load(self) -> None:
        """Checks that there is an API key to send and that `generation_kwargs` can be."""
        self._key()
        self._check_arguments(1, self.get_generation_kwargs())
        super().load()

    def _check_arguments(self, num_generations: Any, kwargs: dict[str, Any]) -> None:
        super()._check_arguments(num_generations, kwargs)
        response_format = kwargs.get("response_format")
        if response_format is not None and response_format not in _RESPONSE_FORMATS:
            raise ConfigError(
                f"{type(self).__name__}: response_format={response_format!r}: "
                "expected 'url' or 'b64_json'"
            )

    def _key(self) -> str:
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            return key
        if self.base_url or os.environ.get("OPENAI_BASE_URL"):
            return "no-key"
        raise ConfigError(
            f"{type(self).__name__}: no API key: pass `api_key` or set OPENAI_API_KEY"
        )

    def _secrets(self) -> list[str]:
        env = os.environ.get("OPENAI_API_KEY")
        return [*super()._secrets(), *([env] if env else [])]

    def _client(self) -> openai.AsyncOpenAI:
        library = require("openai", "openai", type(self).__name__)
        client: openai.AsyncOpenAI = self._on_loop(
            "client",
            lambda: library.AsyncOpenAI(
                api_key=self._key(),
                base_url=self.base_url,
                max_retries=0,
                timeout=self.timeout,
                http_client=(
                    library.DefaultAsyncHttpxClient(transport=WholeBodyTransport(httpx_library()))
                    if self._reads_answers_whole
                    else None
                ),
            ),
        )
        return client

    def _transient(self, exc: BaseException) -> bool:
        openai = require("openai", "openai", type(self).__name__)
        return isinstance(exc, openai.APIConnectionError) or super()._transient(exc)

    def _refused(self, exc: BaseException) -> bool:
        """Only the API's answers: a 403 or 404 downloading a `url` image is that image's."""
        openai = require("openai", "openai", type(self).__name__)
        return isinstance(exc, openai.APIStatusError) and super()._refused(exc)

    def _most_cost(
        self, prompt: str, images: int, kwargs: dict[str, Any], edit: bool
    ) -> float | None:
        if self.price_per_image is not None:
            return self.price_per_image * images
        return most_request_cost(self.model, prompt, images, kwargs, edit=edit)

    def _each_image_cost(
        self, usage: dict[str, Any], count: int, kwargs: dict[str, Any]
    ) -> float | None:
        """Each image's share of what a request for `count` images cost, from its
        answer's `usage` (`None`: not known)."""
        if self.price_per_image is not None:
            return self.price_per_image
        cost = request_cost(self.model, usage, count, kwargs)
        return None if cost is None else cost / count

    def _per_request(self) -> int:
        if self.images_per_request is not None:
            return self.images_per_request
        return 1 if self.model.startswith(_ONE_PER_REQUEST) else _MAX_PER_REQUEST

    async def agenerate(self, input: str, num_generations: int = 1, **kwargs: Any) -> Answer:
        """The images of one input; raises `ConfigError` (a `ValueError`) before any
        request for a `response_format` other than `url` and `b64_json`."""
        self._check_arguments(num_generations, kwargs)
        per = self._per_request()
        counts = [min(per, num_generations - start) for start in range(0, num_generations, per)]
        return await self._parts(
            [({"images": [None] * count}, self._images(input, count, kwargs)) for count in counts]
        )

    def _check_edits(self, inputs: Sequence[EditInput]) -> None:
        super()._check_edits(inputs)
        for index, input in enumerate(inputs):
            if len(input.images) > MAX_EDIT_IMAGES:
                raise self._refuse_input(
                    index,
                    "image",
                    f"edits at most {MAX_EDIT_IMAGES} images at once, not {len(input.images)}",
                )

    async def aedit(self, input: EditInput, num_generations: int = 1, **kwargs: Any) -> Answer:
        """The edited images of one input; raises `ConfigError` or `InputRowError` before
        any request for what no request can take."""
        self._check_arguments(num_generations, kwargs)
        self._check_edits([input])
        per = self._per_request()
        counts = [min(per, num_generations - start) for start in range(0, num_generations, per)]
        return await self._parts(
            [
                ({"images": [None] * count}, self._images(input.prompt, count, kwargs, input))
                for count in counts
            ]
        )

    async def _images(
        self, prompt: str, count: int, kwargs: dict[str, Any], edit: EditInput | None = None
    ) -> Answer:
        """One request for `count` images (downloads included), one dict per image: a
        generation, or the edit of `edit`'s images."""
        client = self._client()
        send = client.images.generate if edit is None else client.images.edit
        known = _parameters(send)
        params: dict[str, Any] = {"model": self.model, "prompt": prompt}
        extra = {name: value for name, value in kwargs.items() if name not in known}
        params.update((name, value) for name, value in kwargs.items() if name in known)
        if extra:
            params["extra_body"] = {**params.get("extra_body", {}), **extra}
        if count > 1:
            params["n"] = count
        if edit is not None:
            params.update(_uploads(edit))

        store = answer_store()
        raw_send = (
            client.images.with_raw_response.generate
            if edit is None
            else client.images.with_raw_response.edit
        )

        async def request() -> tuple[Any, float]:
            """The answer and its latency: parsed by the SDK, or, when answers go to a
            store, the body read natively (in a worker thread) and its images stored."""
            started = time.perf_counter()
            raw = await raw_send(**params)
            latency = time.perf_counter() - started
            self._note_rate_limits(raw.headers)
            if store is None:
                return raw.parse(), latency
            body: bytes = raw.http_response.content
            return await asyncio.to_thread(store.read_images_body, body), latency

        def actual(answer: tuple[Any, float]) -> float | None:
            each = self._each_image_cost(_usage(answer[0]), count, kwargs)
            return None if each is None else each * count

        most = self._most_cost(prompt, count, kwargs, edit is not None)
        response, latency = await self._call(request, count, RequestCost(most, actual))
        items = (
            _stored_items(response) if isinstance(response, ImagesAnswer) else _sdk_items(response)
        )
        if len(items) != count:
            raise ValueError(f"the server returned {len(items)} image(s) for n={count}")
        usage = _usage(response)
        each = self._each_image_cost(usage, count, kwargs)
        share = {} if each is None else {"cost_usd": each}
        answer: Answer = []
        for item in items:
            if item.image is not None:
                image: str | bytes | StoredImage = item.image
                size = _size(image)
            elif item.url is not None:
                downloaded = await self._download(item.url)
                size = len(downloaded)
                image = await kept(downloaded)
            else:
                raise ValueError("the server returned an image with neither b64_json nor url")
            part: dict[str, Any] = {"images": [image]}
            if item.revised_prompt is not None:
                part["revised_prompt"] = item.revised_prompt
            if "seed" in kwargs:
                part["seed"] = kwargs["seed"]
            part["statistics"] = {
                "latency_s": latency,
                "image_bytes": size,
                "images_in_request": count,
                **usage,
                **share,
            }
            answer.append(part)
        return answer

    async def _download(self, url: str) -> bytes:
        """The image at `url`, with the retries of a request; the rate limits, which count
        the model's requests, do not count it."""
        return await self._retrying(lambda: self._get(url), timeout=self.timeout)

    async def _get(self, url: str) -> bytes:
        http = httpx_library()
        client = self._on_loop(
            "download",
            lambda: http.AsyncClient(timeout=self.timeout, transport=WholeBodyTransport(http)),
        )
        response = await client.get(url)
        response.raise_for_status()
        content: bytes = response.content
        return content
