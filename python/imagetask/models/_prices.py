"""What OpenAI's image models cost, to estimate a request's price from its answer and to
bound it before it is sent.

Prices in US dollars as OpenAI listed them on `PRICES_DATE`; they change, so a cost
computed here is an estimate. GPT image models are priced by token, from the `usage`
their answers carry: text input tokens, image input tokens
(`input_tokens_details.image_tokens`, the images an edit sends) and output tokens (the
generated image). DALL-E models are priced per image, by size (and, for DALL-E 3,
quality: `standard` or `hd`).

Where each figure comes from:

- gpt-image-1, per million tokens (text input $5.00, image input $10.00, image output
  $40.00) and per image: its model page, https://platform.openai.com/docs/models/gpt-image-1,
  and the pricing page, https://platform.openai.com/docs/pricing (Image generation).
- gpt-image-1's output tokens per image (low 272 / 408 / 400, medium 1056 / 1584 / 1568,
  high 4160 / 6240 / 6208 for 1024x1024 / 1024x1536 / 1536x1024): OpenAI's image
  generation guide, https://platform.openai.com/docs/guides/image-generation (Cost and
  latency), as collected in https://community.openai.com/t/1275254.
- gpt-image-1-mini, per million tokens (text input $2.00, image input $2.50, image
  output $8.00) and per image: its model page,
  https://developers.openai.com/api/docs/models/gpt-image-1-mini.
- DALL-E 3 and DALL-E 2, per image: the pricing page, https://platform.openai.com/docs/pricing
  (Image generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PRICES_DATE", "PRICES_SOURCE", "TokenPrice", "most_request_cost", "request_cost"]

PRICES_DATE = "2025-10-06"
PRICES_SOURCE = "https://platform.openai.com/docs/pricing (Image generation)"

_MILLION = 1_000_000


@dataclass(frozen=True)
class TokenPrice:
    """US dollars per million tokens of each kind."""

    text_input: float
    image_input: float
    image_output: float


TOKEN_PRICES = {
    "gpt-image-1": TokenPrice(text_input=5.00, image_input=10.00, image_output=40.00),
    "gpt-image-1-mini": TokenPrice(text_input=2.00, image_input=2.50, image_output=8.00),
}
"""Models priced by token."""

_SIZES = ("1024x1024", "1024x1536", "1536x1024")
_QUALITIES = ("low", "medium", "high")

OUTPUT_TOKENS: dict[tuple[str, str], int] = {
    ("low", "1024x1024"): 272,
    ("low", "1024x1536"): 408,
    ("low", "1536x1024"): 400,
    ("medium", "1024x1024"): 1056,
    ("medium", "1024x1536"): 1584,
    ("medium", "1536x1024"): 1568,
    ("high", "1024x1024"): 4160,
    ("high", "1024x1536"): 6240,
    ("high", "1536x1024"): 6208,
}
"""The output tokens of one image of a GPT image model: (quality, size) -> tokens."""

LISTED_IMAGE_PRICES: dict[str, dict[tuple[str, str], float]] = {
    "gpt-image-1": {
        ("low", "1024x1024"): 0.011,
        ("low", "1024x1536"): 0.016,
        ("low", "1536x1024"): 0.016,
        ("medium", "1024x1024"): 0.042,
        ("medium", "1024x1536"): 0.063,
        ("medium", "1536x1024"): 0.063,
        ("high", "1024x1024"): 0.167,
        ("high", "1024x1536"): 0.25,
        ("high", "1536x1024"): 0.25,
    },
    "gpt-image-1-mini": {
        ("low", "1024x1024"): 0.005,
        ("low", "1024x1536"): 0.006,
        ("low", "1536x1024"): 0.006,
        ("medium", "1024x1024"): 0.011,
        ("medium", "1024x1536"): 0.015,
        ("medium", "1536x1024"): 0.015,
        ("high", "1024x1024"): 0.036,
        ("high", "1024x1536"): 0.052,
        ("high", "1536x1024"): 0.052,
    },
}
"""What OpenAI lists one image of a GPT image model as costing: (quality, size) -> US
dollars (the output tokens, rounded up)."""

IMAGE_PRICES: dict[str, dict[tuple[str, str], float]] = {
    "dall-e-3": {
        ("standard", "1024x1024"): 0.040,
        ("standard", "1024x1792"): 0.080,
        ("standard", "1792x1024"): 0.080,
        ("hd", "1024x1024"): 0.080,
        ("hd", "1024x1792"): 0.120,
        ("hd", "1792x1024"): 0.120,
    },
    "dall-e-2": {
        ("standard", "256x256"): 0.016,
        ("standard", "512x512"): 0.018,
        ("standard", "1024x1024"): 0.020,
    },
}
"""Models priced per image: (quality, size) -> US dollars."""


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _token_cost(price: TokenPrice, usage: dict[str, Any]) -> float | None:
    """The cost of a request's `usage`; `None` when it holds no token counts."""
    if not any(key in usage for key in ("input_tokens", "output_tokens")):
        return None
    inputs = _count(usage.get("input_tokens"))
    details = usage.get("input_tokens_details")
    image_inputs = _count(details.get("image_tokens")) if isinstance(details, dict) else 0
    text_inputs = max(inputs - image_inputs, 0)
    return (
        text_inputs * price.text_input
        + image_inputs * price.image_input
        + _count(usage.get("output_tokens")) * price.image_output
    ) / _MILLION


