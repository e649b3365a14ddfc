"""How long `task.run` takes when some prompts always fail: each failing request goes
through its whole retry chain (`max_retries` 4, backoff 0.5 s doubling, with jitter), and
the other requests must not wait for it.

A loopback OpenAI Images server (`tests/support/servers.py`, in a separate process) answers every
request after `--latency`, and a 500 for every `--prompts / --failing`-th prompt. The run
uses the backend's defaults (16 requests in flight) and the runner's (batches of 50, two
in flight). The target: about the clean run's time plus one retry chain (at most 7.5 s).

    python benches/bench_retries.py
    python benches/bench_retries.py --prompts 420 --failing 0 60 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve(latency: float, failing: list[str]) -> None:
    """Runs the loopback server and prints its URL (in the server process)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.servers import image_server

    with image_server(latency=latency) as server:
        server.always_fail = set(failing)
        print(server.url, flush=True)
        sys.stdin.read()


def once(prompts: int, failing: int, latency: float) -> tuple[float, int]:
    """Seconds for a run over `prompts` prompts of which `failing` always fail, and the
    failed rows it reports."""
    from imagetask import ImageGeneration
    from imagetask.models import OpenAIImageGeneration

    step = prompts // failing if failing else prompts + 1
    bad = [f"prompt {i}" for i in range(0, prompts, step)][:failing]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(latency), *bad],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    try:
        model = OpenAIImageGeneration(model="gpt-image-1", base_url=f"{url}/v1", api_key="bench")
        task = ImageGeneration(image_generation_model=model)
        rows = [{"prompt": f"prompt {i}"} for i in range(prompts)]
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            summary = task.run(rows, Path(out) / "run")
            return time.perf_counter() - started, summary.failed
    finally:
        server.stdin.close()
        server.wait()


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(float(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=420)
    parser.add_argument("--failing", type=int, nargs="+", default=[0, 60])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| prompts | always failing | failed rows | seconds (median) | seconds (all) |")
    print("|---:|---:|---:|---:|---|")
    for failing in args.failing:
        runs = [once(args.prompts, failing, args.latency) for _ in range(args.repeats)]
        seconds = [run[0] for run in runs]
        print(
            f"| {args.prompts} | {failing} | {runs[0][1]} | {statistics.median(seconds):.1f} "
            f"| {', '.join(f'{value:.1f}' for value in seconds)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
