"""Hugging Face text-to-image inference backend (`imagetask[hf]`)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any, ClassVar

from imagetask._extras import require
from imagetask.config import Secret, Url, redact_url
from imagetask.errors import ConfigError
from imagetask.models._base import Answer, AsyncImageGenerationModel

__all__ = ["InferenceEndpointsImageGeneration"]


class InferenceEndpointsImageGeneration(AsyncImageGenerationModel):
    """Images from Hugging Face text-to-image inference: serverless (`model_id`, routed
    by `provider`) or a dedicated Inference Endpoint or TGI-style server (`base_url`),
    through `huggingface_hub`'s `AsyncInferenceClient`.

    One request per image: generation `k` is sent with seed `seed + k` (a random base
    seed when `seed` is unset), so the images of a prompt differ and each can be
    reproduced. The image bytes are kept as the server sent them (no decode, no
    re-encode). `generation_kwargs` go in the request's `parameters` (`width`, `height`,
    `negative_prompt`, `num_inference_steps`, `guidance_scale`, ...). Each image's raw
    output holds its seed; its statistics the request's latency and the image's size.

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
        base = self.seed if self.seed is not None else random.randrange(2**31)
        return await self._parts(
            [
                ({"images": [None], "seed": seed}, self._image(input, seed, kwargs))
                for seed in range(base, base + num_generations)
            ]
        )

    async def _image(self, prompt: str, seed: int, kwargs: dict[str, Any]) -> Answer:
        """One request for one image: its part, with its seed and statistics."""

        async def request() -> tuple[bytes, float]:
            started = time.perf_counter()
            image = await self._request(prompt, seed, kwargs)
            return image, time.perf_counter() - started

        image, latency = await self._call(request)
        statistics = {"latency_s": latency, "image_bytes": len(image)}
        return [{"images": [image], "seed": seed, "statistics": statistics}]

    async def _request(self, prompt: str, seed: int, kwargs: dict[str, Any]) -> bytes:
        """The image bytes the server sent for one request.

        Private `huggingface_hub` API, for want of a public one: the public
        `text_to_image` returns a decoded PIL image, and re-encoding it would break the
        promise that the model's bytes are kept; the public `post` that returned the raw
        answer is gone since 1.0; and the per-provider routing (URL, payload, how the
        answer holds the image) lives only in `inference._providers`. This is the body
        of `AsyncInferenceClient.text_to_image` without its final decode; the `hf` extra
        bounds the version (`<3`) and `tests/test_backends.py` runs it against a
        loopback server."""
        providers = require("huggingface_hub.inference._providers", "hf", type(self).__name__)
        client = self._client()
        helper = providers.get_provider_helper(
            client.provider, task="text-to-image", model=client.model
        )
        request = helper.prepare_request(
            inputs=prompt,
            parameters={**kwargs, "seed": seed},
            headers=client.headers,
            model=client.model,
            api_key=client.token,
        )
        content = await client._inner_post(request)
        image = await asyncio.to_thread(helper.get_response, content, request)
        if not isinstance(image, bytes):
            raise ValueError(f"the server answered {type(image).__name__}, expected image bytes")
        return image