def _per_image_price(model: str, kwargs: dict[str, Any]) -> float | None:
    """The price of one image of a DALL-E model with `kwargs` (`None`: not in the table)."""
    prices = IMAGE_PRICES.get(model)
    if prices is None:
        return None
    quality = kwargs.get("quality") or "standard"
    size = kwargs.get("size") or "1024x1024"
    return prices.get((str(quality), str(size)))


def request_cost(
    model: str, usage: dict[str, Any], images: int, kwargs: dict[str, Any]
) -> float | None:
    """The estimated cost in US dollars of one request of `model` for `images` images,
    sent with generation `kwargs` (`size`, `quality`) and answered with `usage` (token
    counts); `None` when the model, or its size and quality, is not in the tables, or a
    token-priced answer carries no usage."""
    if model in TOKEN_PRICES:
        return _token_cost(TOKEN_PRICES[model], usage)
    price = _per_image_price(model, kwargs)
    return None if price is None else price * images


def _most_per_image(model: str, kwargs: dict[str, Any]) -> float | None:
    """The most one image of a GPT image model can cost with `kwargs`: its listed price or
    its output tokens' price, whichever is higher, at the highest quality when `quality`
    is `auto` or unset and at the dearest size when `size` is; `None` for another quality
    or size."""
    quality = kwargs.get("quality") or "auto"
    size = kwargs.get("size") or "auto"
    qualities = _QUALITIES if quality == "auto" else (quality,)
    sizes = _SIZES if size == "auto" else (size,)
    if not set(qualities) <= set(_QUALITIES) or not set(sizes) <= set(_SIZES):
        return None
    output = TOKEN_PRICES[model].image_output / _MILLION
    listed = LISTED_IMAGE_PRICES[model]
    return max(
        max(listed[key], OUTPUT_TOKENS[key] * output)
        for key in ((q, s) for q in qualities for s in sizes)
    )


def most_request_cost(
    model: str, prompt: str, images: int, kwargs: dict[str, Any], edit: bool = False
) -> float | None:
    """The most a request of `model` for `images` images of `prompt` with generation
    `kwargs` can cost, known before it is sent; `None` when it cannot be bounded (a model,
    size or quality not in the tables; an edit of a GPT image model, whose image input
    tokens are known only from its answer).

    GPT image models: every image at its most (see `_most_per_image`), plus the prompt
    at one token per UTF-8 byte (no token is shorter). DALL-E models: their price."""
    if model in TOKEN_PRICES:
        most = _most_per_image(model, kwargs)
        if most is None or edit:
            return None
        text = len(prompt.encode("utf-8", "replace")) * TOKEN_PRICES[model].text_input
        return text / _MILLION + most * images
    return request_cost(model, {}, images, kwargs)
