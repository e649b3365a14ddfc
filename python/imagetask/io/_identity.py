"""What identifies a task's output: the configuration that decides its rows.

A resumed run must have the identity of the run it continues, and the `datasets`
integration fingerprints its result with it. It is the task's dump without the fields
that change how the rows are made, not what they hold (batch size, concurrency, retries,
timeouts, the output folder), plus what the dump hides but the rows depend on: a URL
field's user info and query string (another deployment, another tenant), kept as
HMAC-SHA256 digests under a random key stored with the output (`UrlDigests`), so they
count without being readable or guessable from what is stored. API keys stay out: they
change who pays, not what is made, so a rotated key still resumes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import msgspec

from imagetask.config import Configurable, canonical_type_info

__all__ = ["KEY_FILE", "UrlDigests", "folder_key", "output_identity"]

KEY_FILE = "imagetask-identity.key"
"""The file holding the key of `folder_key`."""
_FREE_TASK_FIELDS = frozenset({"output_dir", "input_batch_size"})
_FREE_MODEL_FIELDS = frozenset(
    {
        "max_concurrency",
        "max_retries",
        "timeout",
        "retry_backoff",
        "output_dir",
        "poll_interval",
        "max_poll_interval",
        "resubmit_expired",
        "requests_per_minute",
        "images_per_minute",
        "price_per_image",
    }
)
"""Model fields that change how the images are got or what they are reckoned to cost,
not which rows are written."""


class UrlDigests(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The hidden parts of a task's URL fields, as digests.

    Attributes
    ----------
    key:
        The HMAC key, as hex.
    digests:
        By the field's path in the dump (`image_generation_model.base_url`), the
        HMAC-SHA256 of its user info and query string; a URL without them has none.
    """

    key: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    digests: dict[str, str]

    @classmethod
    def of(cls, task: object, key: str | None = None) -> UrlDigests:
        """The digests of `task`'s URL fields (its model's included) under `key` (hex),
        or under a new random key; a task that is not a `Configurable` has none."""
        key = secrets.token_hex(32) if key is None else key
        digests: dict[str, str] = {}
        if isinstance(task, Configurable):
            _digest_urls(task, bytes.fromhex(key), "", digests)
        return cls(key=key, digests=digests)


def _digest_urls(config: Configurable, key: bytes, path: str, digests: dict[str, str]) -> None:
    for name in config.__fields__:
        value = getattr(config, name)
        if isinstance(value, Configurable):
            _digest_urls(value, key, f"{path}{name}.", digests)
        elif name in config.__url__ and isinstance(value, str):
            hidden = _hidden_parts(value)
            if hidden is not None:
                digests[f"{path}{name}"] = hmac.new(key, hidden, hashlib.sha256).hexdigest()


def _hidden_parts(url: str) -> bytes | None:
    """The parts of `url` a dump masks (see `redact_url`), encoded: its user info and
    query (the whole URL when it cannot be parsed); `None` when it has neither."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return msgspec.json.encode([url])
    user = parts.netloc.rpartition("@")[0]
    return msgspec.json.encode([user, parts.query]) if user or parts.query else None


def output_identity(dump: dict[str, Any], urls: UrlDigests | None) -> dict[str, Any]:
    """The identity of the output of the task `dump` describes, whose URL fields have the
    digests `urls` (`None`: not known, as in a checkpoint written before they were
    recorded): a URL with hidden parts becomes `{"url": <as dumped>, "hidden": <digest>}`."""
    task = {
        name: value
        for name, value in canonical_type_info(dump).items()
        if name not in _FREE_TASK_FIELDS
    }
    model = task.get("image_generation_model")
    if isinstance(model, dict):
        task["image_generation_model"] = {
            name: value for name, value in model.items() if name not in _FREE_MODEL_FIELDS
        }
    for path, digest in ({} if urls is None else urls.digests).items():
        task = _with_digest(task, path.split("."), digest)
    return task


def _with_digest(tree: dict[str, Any], path: list[str], digest: str) -> dict[str, Any]:
    """A copy of `tree` with the value at `path` paired with its digest."""
    head, rest = path[0], path[1:]
    value = tree.get(head)
    if rest:
        inner = _with_digest(value, rest, digest) if isinstance(value, dict) else value
        return {**tree, head: inner}
    return {**tree, head: {"url": value, "hidden": digest}}


def folder_key(folder: Path) -> str:
    """The key (hex) kept in `folder`'s `KEY_FILE` (readable by its owner only), made when
    there is none yet."""
    path = folder / KEY_FILE
    if not path.exists():
        # Written aside, then linked in place: a process that loses the race to make it
        # reads the winner's whole key.
        descriptor, aside = tempfile.mkstemp(dir=folder, prefix=f".{KEY_FILE}.")
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(secrets.token_hex(32) + "\n")
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(aside)
    return path.read_text(encoding="ascii").strip()
