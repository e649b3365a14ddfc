"""Input images in every form users hold them, as the bytes sent to an editing model.

A cell may hold the Hugging Face `Image` struct `{"bytes": ..., "path": ...}` (Arrow,
Parquet, `datasets`: the bytes win, else the path), raw bytes, base64 text, a `data:` URL,
a file path (relative to the reader's base folder), or a PIL image (encoded as PNG). Each
becomes an `InputImage`; a cell that holds no readable image is an `InputRowError` naming
the row and the column, raised before any request. Needs Pillow (`imagetask[images]`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import stat
import sys
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagetask._extras import require
from imagetask.errors import InputRowError
from imagetask.models import SourceImage

__all__ = ["MIME_TYPES", "ImageReader", "InputImage"]

MIME_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}
"""The image formats taken as input (Pillow's names), with their MIME types; MPO is the
JPEG of cameras that append a second picture."""

_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00")
"""How the formats' files begin (WebP and big-endian TIFF are checked apart)."""

_LONGEST_PATH = 4096


@dataclass(frozen=True)
class InputImage:
    """One input image: its bytes as they will be sent, and what they are.

    Attributes
    ----------
    data:
        The image file's bytes.
    format:
        Pillow's name of its format (`PNG`, `JPEG`, ...).
    mime_type:
        Its MIME type (`image/png`, ...).
    width, height:
        Its size in pixels.
    sha256:
        The hex digest of `data`.
    """

    data: bytes
    format: str
    mime_type: str
    width: int
    height: int
    sha256: str

    @property
    def reference(self) -> str:
        """`sha256:<digest>`: how a recorded input names the image without holding it."""
        return f"sha256:{self.sha256}"

    @property
    def source(self) -> SourceImage:
        """The image as a backend takes it: bytes and MIME type."""
        return SourceImage(data=self.data, mime_type=self.mime_type)


def _looks_like_an_image(data: bytes) -> bool:
    """Whether `data` begins as a file of one of the `MIME_TYPES` formats does."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data.startswith(_MAGIC) or data.startswith(b"MM\x00*")


class ImageReader:
    """Reads input cells as `InputImage`s.

    Parameters
    ----------
    base:
        The folder relative paths start from (for a CLI input file, the file's folder;
        default: the current folder). A path that resolves outside it, through `..`, an
        absolute path or a link, is refused unless `allow_outside`.
    allow_outside:
        Whether paths may lead outside `base`.
    """

    def __init__(self, base: str | os.PathLike[str] | None = None, allow_outside: bool = False):
        self.base = Path(base if base is not None else os.curdir).resolve()
        self.allow_outside = allow_outside

    def image(self, value: Any, row: int, column: str) -> InputImage:
        """The one image a cell holds; a list there is an error."""
        try:
            return self._one(value)
        except _NotAnImage as exc:
            raise _error(row, column, str(exc)) from None

    def images(self, value: Any, row: int, column: str) -> list[InputImage]:
        """The images a cell holds: one, or a non-empty list of them."""
        if not isinstance(value, (list, tuple)):
            return [self.image(value, row, column)]
        if not value:
            raise _error(row, column, "holds an empty list of images")
        images = []
        for index, item in enumerate(value):
            try:
                images.append(self._one(item))
            except _NotAnImage as exc:
                raise _error(row, column, f"image {index} {exc}") from None
        return images

    def mask(self, value: Any, image: InputImage, row: int, column: str) -> InputImage:
        """The mask a cell holds, which must have the size of `image` (the first image)."""
        mask = self.image(value, row, column)
        if (mask.width, mask.height) != (image.width, image.height):
            raise _error(
                row,
                column,
                f"holds a {mask.width}x{mask.height} mask for a "
                f"{image.width}x{image.height} image: they must have the same size",
            )
        return mask

    def _one(self, value: Any) -> InputImage:
        if isinstance(value, (list, tuple)):
            raise _NotAnImage("holds a list where one image is expected")
        return self._read(value)

    def _read(self, value: Any) -> InputImage:
        if isinstance(value, Mapping):
            return self._read(_struct_content(value))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _decoded(bytes(value))
        if isinstance(value, os.PathLike):
            return _decoded(self._file(os.fspath(value)))
        if isinstance(value, str):
            return _decoded(self._text(value))
        pil = sys.modules.get("PIL.Image")
        if pil is not None and isinstance(value, pil.Image):
            return _decoded(_png(value))
        if value is None:
            raise _NotAnImage("holds no image (null)")
        raise _NotAnImage(f"holds a {type(value).__name__}, not an image")

    def _text(self, text: str) -> bytes:
        """The bytes of a `data:` URL, of base64 text that holds an image, or of a file."""
        if text.startswith("data:"):
            return _data_url(text)
        if len(text) > _LONGEST_PATH or "\n" in text:
            return _base64(text)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if data and _looks_like_an_image(data):
            return data
        return self._file(text)

    def _file(self, name: str) -> bytes:
        """The bytes of the regular file at `name` (relative to `base`), if it may be read:
        its links are followed only within `base` (unless `allow_outside`), and a FIFO or a
        device is not opened for reading."""
        if not name:
            raise _NotAnImage("holds an empty path")
        try:
            path = (self.base / name).resolve(strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise _NotAnImage(f"names a file that cannot be read: {name!r} ({_why(exc)})") from None
        if not self.allow_outside and not path.is_relative_to(self.base):
            raise _NotAnImage(f"names a file outside {str(self.base)!r}: {name!r}")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            descriptor = os.open(path, flags)
        except OSError as exc:
            raise _NotAnImage(f"names a file that cannot be read: {name!r} ({_why(exc)})") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise _NotAnImage(f"names {name!r}, which is not a regular file")
        with open(descriptor, "rb") as file:
            return file.read()


class _NotAnImage(Exception):
    """Why a cell holds no readable image (turned into an `InputRowError` by the reader)."""


def _error(row: int, column: str, why: str) -> InputRowError:
    return InputRowError(f"row {row} of the batch, column '{column}': {why}", row, column)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _struct_content(struct: Mapping[Any, Any]) -> Any:
    """What the `Image` struct's bytes or, when it has none, its path hold."""
    if not set(struct) <= {"bytes", "path"}:
        keys = ", ".join(repr(key) for key in struct)
        raise _NotAnImage(f"holds a mapping with keys {keys}, not an Image struct (bytes, path)")
    content = struct.get("bytes")
    if content is not None:
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise _NotAnImage(f"holds an Image struct whose bytes are a {type(content).__name__}")
        return content
    path = struct.get("path")
    if not isinstance(path, str):
        raise _NotAnImage("holds an Image struct with neither bytes nor a path")
    return Path(path)


def _data_url(url: str) -> bytes:
    """The bytes of a `data:` URL (base64 or percent-encoded)."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise _NotAnImage("holds a data: URL without a comma before its data")
    if header.endswith(";base64"):
        return _base64(payload)
    return urllib.parse.unquote_to_bytes(payload)


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _NotAnImage("holds text that is neither base64, a data: URL nor a path") from None


def _png(image: Any) -> bytes:
    """A PIL image as PNG bytes."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")
    except (OSError, ValueError) as exc:
        raise _NotAnImage(f"holds a PIL image that cannot be saved as PNG ({exc})") from None
    return buffer.getvalue()


def _decoded(data: bytes) -> InputImage:
    """`data` described, once Pillow has decoded it whole."""
    pil = require("PIL.Image", "images", "Input images")
    if not data:
        raise _NotAnImage("holds an empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pil.DecompressionBombWarning)
            with pil.open(io.BytesIO(data)) as image:
                kind = image.format
                size = image.size
                image.load()
    except (
        OSError,
        ValueError,
        SyntaxError,
        pil.DecompressionBombError,
        pil.DecompressionBombWarning,
    ) as exc:
        what = "in no known image format" if not _looks_like_an_image(data) else str(exc)
        raise _NotAnImage(f"holds an unreadable image: {what}") from None
    mime = MIME_TYPES.get(kind or "")
    if mime is None:
        known = ", ".join(MIME_TYPES)
        raise _NotAnImage(f"holds an image in {kind} format: the formats taken are {known}")
    return InputImage(
        data=data,
        format=str(kind),
        mime_type=mime,
        width=size[0],
        height=size[1],
        sha256=hashlib.sha256(data).hexdigest(),
    )
