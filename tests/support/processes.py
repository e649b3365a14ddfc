"""Waiting on the `imagetask` command run as a process of its own."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

HANG_GUARD = 180.0
"""Seconds after which a test calls a process hung: it normally takes well under one, but
on a loaded machine an fsync can wait for other programs' writes for many seconds."""


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    """Waits until `condition` holds while `process` runs (failing if it hangs or ends)."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)
