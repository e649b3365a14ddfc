"""Waiting on the `imagetask` command run as a process of its own."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.runs import rows_done

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


def killed_when(
    argv: list[str], condition: Callable[[], bool], *, env: dict[str, str] | None = None
) -> None:
    """Runs `argv` until `condition` holds (failing if it ends or hangs first), then kills
    it with SIGKILL."""
    with subprocess.Popen(argv, env=env, text=True) as process:
        wait_for(condition, process)
        process.send_signal(signal.SIGKILL)


def killed_past(
    argv: list[str],
    out: Path,
    target: int,
    rng: random.Random,
    *,
    settle: float = 0.05,
    env: dict[str, str] | None = None,
) -> bool:
    """Runs `argv` and kills it with SIGKILL at a random moment (up to `settle` seconds)
    once the run in `out` has passed `target` rows; whether it was still running to be
    killed."""
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    while process.poll() is None and rows_done(out) < target:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, settle))
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return killed
