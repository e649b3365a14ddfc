"""`OpenAIImageGeneration` edits through `/v1/images/edits`: the multipart body a loopback
server parses the way OpenAI documents it (files, mask, fields), the same retries,
refusals, concurrency and rate limits as generation; the Batch API refuses edits."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from imagetask.errors import ConfigError, InputRowError, RequestError, RequestRefused
from imagetask.models import (
    EditInput,
    ImageEditingModel,
    OpenAIBatchImageGeneration,
    OpenAIImageGeneration,
    SourceImage,
)
from tests.support.servers import Fault, ImageServer, Upload, image_server

KEY = "sk-test-edits-key"


def png(width: int, height: int, mode: str = "RGB", seed: int = 0) -> bytes:
    pixels = bytes((seed + index) % 256 for index in range(width * height * len(mode)))
    buffer = io.BytesIO()
    Image.frombytes(mode, (width, height), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


PHOTO = SourceImage(png(4, 3), "image/png")
SECOND = SourceImage(jpeg(5, 5), "image/jpeg")
MASK = SourceImage(png(4, 3, "RGBA", seed=9), "image/png")


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server(key=KEY) as running:
        yield running


def model(server: ImageServer, **fields: Any) -> OpenAIImageGeneration:
    fields.setdefault("model", "gpt-image-1")
    fields.setdefault("retry_backoff", 0.001)
    return OpenAIImageGeneration(base_url=f"{server.url}/v1", api_key=KEY, **fields)


def images(answer: Any) -> list[bytes]:
    return [base64.b64decode(image) for part in answer for image in part["images"]]


def test_an_edit_of_one_image_uploads_it_as_the_image_field(server: ImageServer) -> None:
    backend = model(server)
    assert isinstance(backend, ImageEditingModel)
    [answer] = backend.edit([EditInput("make it blue", [PHOTO])])
    assert server.served.requests == [
        {
            "model": "gpt-image-1",
            "prompt": "make it blue",
            "image": Upload("image-0.png", "image/png", PHOTO.data),
        }
    ]
    assert images(answer) == server.served.images
    assert answer[0]["statistics"]["images_in_request"] == 1
    assert answer[0]["statistics"]["image_bytes"] == len(server.served.images[0])
    assert set(server.served.auth) == {f"Bearer {KEY}"}
    backend.unload()


def test_several_images_go_as_image_array_with_the_mask_and_the_fields(
    server: ImageServer,
) -> None:
    backend = model(server, generation_kwargs={"quality": "high"})
    edit = EditInput("put them together", [PHOTO, SECOND], mask=MASK)
    [answer] = backend.edit([edit], num_generations=3, **backend.get_generation_kwargs(), seed=7)
    assert server.served.requests == [
        {
            "model": "gpt-image-1",
            "prompt": "put them together",
            "n": "3",
            "quality": "high",
            "seed": "7",
            "image[]": [
                Upload("image-0.png", "image/png", PHOTO.data),
                Upload("image-1.jpeg", "image/jpeg", SECOND.data),
            ],
            "mask": Upload("mask.png", "image/png", MASK.data),
        }
    ]
    assert images(answer) == server.served.images
    assert [part["seed"] for part in answer] == [7, 7, 7]
    backend.unload()


def test_generations_are_split_into_requests_of_images_per_request(server: ImageServer) -> None:
    backend = model(server, images_per_request=4)
    [answer] = backend.edit([EditInput("p", [PHOTO])], num_generations=10)
    assert sorted(request.get("n", "1") for request in server.served.requests) == ["2", "4", "4"]
    assert sorted(images(answer)) == sorted(server.served.images)
    backend.unload()


def test_edits_are_retried_and_a_failing_edit_fails_only_its_input(server: ImageServer) -> None:
    server.faults = {"flaky": [Fault(status=503, headers={"Retry-After": "0"}), Fault(status=429)]}
    server.always_fail = {"broken"}
    backend = model(server, max_retries=2)
    answers = backend.edit([EditInput("flaky", [PHOTO]), EditInput("broken", [PHOTO])])
    assert images(answers[0]) == [
        image for image in server.served.images if image in images(answers[0])
    ]
    assert len(images(answers[0])) == 1
    assert isinstance(answers[1], RequestError)
    assert str(answers[1]).startswith("request failed after 3 attempts: InternalServerError")
    prompts = sorted(request["prompt"] for request in server.served.requests)
    assert prompts == ["broken"] * 3 + ["flaky"] * 3
    assert all(request["image"].data == PHOTO.data for request in server.served.requests)
    backend.unload()


def test_a_refused_edit_is_not_retried_and_stops_the_next(server: ImageServer) -> None:
    backend = OpenAIImageGeneration(
        model="gpt-image-1", base_url=f"{server.url}/v1", api_key="sk-wrong-key-abc"
    )
    [answer] = backend.edit([EditInput("p", [PHOTO])])
    assert isinstance(answer, RequestRefused)
    assert "AuthenticationError: Error code: 401" in str(answer)
    assert "sk-wrong-key-abc" not in str(answer)
    [again] = backend.edit([EditInput("q", [PHOTO])])
    assert isinstance(again, RequestRefused)
    assert len(server.served.requests) == 1
    backend.unload()


def test_an_unknown_model_is_a_refusal(server: ImageServer) -> None:
    server.models = {"gpt-image-1"}
    backend = model(server, model="no-such-model")
    [answer] = backend.edit([EditInput("p", [PHOTO])])
    assert isinstance(answer, RequestRefused)
    backend.unload()


def test_more_than_16_images_are_refused_before_any_request(server: ImageServer) -> None:
    backend = model(server)
    edits = [EditInput("ok", [PHOTO]), EditInput("too many", [PHOTO] * 17)]
    with pytest.raises(InputRowError) as info:
        backend.edit(edits)
    assert str(info.value) == (
        "row 1 of the batch: OpenAIImageGeneration edits at most 16 images at once, not 17"
    )
    assert (info.value.row, info.value.column) == (1, "image")
    [answer] = backend.edit([EditInput("sixteen", [PHOTO] * 16)])
    assert len(server.served.requests) == 1
    assert len(server.served.requests[0]["image[]"]) == 16
    assert len(images(answer)) == 1
    backend.unload()


def test_an_edit_of_what_is_no_edit_input_is_refused(server: ImageServer) -> None:
    backend = model(server)
    with pytest.raises(ConfigError, match="edit input 0 is a str, not an EditInput"):
        backend.edit(["a prompt"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="num_generations=0: expected >= 1"):
        backend.edit([EditInput("p", [PHOTO])], num_generations=0)
    assert server.served.requests == []
    backend.unload()


def test_the_concurrency_cap_holds_for_edits() -> None:
    with image_server(key=KEY, latency=0.05) as server:
        backend = model(server, max_concurrency=2)
        answers = backend.edit([EditInput(f"p{i}", [PHOTO]) for i in range(6)])
        assert server.served.peak == 2
        assert [len(images(answer)) for answer in answers] == [1] * 6
        backend.unload()


def test_requests_per_minute_space_the_edits(server: ImageServer) -> None:
    backend = model(server, requests_per_minute=300)
    backend.edit([EditInput(f"p{i}", [PHOTO]) for i in range(5)])
    arrivals = sorted(time for times in server.served.times.values() for time in times)
    assert len(arrivals) == 5
    # One every 0.2 s, booked when sent (the first may arrive late, its client being made),
    # where 16 slots would send all five at once.
    assert arrivals[-1] - arrivals[0] >= 0.6
    backend.unload()


def test_aedit_runs_on_the_callers_loop(server: ImageServer) -> None:
    backend = model(server)

    async def edit() -> Any:
        try:
            return await backend.aedit(EditInput("p", [PHOTO]), num_generations=2)
        finally:
            await backend.aclose()

    answer = asyncio.run(edit())
    assert images(answer) == server.served.images
    assert server.served.requests[0]["n"] == "2"


def test_the_batch_api_refuses_edits(server: ImageServer) -> None:
    backend = OpenAIBatchImageGeneration(
        model="gpt-image-1", base_url=f"{server.url}/v1", api_key=KEY
    )
    with pytest.raises(ConfigError) as info:
        backend.edit([EditInput("p", [PHOTO])])
    assert str(info.value) == (
        "OpenAIBatchImageGeneration does not edit images: a Batch API job is a JSONL file of "
        "JSON request bodies, and an edit uploads its images to /v1/images/edits as "
        "multipart form data; edit with OpenAIImageGeneration"
    )
    assert server.served.requests == []
    backend.unload()
