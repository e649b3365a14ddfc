"""Input images in every form users hold them: each becomes the same bytes sent, and a
cell without a readable image is an `InputRowError` naming its row and column."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from imagetask.build._input_images import ImageReader
from imagetask.errors import InputRowError
from imagetask.models import SourceImage


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def picture(width: int = 4, height: int = 3, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = len(mode)
    pixels = bytes((seed + 7 * index) % 256 for index in range(width * height * channels))
    return Image.frombytes(mode, (width, height), pixels)


PNG = encoded(picture())


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    mode = draw(st.sampled_from(["RGB", "RGBA", "L"]))
    width, height = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    pixels = draw(st.binary(min_size=width * height * len(mode), max_size=width * height * 4))
    image = Image.frombytes(mode, (width, height), pixels[: width * height * len(mode)])
    format = draw(
        st.sampled_from(["PNG", "WEBP", "GIF", "BMP", "TIFF"] + ["JPEG"] * (mode != "RGBA"))
    )
    return encoded(image, format)


@given(data=image_files())
def test_every_form_of_an_image_sends_the_same_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "photos").mkdir()
        (base / "photos" / "a.img").write_bytes(data)
        reader = ImageReader(base)
        forms: list[Any] = [
            data,
            bytearray(data),
            memoryview(data),
            {"bytes": data, "path": None},
            {"bytes": data, "path": "photos/missing.png"},
            {"bytes": None, "path": "photos/a.img"},
            {"path": "photos/a.img"},
            base64.b64encode(data).decode(),
            "data:image/png;base64," + base64.b64encode(data).decode(),
            "photos/a.img",
            "photos/../photos/a.img",
            str(base / "photos" / "a.img"),
            Path("photos/a.img"),
        ]
        images = [reader.image(form, row=0, column="image") for form in forms]
    assert {image.data for image in images} == {data}
    first = images[0]
    assert len({(image.format, image.width, image.height) for image in images}) == 1
    assert first.sha256 == hashlib.sha256(data).hexdigest()

    with Image.open(io.BytesIO(data)) as opened:
        from_pil = reader.image(opened, row=0, column="image")
        expected = opened.convert("RGBA").tobytes()
    assert from_pil.format == "PNG"
    assert (from_pil.width, from_pil.height) == (first.width, first.height)
    with Image.open(io.BytesIO(from_pil.data)) as sent:
        assert sent.convert("RGBA").tobytes() == expected


def test_an_input_image_says_what_it_is() -> None:
    image = ImageReader().image(encoded(picture(5, 2), "JPEG"), row=0, column="image")
    digest = hashlib.sha256(image.data).hexdigest()
    assert (image.format, image.mime_type, image.width, image.height, image.sha256) == (
        "JPEG",
        "image/jpeg",
        5,
        2,
        digest,
    )
    assert image.reference == f"sha256:{digest}"
    assert image.source == SourceImage(data=image.data, mime_type="image/jpeg")
    assert repr(image.source) == f"SourceImage(image/jpeg, {len(image.data):,} bytes)"


def test_a_cell_may_hold_a_list_of_images() -> None:
    other = encoded(picture(seed=1))
    images = ImageReader().images([PNG, {"bytes": other, "path": None}], row=0, column="image")
    assert [image.data for image in images] == [PNG, other]
    assert [image.data for image in ImageReader().images(PNG, 0, "image")] == [PNG]


def truncated() -> bytes:
    return PNG[: len(PNG) // 2]


def ico() -> bytes:
    return encoded(picture(16, 16), "ICO")


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ([PNG], "holds a list where one image is expected"),
        (None, "holds no image (null)"),
        (3, "holds a int, not an image"),
        (b"", "holds an empty image (0 bytes)"),
        (b"GIF89a" + b"\x00" * 4, "holds an unreadable image: "),
        (b"plain text, no image", "holds an unreadable image: in no known image format"),
        ({"bytes": None, "path": None}, "holds an Image struct with neither bytes nor a path"),
        ({"bytes": "abc", "path": None}, "holds an Image struct whose bytes are a str"),
        (
            {"bytes": PNG, "height": 3},
            "holds a mapping with keys 'bytes', 'height', not an Image struct (bytes, path)",
        ),
        ("data:image/png;base64", "holds a data: URL without a comma before its data"),
        ("data:image/png;base64,@@@", "holds text that is neither base64, a data: URL nor a path"),
        ("", "holds an empty path"),
        ("no such file.png", "names a file that cannot be read: 'no such file.png' (No such "),
    ],
)
def test_a_cell_without_a_readable_image_names_its_row_and_column(cell: Any, why: str) -> None:
    with pytest.raises(InputRowError) as info:
        ImageReader().image(cell, row=4, column="source")
    assert str(info.value).startswith(f"row 4 of the batch, column 'source': {why}")
    assert (info.value.row, info.value.column) == (4, "source")


def test_a_truncated_image_and_an_unknown_format_are_refused() -> None:
    with pytest.raises(InputRowError, match=r"column 'image': holds an unreadable image: \S"):
        ImageReader().image(truncated(), row=0, column="image")
    with pytest.raises(InputRowError) as info:
        ImageReader().image(ico(), row=0, column="image")
    assert str(info.value) == (
        "row 0 of the batch, column 'image': holds an image in ICO format: "
        "the formats taken are PNG, JPEG, WEBP, GIF, BMP, TIFF, MPO"
    )


def test_a_bad_image_in_a_list_is_named_by_its_place() -> None:
    with pytest.raises(InputRowError) as info:
        ImageReader().images([PNG, b"junk"], row=2, column="image")
    assert str(info.value) == (
        "row 2 of the batch, column 'image': image 1 holds an unreadable image: "
        "in no known image format"
    )
    with pytest.raises(InputRowError, match="holds an empty list of images"):
        ImageReader().images([], row=2, column="image")


def test_a_mask_must_have_the_size_of_the_image() -> None:
    reader = ImageReader()
    image = reader.image(encoded(picture(4, 3)), row=0, column="image")
    mask = encoded(picture(4, 3, "RGBA"))
    assert reader.mask(mask, image, row=0, column="mask").data == mask
    with pytest.raises(InputRowError) as info:
        reader.mask(encoded(picture(3, 4, "RGBA")), image, row=1, column="mask")
    assert str(info.value) == (
        "row 1 of the batch, column 'mask': holds a 3x4 mask for a 4x3 image: "
        "they must have the same size"
    )
    with pytest.raises(InputRowError, match="holds a list where one image is expected"):
        reader.mask([mask], image, row=1, column="mask")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """An input folder holding `in.png`, and beside it `out.png` outside it."""
    inside = tmp_path / "input"
    inside.mkdir()
    (inside / "in.png").write_bytes(PNG)
    (tmp_path / "out.png").write_bytes(PNG)
    return inside, tmp_path / "out.png"


@pytest.mark.parametrize("name", ["../out.png", "OUTSIDE", "link.png", "sub/link.png"])
def test_a_path_leading_outside_the_base_is_refused(folders: tuple[Path, Path], name: str) -> None:
    inside, outside = folders
    (inside / "link.png").symlink_to(outside)
    (inside / "sub").mkdir()
    (inside / "sub" / "link.png").symlink_to("../../out.png")
    name = name.replace("OUTSIDE", str(outside))
    with pytest.raises(InputRowError) as info:
        ImageReader(inside).image(name, row=0, column="image")
    assert str(info.value) == (
        f"row 0 of the batch, column 'image': names a file outside {str(inside)!r}: {name!r}"
    )
    assert ImageReader(inside, allow_outside=True).image(name, 0, "image").data == PNG


def test_a_link_within_the_base_is_followed(folders: tuple[Path, Path]) -> None:
    inside, _ = folders
    (inside / "alias.png").symlink_to("in.png")
    assert ImageReader(inside).image("alias.png", 0, "image").data == PNG


def test_relative_paths_start_from_the_base_not_the_current_folder(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, _ = folders
    monkeypatch.chdir(inside.parent)
    assert ImageReader(inside).image("in.png", 0, "image").data == PNG
    assert ImageReader().image("input/in.png", 0, "image").data == PNG


def test_a_fifo_or_a_folder_is_not_read(folders: tuple[Path, Path]) -> None:
    inside, _ = folders
    os.mkfifo(inside / "pipe")
    for name in ("pipe", "."):
        with pytest.raises(InputRowError) as info:
            ImageReader(inside).image(name, row=0, column="image")
        assert str(info.value) == (
            f"row 0 of the batch, column 'image': names {name!r}, which is not a regular file"
        )


def test_errors_pickle() -> None:
    with pytest.raises(InputRowError) as info:
        ImageReader().image(None, row=1, column="image")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (str(copy), copy.row, copy.column) == (str(info.value), 1, "image")
