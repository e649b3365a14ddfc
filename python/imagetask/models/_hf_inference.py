"""Hugging Face text-to-image and image-to-image inference backend (`imagetask[hf]`)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from imagetask._extras import require
from imagetask.config import Secret, Url, redact_url
from imagetask.errors import ConfigError
from imagetask.models._base import Answer, AsyncImageEditingModel, EditInput
from imagetask.models._store import kept

__all__ = ["InferenceEndpointsImageGeneration"]


class InferenceEndpointsImageGeneration(AsyncImageEditingModel):
    """Images from Hugging Face text-to-image inference: serverless (`model_id`, routed
    by `provider`) or a dedicated Inference Endpoint or TGI-style server (`base_url`),
    through `huggingface_hub`'s `AsyncInferenceClient`.

    One request per image: generation `k` is sent with seed `seed + k` (a random base
    seed when `seed` is unset), so the images of a prompt differ and each can be
    reproduced. The image bytes are kept as the server sent them (no decode, no
    re-encode). `generation_kwargs` go in the request's `parameters` (`width`, `height`,
    `negative_prompt`, `num_inference_steps`, `guidance_scale`, ...). Each image's raw
    output holds its seed; its statistics the request's latency, the image's size and,
    with `price_per_image` set, its cost in US dollars (`cost_usd`).

    It edits too (an `ImageEditingModel`), through image-to-image inference: one image
    per input, the instruction as the `prompt` parameter, seeds as for generation. An
    input with several images or a mask is refused with `InputRowError` before any
    request: image-to-image takes neither.

    Parameters
    ----------
    model_id:
        The model on the Hub (`black-forest-labs/FLUX.1-schnell`, ...).
    base_url:
        The URL of a dedicated endpoint; used instead of `model_id`.
    provider:
        The inference provider for `model_id` (`hf-inference`, `fal-ai`, ...; default:
        `auto`, the first the account allows).
    api_key:
        The token (default: `HF_TOKEN`, else the token saved by `hf auth login`); never
        dumped, shown or logged.
    seed:
        The seed of generation 0 of every prompt.
    """

    model_id: str | None = None
    base_url: Url[str | None] = None
    provider: str | None = None
    api_key: Secret[str | None] = None
    seed: int | None = None

    _calls_requests: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        cls = type(self).__name__
        if (self.model_id is None) == (self.base_url is None):
            raise ConfigError(f"{cls}: pass exactly one of `model_id` and `base_url`")
        require("huggingface_hub", "hf", cls)

    @property
    def model_name(self) -> str:
        return self.model_id or redact_url(self.base_url or "")

    def _token(self) -> str | None:
        if self.api_key:
            return self.api_key
        hub = require("huggingface_hub", "hf", type(self).__name__)
        token: str | None = os.environ.get("HF_TOKEN") or hub.get_token()
        return token

    def _secrets(self) -> list[str]:
        token = self._token()
        return [*super()._secrets(), *([token] if token else [])]

    def _client(self) -> Any:
        hub = require("huggingface_hub", "hf", type(self).__name__)
        return self._on_loop(
            "client",
            lambda: hub.AsyncInferenceClient(
                model=self.base_url or self.model_id,
                provider=self.provider,
                token=self._token(),
                timeout=self.timeout,
            ),
        )

    async def agenerate(self, input: str, num_generations: int = 1, **kwargs: Any) -> Answer:
        self._check_arguments(num_generations, kwargs)
        return await self._seeded(num_generations, "text-to-image", input, kwargs)

    def _check_edits(self, inputs: Sequence[EditInput]) -> None:
        super()._check_edits(inputs)
        for index, input in enumerate(inputs):
            if len(input.images) > 1:
                raise self._refuse_input(
                    index,
                    "image",
                    f"edits one image per input (image-to-image), not {len(input.images)}",
                )
            if input.mask is not None:
                raise self._refuse_input(
                    index, "mask", "takes no mask: image-to-image inference has none"
                )

    async def aedit(self, input: EditInput, num_generations: int = 1, **kwargs: Any) -> Answer:
        """The edited images of one input; raises `ConfigError` or `InputRowError` before
        any request for what image-to-image cannot take."""
        self._check_arguments(num_generations, kwargs)
        self._check_edits([input])
        parameters = {**kwargs, "prompt": input.prompt}
        return await self._seeded(
            num_generations, "image-to-image", input.images[0].data, parameters
        )

    async def _seeded(
        self, num_generations: int, task: str, inputs: str | bytes, parameters: dict[str, Any]
    ) -> Answer:
        """`num_generations` requests of `task` for `inputs`, seeded `seed`, `seed + 1`, ..."""
        base = self.seed if self.seed is not None else random.randrange(2**31)
        return await self._parts(
            [
                (
                    {"images": [None], "seed": seed},
                    self._image(task, inputs, {**parameters, "seed": seed}),
                )
                for seed in range(base, base + num_generations)
            ]
        )

    async def _image(self, task: str, inputs: str | bytes, parameters: dict[str, Any]) -> Answer:
        """One request for one image: its part, with its seed and statistics."""

        async def request() -> tuple[bytes, float]:
            started = time.perf_counter()
            image = await self._request(task, inputs, parameters)
            return image, time.perf_counter() - started

        cost = self._request_cost("", 1, parameters)  # priced per image: no prompt needed
        image, latency = await self._call(request, cost=cost)
        statistics: dict[str, Any] = {"latency_s": latency, "image_bytes": len(image)}
        if self.price_per_image is not None:
            statistics["cost_usd"] = self.price_per_image
        answer = await kept(image)
        return [{"images": [answer], "seed": parameters["seed"], "statistics": statistics}]

    async def _request(self, task: str, inputs: str | bytes, parameters: dict[str, Any]) -> bytes:
        """The image bytes the server sent for one request of `task` (`text-to-image`,
        with the prompt as `inputs`, or `image-to-image`, with the source image's bytes).

        Private `huggingface_hub` API, for want of a public one: the public
        `text_to_image` and `image_to_image` return a decoded PIL image, and re-encoding
        it would break the promise that the model's bytes are kept; the public `post`
        that returned the raw answer is gone since 1.0; and the per-provider routing (URL,
        payload, how the answer holds the image) lives only in `inference._providers`.
        This is the body of `AsyncInferenceClient.text_to_image` (`image_to_image`)
        without its final decode; the `hf` extra bounds the version (`<3`) and the tests
        run it against a loopback server."""
        providers = require("huggingface_hub.inference._providers", "hf", type(self).__name__)
        client = self._client()
        helper = providers.get_provider_helper(client.provider, task=task, model=client.model)
        request = helper.prepare_request(
            inputs=inputs,
            parameters=parameters,
            headers=client.headers,
            model=client.model,
            api_key=client.token,
        )
        content = await client._inner_post(request)
        image = await asyncio.to_thread(helper.get_response, content, request)
        if not isinstance(image, bytes):
            raise ValueError(f"the server answered {type(image).__name__}, expected image bytes")
        return image
