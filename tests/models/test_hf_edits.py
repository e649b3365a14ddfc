"""`InferenceEndpointsImageGeneration` edits through image-to-image inference, against a
loopback server: the source image's exact bytes sent, the model's bytes kept, seeds per
generation, retries and refusals as for generation; several images or a mask refused
before any request."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from imagetask.errors import InputRowError, RequestError, RequestRefused
from imagetask.models import (
    EditInput,
    ImageEditingModel,
    InferenceEndpointsImageGeneration,
    SourceImage,
)
from tests.support.servers import Fault, ImageServer, image_server


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = bytes((seed + index) % 256 for index in range(width * height * 3))
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


PHOTO = SourceImage(png(4, 3), "image/png")
OTHER = SourceImage(png(4, 3, seed=1), "image/png")


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server() as running:
        yield running


def model(server: ImageServer, **fields: Any) -> InferenceEndpointsImageGeneration:
    fields.setdefault("retry_backoff", 0.001)
    return InferenceEndpointsImageGeneration(base_url=f"{server.url}/hf", **fields)


def test_an_edit_sends_the_source_image_and_keeps_the_models_bytes(server: ImageServer) -> None:
    backend = model(server, seed=100, api_key="hf_secret_token")
    assert isinstance(backend, ImageEditingModel)
    [answer] = backend.edit(
        [EditInput("make it blue", [PHOTO])], num_generations=3, width=6, height=5
    )
    requests = sorted(server.served.requests, key=lambda request: request["parameters"]["seed"])
    assert requests == [
        {
            "inputs": base64.b64encode(PHOTO.data).decode(),
            "parameters": {"prompt": "make it blue", "width": 6, "height": 5, "seed": seed},
        }
        for seed in (100, 101, 102)
    ]
    assert set(server.served.auth) == {"Bearer hf_secret_token"}
    assert [part["seed"] for part in answer] == [100, 101, 102]
    assert sorted(image for part in answer for image in part["images"]) == sorted(
        server.served.images
    )
    with Image.open(io.BytesIO(answer[0]["images"][0])) as image:
        assert image.size == (6, 5)
    assert answer[0]["statistics"]["image_bytes"] == len(answer[0]["images"][0])
    backend.unload()


@pytest.mark.parametrize(
    ("edit", "message", "column"),
    [
        (
            EditInput("p", [PHOTO, OTHER]),
            "row 1 of the batch: InferenceEndpointsImageGeneration edits one image per input "
            "(image-to-image), not 2",
            "image",
        ),
        (
            EditInput("p", [PHOTO], mask=OTHER),
            "row 1 of the batch: InferenceEndpointsImageGeneration takes no mask: "
            "image-to-image inference has none",
            "mask",
        ),
    ],
)
def test_several_images_or_a_mask_are_refused_before_any_request(
    server: ImageServer, edit: EditInput, message: str, column: str
) -> None:
    backend = model(server)
    with pytest.raises(InputRowError) as info:
        backend.edit([EditInput("fine", [PHOTO]), edit])
    assert (str(info.value), info.value.row, info.value.column) == (message, 1, column)
    assert server.served.requests == []
    backend.unload()


def test_edits_are_retried_and_fail_per_image(server: ImageServer) -> None:
    server.faults = {"flaky": [Fault(status=503, headers={"Retry-After": "0"})]}
    server.always_fail = {"broken"}
    backend = model(server, seed=1, max_retries=1)
    flaky, broken = backend.edit(
        [EditInput("flaky", [PHOTO]), EditInput("broken", [PHOTO])], num_generations=2
    )
    assert isinstance(flaky, list)
    assert sorted(image for part in flaky for image in part["images"]) == sorted(
        server.served.images
    )
    assert isinstance(broken, RequestError)
    assert str(broken).startswith("request failed after 2 attempts: HfHubHTTPError:")
    assert len(server.served.requests) == 3 + 4
    backend.unload()


def test_a_refused_edit_is_not_retried(server: ImageServer) -> None:
    server.faults = {"p": [Fault(status=401)] * 4}
    backend = model(server, api_key="hf_secret_token", max_retries=3)
    [answer] = backend.edit([EditInput("p", [PHOTO])])
    assert type(answer) is RequestRefused
    assert "hf_secret_token" not in str(answer)
    assert len(server.served.requests) == 1
    backend.unload()
