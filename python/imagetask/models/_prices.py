"""What OpenAI's image models cost, to estimate a request's price from its answer.

Prices in US dollars as OpenAI's pricing page listed them on `PRICES_DATE`
(`PRICES_SOURCE`); they change, so a cost computed here is an estimate. GPT image models
are priced by token, from the `usage` their answers carry: text input tokens, image input
tokens (`input_tokens_details.image_tokens`, the images an edit sends) and output tokens
(the generated image). DALL-E models are priced per image, by size (and, for DALL-E 3,
quality: `standard` or `hd`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PRICES_DATE", "PRICES_SOURCE", "TokenPrice", "request_cost"]

PRICES_DATE = "2025-10-01"
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


def request_cost(
    model: str, usage: dict[str, Any], images: int, kwargs: dict[str, Any]
) -> float | None:
    """The estimated cost in US dollars of one request of `model` for `images` images,
    sent with generation `kwargs` (`size`, `quality`) and answered with `usage` (token
    counts); `None` when the model, or its size and quality, is not in the tables, or a
    token-priced answer carries no usage."""
    if model in TOKEN_PRICES:
        return _token_cost(TOKEN_PRICES[model], usage)
    prices = IMAGE_PRICES.get(model)
    if prices is None:
        return None
    quality = kwargs.get("quality") or "standard"
    size = kwargs.get("size") or "1024x1024"
    price = prices.get((str(quality), str(size)))
    return None if price is None else price * images
