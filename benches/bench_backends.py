"""HTTP backend throughput against a loopback server that answers each request after a
fixed latency, as a fraction of the ideal `max_concurrency / latency` requests per second.

The server is the test suite's (`tests/support/servers.py`: the OpenAI Images and Hugging Face
text-to-image wire formats), run in a separate process so that it does not share the
client's interpreter. Each configuration runs `--repeats` times; the table gives the
median and best images/s, the median's fraction of the ideal, and the client process's
CPU time per request (`time.process_time`), which bounds what one event loop can reach.

    python benches/bench_backends.py
    python benches/bench_backends.py --latency 0.05 --requests 400 --concurrency 4 16 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def serve(latency: float) -> None:
    """Runs the loopback server and prints its URL (in the server process)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.servers import image_server

    with image_server(latency=latency) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def backend(kind: str, url: str, concurrency: int) -> Any:
    from imagetask.models import InferenceEndpointsImageGeneration, OpenAIImageGeneration

    if kind == "openai":
        return OpenAIImageGeneration(
            model="gpt-image-1", base_url=f"{url}/v1", api_key="bench", max_concurrency=concurrency
        )
    return InferenceEndpointsImageGeneration(
        base_url=f"{url}/hf", seed=0, max_concurrency=concurrency
    )


def once(kind: str, url: str, concurrency: int, requests: int) -> tuple[float, float]:
    """Images per second for `requests` one-image prompts through `ImageGeneration`, and
    the client process's CPU milliseconds per request (all its threads)."""
    from imagetask import ImageGeneration

    task = ImageGeneration(image_generation_model=backend(kind, url, concurrency))
    task.process_batch([{"prompt": "warm up"}] * concurrency)
    rows = [{"prompt": f"prompt {i}"} for i in range(requests)]
    started, cpu = time.perf_counter(), time.process_time()
    out = task.process_batch(rows)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    task.unload()
    if sum(row["image"] is not None for row in out) != requests:
        raise SystemExit(f"{kind}: some requests failed")
    return requests / seconds, cpu * 1000 / requests


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(float(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    print(
        f"# {args.requests} one-image requests, {args.latency * 1000:.0f} ms per request; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.repeats} repeats\n"
    )
    print("| backend | max_concurrency | ideal images/s | images/s (median) | images/s (best) "
          "| median / ideal | client CPU ms/request (median) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    try:
        for kind in ("openai", "hf"):
            for concurrency in args.concurrency:
                ideal = concurrency / args.latency
                runs = [once(kind, url, concurrency, args.requests) for _ in range(args.repeats)]
                rates = [rate for rate, _ in runs]
                median = statistics.median(rates)
                cpu = statistics.median(ms for _, ms in runs)
                print(
                    f"| {kind} | {concurrency} | {ideal:,.0f} | {median:,.0f} | {max(rates):,.0f} "
                    f"| {median / ideal:.0%} | {cpu:.2f} |",
                    flush=True,
                )
    finally:
        server.stdin.close()
        server.wait()


if __name__ == "__main__":
    main()
