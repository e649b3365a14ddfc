"""Small preview files of images that a run kept only inside its rows.

Each file is named by the SHA-256 of the image's bytes, so an image is written once
however often it occurs and however often the page is rebuilt. An image in a format
browsers show (PNG, JPEG, GIF, WebP, BMP) is written as it is when it is at most `SIDE`
pixels a side; with Pillow (the `images` extra), a larger one, or one in another format,
becomes a PNG of at most `SIDE` pixels a side. Without Pillow every image in a browser's
format is written as it is, whatever its size.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from imagetask._durable import own_folder, write_atomic
from imagetask._extras import install_hint, require
from imagetask.errors import MissingExtraError

__all__ = ["SIDE", "Thumbnail", "Thumbnails"]

SIDE = 256
"""The longest side of a Pillow thumbnail, in pixels."""

_BROWSER_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


@dataclass(frozen=True)
class Thumbnail:
    """The preview of one image: its file's name in the folder, or why there is none."""

    name: str | None
    error: str | None = None


def _browser_extension(data: bytes) -> str | None:
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _BROWSER_FORMATS if data.startswith(magic)), None)


class Thumbnails:
    """Writes previews into `folder` (created when the first one is written; a link in
    its place is replaced by the folder, never written through).

    Parameters
    ----------
    folder:
        Where the files go.
    resize:
        Shrink large images with Pillow; `None` (default): when Pillow is installed.
        `False` writes every image as it is.
    """

    def __init__(self, folder: Path, resize: bool | None = None) -> None:
        self.folder = folder
        self.written = 0
        self._made = False
        self._lock = threading.Lock()
        self._image: ModuleType | None = None
        if resize is not False:
            try:
                self._image = require("PIL.Image", "images", "gallery thumbnails")
            except MissingExtraError:
                if resize:
                    raise
        self.kind = "resized" if self._image is not None else "original"
        """`resized` (large images shrunk with Pillow) or `original` (the images' bytes)."""

    def __call__(self, data: bytes) -> Thumbnail:
        """The preview of the image `data`, written unless it is already there; safe to
        call from several threads at once."""
        digest = hashlib.sha256(data).hexdigest()
        ext = _browser_extension(data)
        if self._image is None:
            if ext is None:
                return Thumbnail(
                    None,
                    f"no preview: the image (first bytes {data[:8].hex(' ')}) is in no format a "
                    f"browser shows; {install_hint('images')} to convert it",
                )
            return self._store(f"{digest}.{ext}", data)
        names = {f"{digest}.png", f"{digest}.{ext or 'png'}"}
        for name in sorted(names):
            if self._present(self.folder / name):
                return Thumbnail(name)
        out: io.BytesIO | None = None
        try:
            with self._image.open(io.BytesIO(data)) as picture:
                if ext is None or max(picture.size) > SIDE:
                    picture.thumbnail((SIDE, SIDE))
                    if picture.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                        picture = picture.convert("RGBA")
                    out = io.BytesIO()
                    picture.save(out, format="PNG")
        except Exception as exc:
            return Thumbnail(None, f"no preview: the image cannot be decoded: {exc}")
        if out is None:
            return self._store(f"{digest}.{ext}", data)
        return self._store(f"{digest}.png", out.getvalue())

    def _store(self, name: str, data: bytes) -> Thumbnail:
        target = self.folder / name
        if not self._present(target):
            with self._lock:
                if not self._made:
                    own_folder(self.folder)
                    self._made = True
            write_atomic(target, data, durable=False)
            with self._lock:
                self.written += 1
        return Thumbnail(name)

    @staticmethod
    def _present(path: Path) -> bool:
        """Whether the preview `path` was written (a link there is not one: it is replaced)."""
        return path.is_file() and not path.is_symlink()
