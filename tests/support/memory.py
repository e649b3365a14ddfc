"""The peak memory of a Python program run in a process of its own."""

from __future__ import annotations

import subprocess
import sys

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
