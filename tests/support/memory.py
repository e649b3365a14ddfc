"""The peak memory of a Python program run in a process of its own, and loopback servers
answering images large enough to measure it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

from tests.support.batch_server import BatchServer
from tests.support.servers import ImageServer

IMAGE_BYTES = 1 << 20
"""The size of each image the large-image servers answer."""

# `ru_maxrss` would count the peak of the forked test process too.
_PRINT_PEAK = """
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmHWM"].split()[0]) // 1024)
"""


def peak_mb(script: str, *args: str) -> int:
    """Runs `script` with `args` and returns its peak resident memory in MB (`VmHWM`)."""
    done = subprocess.run(
        [sys.executable, "-c", script + _PRINT_PEAK, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.splitlines()[-1])


class _LargeImages:
    """Each image answered a distinct PNG-headed file: its serial number, then
    `IMAGE_BYTES` of noise shared by all (for servers with a `serial` and a `lock`)."""

    serial: Iterator[int]
    lock: threading.Lock
    noise = os.urandom(IMAGE_BYTES)

    def image(self, prompt: str, size: str = "8x8", place: int = 0) -> bytes:
        with self.lock:
            serial = next(self.serial)
        return b"\x89PNG\r\n\x1a\n" + serial.to_bytes(8, "big") + self.noise


class LargeImageServer(_LargeImages, ImageServer):
    """An `ImageServer` answering large images."""


class LargeBatchServer(_LargeImages, BatchServer):
    """A `BatchServer` answering large images."""
