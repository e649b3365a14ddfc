"""The edit inputs every backend takes, and the placeholder backend's offline edits."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from imagetask import ConfigError
from imagetask.models import (
    EditInput,
    ImageEditingModel,
    ImageModel,
    PlaceholderImageGeneration,
    SourceImage,
)
from imagetask.testing import ScriptedModel

PHOTO = SourceImage(data=b"\x89PNG photo", mime_type="image/png")
OTHER = SourceImage(data=b"\x89PNG other", mime_type="image/png")
MASK = SourceImage(data=b"\x89PNG mask", mime_type="image/png")


def pictures(answer: Any) -> list[bytes]:
    return [image for part in answer for image in part["images"]]


def test_the_placeholder_generates_and_edits() -> None:
    model = PlaceholderImageGeneration()
    assert isinstance(model, ImageModel)
    assert isinstance(model, ImageEditingModel)
    assert not isinstance(ScriptedModel([]), ImageEditingModel)


def test_a_placeholder_edit_depends_on_every_source_byte_and_on_the_prompt() -> None:
    model = PlaceholderImageGeneration(size="6x4")
    edits = [
        EditInput("make it blue", (PHOTO,)),
        EditInput("make it blue", (OTHER,)),
        EditInput("make it red", (PHOTO,)),
        EditInput("make it blue", (PHOTO, OTHER)),
        EditInput("make it blue", (PHOTO,), mask=MASK),
        EditInput("make it blue", (PHOTO, MASK)),
    ]
    answers = model.edit(edits, num_generations=2)
    images = [pictures(answer) for answer in answers]
    assert [len(generations) for generations in images] == [2] * len(edits)
    assert len({image for generations in images for image in generations}) == 2 * len(edits)
    assert model.edit(edits, num_generations=2) == answers
    assert pictures(model.generate(["make it blue"])[0])[0] not in images[0]
    with Image.open(io.BytesIO(images[0][0])) as image:
        assert (image.format, image.size) == ("PNG", (6, 4))
    assert answers[0][0]["seed"] == 0
    assert answers[0][0]["statistics"] == {"image_bytes": len(images[0][0])}


def test_a_placeholder_edit_takes_the_generation_kwargs_it_knows() -> None:
    model = PlaceholderImageGeneration()
    [answer] = model.edit([EditInput("p", [PHOTO])], size="3x5", seed=9)
    assert answer[0]["seed"] == 9
    with Image.open(io.BytesIO(answer[0]["images"][0])) as image:
        assert image.size == (3, 5)
    with pytest.raises(ConfigError, match=r"unknown generation kwargs \['strength'\]"):
        model.edit([EditInput("p", [PHOTO])], strength=0.5)


def test_an_edit_of_something_else_than_an_edit_input_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        PlaceholderImageGeneration().edit([EditInput("p", [PHOTO]), "p"])  # type: ignore[list-item]
    assert str(info.value) == (
        "PlaceholderImageGeneration: edit input 1 is a str, not an EditInput"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": 3, "images": [PHOTO]}, "EditInput: `prompt` must be a str, not int"),
        (
            {"prompt": "p", "images": []},
            "EditInput: `images` must be a non-empty list of SourceImage",
        ),
        (
            {"prompt": "p", "images": PHOTO},
            "EditInput: `images` must be a non-empty list of SourceImage",
        ),
        (
            {"prompt": "p", "images": [b"png"]},
            "EditInput: `images` must be a non-empty list of SourceImage",
        ),
        (
            {"prompt": "p", "images": [PHOTO], "mask": b"png"},
            "EditInput: `mask` must be a SourceImage or None, not bytes",
        ),
    ],
)
def test_a_bad_edit_input_is_a_config_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        EditInput(**fields)
    assert str(info.value) == message


def test_edit_inputs_keep_their_images_as_a_tuple() -> None:
    edit = EditInput("p", [PHOTO, OTHER])
    assert edit.images == (PHOTO, OTHER)
    assert repr(edit) == (
        "EditInput(prompt='p', images=(SourceImage(image/png, 10 bytes), "
        "SourceImage(image/png, 10 bytes)), mask=None)"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"data": b"", "mime_type": "image/png"}, "SourceImage: `data` must be non-empty bytes"),
        ({"data": "abc", "mime_type": "image/png"}, "SourceImage: `data` must be non-empty bytes"),
        ({"data": b"abc", "mime_type": "text/plain"}, "SourceImage: `mime_type` 'text/plain'"),
    ],
)
def test_a_bad_source_image_is_a_config_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        SourceImage(**fields)
