"""What the async backends share about one HTTP request: fault kinds, delays, errors."""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RequestWindow",
    "backoff_delay",
    "describe",
    "limit_reset",
    "refused",
    "request_window",
    "response_headers",
    "retry_after",
    "status_code",
    "transient",
    "transient_status",
]

MAX_BACKOFF = 30.0
"""Longest wait between two attempts of a request, in seconds, unless the server says more."""
MAX_RETRY_AFTER = 300.0
"""Longest `Retry-After` honoured, in seconds."""

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of the response an exception carries, if any."""
    for holder in (exc, getattr(exc, "response", None)):
        code = getattr(holder, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def transient_status(code: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 409, 425, 429 and every 5xx."""
    return code in _TRANSIENT_STATUS or code >= 500


def transient(exc: BaseException) -> bool:
    """Whether an exception is a fault that a later attempt may not meet: a transient
    HTTP status, a timeout, a lost connection (the HTTP client's transport errors too)."""
    code = status_code(exc)
    if code is not None:
        return transient_status(code)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    for client in ("httpx2", "httpx"):
        module = sys.modules.get(client)
        if module is not None and isinstance(exc, module.TransportError):
            return True
    return False


def _error_code(exc: BaseException) -> Any:
    """The `code` of the error object the server answered with, if the client kept it."""
    code = getattr(exc, "code", None)
    if code is not None:
        return code
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def refused(exc: BaseException, model: str) -> bool:
    """Whether an exception is a refusal that no retry changes: refused credentials
    (401, 403), or a model the server does not have (404 with the `model_not_found`
    code, or whose message names `model`, as a word or at the end of a URL path)."""
    code = status_code(exc)
    if code in (401, 403):
        return True
    if code != 404:
        return False
    if _error_code(exc) == "model_not_found":
        return True
    named = rf"(?<![\w.:-]){re.escape(model)}(?![\w/:-]|\.\w)"
    return bool(model) and re.search(named, str(exc)) is not None


def response_headers(exc: BaseException) -> Mapping[str, str] | None:
    """The headers of the response an exception carries, if any."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return headers if isinstance(headers, Mapping) else None


def retry_after(exc: BaseException) -> float | None:
    """The wait, in seconds, that the response's `Retry-After` header asks for."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return min(max(float(millis) / 1000, 0.0), MAX_RETRY_AFTER)
        value = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # an unreadable header: the usual backoff applies
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


_REMAINING = "x-ratelimit-remaining-"
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float | None:
    """Seconds of a reset header: `20ms`, `1s`, `6m0s`, `1h2m3.5s`, or a number of
    seconds; `None` when unreadable."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


@dataclass(frozen=True)
class RequestWindow:
    """What a provider's headers say of its request limit: `left` requests until the
    window ends, in `reset` seconds."""

    left: int
    reset: float


def request_window(headers: Mapping[str, str] | None) -> RequestWindow | None:
    """The request window of `x-ratelimit-remaining-requests` and
    `x-ratelimit-reset-requests`, when both are there and readable."""
    if headers is None:
        return None
    try:
        left = headers.get(_REMAINING + "requests")
        reset = headers.get("x-ratelimit-reset-requests")
        seconds = None if reset is None else _duration(reset)
        if left is None or seconds is None or seconds != seconds:
            return None
        return RequestWindow(max(int(left), 0), min(max(seconds, 0.0), MAX_RETRY_AFTER))
    except (AttributeError, TypeError, ValueError):
        return None


def limit_reset(headers: Mapping[str, str] | None) -> float | None:
    """The wait, in seconds, until the provider's exhausted limit resets: the longest
    `x-ratelimit-reset-<kind>` of the kinds (requests, tokens, images, ...) whose
    `x-ratelimit-remaining-<kind>` is 0, as OpenAI and others send them; `None` when no
    limit is exhausted or the headers do not say when it resets."""
    if headers is None:
        return None
    waits: list[float] = []
    try:
        for name, value in headers.items():
            lowered = name.lower()
            if not lowered.startswith(_REMAINING) or value.strip() not in ("0", "0.0"):
                continue
            reset = headers.get("x-ratelimit-reset-" + lowered[len(_REMAINING) :])
            seconds = None if reset is None else _duration(reset)
            if seconds is not None and seconds == seconds:
                waits.append(min(max(seconds, 0.0), MAX_RETRY_AFTER))
    except (AttributeError, TypeError):
        return None
    return max(waits) if waits else None


def backoff_delay(first: float, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, first * 2**attempt], capped."""
    return random.uniform(0.0, min(MAX_BACKOFF, first * 2**attempt))


def describe(exc: BaseException, timeout: float) -> str:
    """`Type: message` of an exception; a timeout without message says how long it was."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not str(exc):
        return f"TimeoutError: no answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
