"""Rate limits as providers impose them: requests and images per minute, spaced evenly,
what the provider's rate-limit headers say is left, and a pause every request keeps once
the server says the limit is reached."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimits"]


def _interval(per_minute: float | None) -> float | None:
    """The seconds between two units of a budget of `per_minute` spent evenly."""
    return None if per_minute is None else 60.0 / per_minute


class RateLimits:
    """When each request of a model may be sent, shared by all its requests (whatever
    thread or event loop sends them).

    A request asking for `images` images passes when both budgets allow it: no more than
    `requests_per_minute` requests and `images_per_minute` images in any minute, spaced
    evenly rather than sent in bursts that the provider answers with 429s. `pause(s)`
    holds every request not yet sent for `s` seconds: what a 429's `Retry-After` asks.
    `observe(left, reset)` records what an answer's headers say: `left` more requests
    until the provider's window ends in `reset` seconds; once as many were booked, the
    next waits for the window's end. Without limits only pauses and observations apply.
    """

    def __init__(
        self,
        requests_per_minute: float | None,
        images_per_minute: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = (requests_per_minute, images_per_minute)
        self._request_interval = _interval(requests_per_minute)
        self._image_interval = _interval(images_per_minute)
        self._clock = clock
        self._lock = threading.Lock()
        self._next_request = clock()
        self._next_image = clock()
        self._paused_until = clock()
        self._window_left: int | None = None
        self._in_flight = 0
        self._window_end = clock()

    def same(self, requests_per_minute: float | None, images_per_minute: float | None) -> bool:
        """Whether these are the limits this object keeps."""
        return self.limits == (requests_per_minute, images_per_minute)

    def reserve(self, images: int) -> float:
        """Books the next request, asking for `images` images, and returns how many
        seconds it must wait before it is sent (0: now)."""
        with self._lock:
            now = self._clock()
            self._in_flight += 1
            start = max(now, self._paused_until)
            per_request = self._request_interval
            per_image = self._image_interval if images > 0 else None
            if self._window_left is not None and now < self._window_end:
                if self._window_left <= 0:
                    start = max(start, self._window_end)
                    self._window_left = None
                else:
                    self._window_left -= 1
            if per_request is not None:
                start = max(start, self._next_request)
            if per_image is not None:
                start = max(start, self._next_image)
            if per_request is not None:
                self._next_request = start + per_request
            if per_image is not None:
                self._next_image = start + images * per_image
            return start - now

    def paused_for(self) -> float:
        """Seconds left of the latest pause (0: none)."""
        with self._lock:
            return max(self._paused_until - self._clock(), 0.0)

    def pause(self, seconds: float) -> None:
        """Holds every request booked from now on for `seconds`, the server's word that
        the limit is reached."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def answered(self) -> None:
        """A request booked with `reserve` is over (answered, failed or given up)."""
        with self._lock:
            self._in_flight -= 1

    def observe(self, left: int, reset: float) -> None:
        """Records the provider's word on its window, given in the answer of a request
        not yet `answered`: `left` requests may still be sent before it ends, in `reset`
        seconds, less the other requests in flight, which the provider may not have
        counted yet. Within one window the lowest count holds (the answers of requests
        sent together come back in any order)."""
        with self._lock:
            now = self._clock()
            left -= max(self._in_flight - 1, 0)
            if self._window_left is None or now >= self._window_end:
                self._window_left = left
            else:
                self._window_left = min(self._window_left, left)
            self._window_end = now + reset
