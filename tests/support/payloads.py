"""Image payloads as backends give them and as rows refer to them."""

from __future__ import annotations

import base64
import hashlib

PNG = b"\x89PNG\r\n\x1a\n-image"
"""Bytes that begin as a PNG file does: enough for a row, not an image to decode."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ref(data: bytes) -> str:
    return "sha256:" + sha(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
