"""Writing a large file the run does not read back: the process's system time when its
cached pages are never given back, against given back every N MB written
(`imagetask._durable.sync_and_uncache`, what the JSONL output, Parquet shards and a run's
artifacts do).

Each contender writes the same bytes in 1 MB writes, paced at `--rate` MB/s as a run
writes its output, into a file of its own in `--folder`, in a process of its own; the
figure is that process's system time (the kernel's copy into the page cache and the
pages it takes for it). Medians of `--repeats`, contenders alternated.

    python benches/bench_page_cache.py --mb 800 --rate 110 --every 0 16 160
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from imagetask._durable import sync_and_uncache


def write(path: Path, megabytes: int, rate: float, every: int) -> None:
    """Writes `megabytes` of random bytes to `path` at `rate` MB/s, its pages given back
    every `every` MB (0: never), then prints the process's system time."""
    piece = os.urandom(1 << 20)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    try:
        for written in range(1, megabytes + 1):
            os.write(descriptor, piece)
            if every and written % every == 0:
                sync_and_uncache(descriptor)
            ahead = written / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
        path.unlink()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=800, help="MB written by each contender")
    parser.add_argument("--rate", type=float, default=110.0, help="MB written per second")
    parser.add_argument(
        "--every", type=int, nargs="+", default=[0, 16, 160], help="MB between givings back"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("."))
    parser.add_argument("--write", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write(Path(args.write[0]), int(args.write[1]), args.rate, int(args.write[2]))
        return
    times: dict[int, list[float]] = {every: [] for every in args.every}
    for _ in range(args.repeats):
        for every in args.every:
            path = args.folder / f"bench-page-cache-{every}.bin"
            command = [sys.executable, __file__, "--rate", str(args.rate)]
            done = subprocess.run(
                [*command, "--write", str(path), str(args.mb), str(every)],
                capture_output=True,
                text=True,
                check=True,
            )
            times[every].append(float(done.stdout))
    print(
        f"{args.mb} MB in 1 MB writes at {args.rate:g} MB/s; medians of {args.repeats}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print()
    print("| pages given back | system time | vs never |")
    print("|---|---:|---:|")
    never = statistics.median(times[0]) if 0 in times else None
    for every, measured in times.items():
        median = statistics.median(measured)
        label = "never" if every == 0 else f"every {every} MB"
        ratio = f"{median / never:.2f}x" if never else "-"
        print(f"| {label} | {median:.2f} s | {ratio} |")


if __name__ == "__main__":
    main()
