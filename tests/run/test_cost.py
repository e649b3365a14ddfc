"""What an OpenAI image costs: priced from the dated table, by token from the `usage` the
answers carry (GPT image models) or per image by size and quality (DALL-E), each image's
share recorded in its statistics as `cost_usd`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from imagetask import ImageGeneration
from imagetask.models import OpenAIImageGeneration
from imagetask.models._prices import PRICES_DATE, PRICES_SOURCE, request_cost
from tests.support.servers import ImageServer, image_server

KEY = "sk-test-cost-0123456789"
STATS = "statistics_image_generation_0"


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server(key=KEY) as running:
        yield running


def costs(server: ImageServer, model: str, num_generations: int = 1, **kwargs: Any) -> list[Any]:
    backend = OpenAIImageGeneration(
        model=model, base_url=f"{server.url}/v1", api_key=KEY, generation_kwargs=kwargs
    )
    task = ImageGeneration(image_generation_model=backend, num_generations=num_generations)
    rows = task.process_batch([{"prompt": "a small red cat"}])
    task.unload()
    return [row["distilabel_metadata"][STATS].get("cost_usd") for row in rows]


def test_the_price_table_names_its_date_and_source() -> None:
    assert PRICES_DATE == "2025-10-01"
    assert PRICES_SOURCE.startswith("https://platform.openai.com/docs/pricing")


@pytest.mark.parametrize(
    ("model", "usage", "images", "kwargs", "cost"),
    [
        (
            "gpt-image-1",
            {"input_tokens": 10, "output_tokens": 1056},
            1,
            {},
            (10 * 5 + 1056 * 40) / 1e6,
        ),
        (
            "gpt-image-1",
            {
                "input_tokens": 50,
                "output_tokens": 4160,
                "input_tokens_details": {"text_tokens": 20, "image_tokens": 30},
            },
            1,
            {},
            (20 * 5 + 30 * 10 + 4160 * 40) / 1e6,
        ),
        (
            "gpt-image-1-mini",
            {"input_tokens": 10, "output_tokens": 272},
            1,
            {},
            (10 * 2 + 272 * 8) / 1e6,
        ),
        ("gpt-image-1", {"total_tokens": 5}, 1, {}, None),
        ("dall-e-3", {}, 1, {}, 0.040),
        ("dall-e-3", {}, 1, {"size": "1792x1024", "quality": "hd"}, 0.120),
        ("dall-e-3", {}, 1, {"size": "512x512"}, None),
        ("dall-e-2", {}, 3, {"size": "256x256"}, 3 * 0.016),
        ("stable-diffusion", {"input_tokens": 1, "output_tokens": 1}, 1, {}, None),
    ],
)
def test_request_cost(
    model: str, usage: dict[str, Any], images: int, kwargs: dict[str, Any], cost: float | None
) -> None:
    assert request_cost(model, usage, images, kwargs) == cost


def test_a_token_priced_image_costs_its_share_of_the_usage(server: ImageServer) -> None:
    # The loopback server answers 1 input token per word and 100 output tokens per image.
    assert (
        costs(server, "gpt-image-1", num_generations=2) == [(4 * 5.00 + 200 * 40.00) / 1e6 / 2] * 2
    )
    server.answer_fields = {
        "usage": {
            "input_tokens": 40,
            "output_tokens": 272,
            "total_tokens": 312,
            "input_tokens_details": {"text_tokens": 4, "image_tokens": 36},
        }
    }
    assert costs(server, "gpt-image-1-mini") == [(4 * 2.00 + 36 * 2.50 + 272 * 8.00) / 1e6]


def test_a_per_image_model_is_priced_by_size_and_quality(server: ImageServer) -> None:
    assert (
        costs(server, "dall-e-3", num_generations=2, size="1024x1792", quality="hd") == [0.12] * 2
    )
    assert costs(server, "dall-e-2", size="512x512") == [0.018]
    assert costs(server, "dall-e-2", size="64x64") == [None]


def test_a_model_not_in_the_table_has_no_cost(server: ImageServer) -> None:
    assert costs(server, "my-local-model") == [None]
