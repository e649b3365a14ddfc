"""Progress of a run: a redrawn bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress"]

_BAR = 24


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Reports rows done, images and megabytes of images per second, failures and the time
    left; the final report adds how much of the time went to waiting for the model's
    answers, the rest being local work (building rows, writing, syncing).

    On a terminal the line is redrawn at most every `redraw` seconds, and cleared before
    any log line is written (then drawn again at the next update); elsewhere (a log file,
    CI) a plain line is written every `interval` seconds and at the end.
    """

    def __init__(
        self,
        total: int | None,
        *,
        done: int = 0,
        stream: TextIO | None = None,
        interval: float = 10.0,
        redraw: float = 0.2,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.rows = done
        self.images = 0
        self.image_bytes = 0
        self.failed = 0
        self.seconds_waiting = 0.0
        self._resumed = done
        self._tty = self.stream.isatty()
        self._every = redraw if self._tty else interval
        self._started = time.monotonic()
        self._shown = self._started
        self._drawn = False
        self._handlers: list[logging.Handler] = []
        if self._tty:
            root = logging.getLogger().handlers
            self._handlers = [*root, *([logging.lastResort] if logging.lastResort else [])]
            for handler in self._handlers:
                handler.addFilter(self._clear)

    def _clear(self, record: logging.LogRecord) -> bool:
        """A logging filter: clears the drawn bar before the record's line is written."""
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False
            self._shown = float("-inf")  # the next update draws it again
        return True

    def update(self, rows: int, images: int, failed: int, image_bytes: int = 0) -> None:
        """Counts one finished batch, whose images hold `image_bytes` bytes."""
        self.rows += rows
        self.images += images
        self.image_bytes += image_bytes
        self.failed += failed
        now = time.monotonic()
        if now - self._shown >= self._every:
            self._shown = now
            self._show(now)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Counts the time the block takes as time spent waiting for the model."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds_waiting += time.monotonic() - started

    def line(self, now: float | None = None) -> str:
        """The current report, without bar."""
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        rate = self.images / elapsed
        done = f"{self.rows:,}" + (f"/{self.total:,}" if self.total is not None else "")
        parts = [f"{done} rows", f"{self.images:,} images", f"{rate:,.1f} images/s"]
        parts.append(f"{self.image_bytes / elapsed / 1e6:,.1f} MB/s")
        parts.append(f"{self.failed:,} failed")
        fresh = self.rows - self._resumed
        if self.total is not None and fresh > 0:
            left = (self.total - self.rows) * elapsed / fresh
            parts.append(f"ETA {_clock(max(left, 0.0))}")
        return " | ".join(parts)

    def _show(self, now: float) -> None:
        if self._tty:
            bar = ""
            if self.total:
                filled = min(_BAR, _BAR * self.rows // self.total)
                bar = "[" + "#" * filled + "." * (_BAR - filled) + "] "
            self.stream.write("\r\x1b[2K" + bar + self.line(now))
            self._drawn = True
        else:
            self.stream.write(time.strftime("%H:%M:%S ") + self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Writes the final report, with the share of the time spent waiting for the model."""
        for handler in self._handlers:
            handler.removeFilter(self._clear)
        now = time.monotonic()
        self._show(now)
        elapsed = max(now - self._started, 1e-9)
        waiting = min(self.seconds_waiting / elapsed, 1.0)
        self.stream.write(
            ("\n" if self._tty else "")
            + f"{_clock(elapsed)} in all: {waiting:.0%} waiting for the model, "
            f"{1 - waiting:.0%} local work\n"
        )
        self.stream.flush()
