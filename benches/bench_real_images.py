"""Real-size images: `imagetask generate` against the simplest Python loop doing the same
work per image, on a loopback OpenAI-compatible server answering 1024x1024 PNGs.

The server (a separate process) makes one unique PNG of random pixels per prompt before
any timing (about 3 MB each, 4 MB as base64 in the JSON body) and answers
`POST /v1/images/generations` with it. Each contender then runs as a process of its own,
so that its wall time, CPU time (user + system, all threads) and peak RSS are its own:

- `loop`: the floor. `--in-flight` threads, each taking prompts in turn: `http.client`
  POST, `json.loads`, `base64.b64decode`, SHA-256, the file written under its hash, and
  one JSONL line (prompt, path, hash; no base64).
- `imagetask generate` with JSONL output, JSONL with `--save-artifacts` (with and without
  `--no-inline-images`), and Parquet with and without `--save-artifacts`, at the default
  batch and shard sizes, then at 4x each (memory must not follow them).
- `imagetask generate --model openai-batch:` against the test suite's loopback Batch API
  server (`tests/support/batch_server.py`, a process of its own for each contender,
  answering unique PNGs of the same size): `--batch-jobs` jobs of `--job-requests`
  requests in flight, then twice as many, over `--batch-rounds` times as many prompts as
  the jobs hold (memory must follow neither). Its images are made while the jobs run, so
  its wall time includes the server's work.

    python benches/bench_real_images.py
    python benches/bench_real_images.py --prompts 200 --in-flight 16 --repeats 3
    python benches/bench_real_images.py --only batch --batch-jobs 2 --job-requests 200
    python benches/bench_real_images.py --only batch --batch-jobs 2 --job-requests 200 \
        --batch-rounds 4
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SIDE = 1024
ROOT = Path(__file__).resolve().parent.parent


def random_png(seed: int) -> bytes:
    """A `SIDE`x`SIDE` RGB PNG of random pixels (incompressible: about 3 MB)."""
    raw = b"".join(b"\x00" + os.urandom(SIDE * 3) for _ in range(SIDE))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"tEXt", f"seed\x00{seed}".encode()),
            chunk(b"IDAT", zlib.compress(raw, 0)),
            chunk(b"IEND", b""),
        ]
    )


def serve(prompts: int) -> None:
    """The server process: makes every answer body, then prints its URL and serves."""
    bodies = {
        f"prompt {i}": json.dumps(
            {"created": 0, "data": [{"b64_json": base64.b64encode(random_png(i)).decode()}]}
        ).encode()
        for i in range(prompts)
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = bodies[request["prompt"]]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()


def serve_batch() -> None:
    """The Batch API server process: answers each request with a unique PNG of random
    pixels, then prints its URL and serves."""
    sys.path.insert(0, str(ROOT))
    from tests.support.batch_server import batch_server

    with batch_server() as server:
        serials = iter(range(1 << 30))
        server.image = lambda prompt, size="", place=0: random_png(next(serials))  # type: ignore[method-assign]
        print(server.url, flush=True)
        sys.stdin.read()


def started(flag: str, prompts: int) -> tuple[subprocess.Popen[str], str]:
    """A server process (`--serve` or `--serve-batch`) and its URL."""
    server = subprocess.Popen(
        [sys.executable, __file__, flag, "--prompts", str(prompts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def loop(url: str, prompts: int, in_flight: int, out: Path) -> None:
    """The floor: the simplest loop doing the same work per image (in its own process)."""
    import hashlib
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    images = out / "images"
    images.mkdir(parents=True)
    lines = (out / "data.jsonl").open("w", encoding="utf-8")
    lock = threading.Lock()
    todo = iter(range(prompts))

    def worker() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port)
        while True:
            with lock:
                index = next(todo, None)
            if index is None:
                return
            prompt = f"prompt {index}"
            body = json.dumps({"model": "gpt-image-1", "prompt": prompt})
            connection.request(
                "POST",
                "/v1/images/generations",
                body,
                {"Content-Type": "application/json", "Authorization": "Bearer bench"},
            )
            answer = json.loads(connection.getresponse().read())
            image = base64.b64decode(answer["data"][0]["b64_json"])
            digest = hashlib.sha256(image).hexdigest()
            path = images / f"{digest}.png"
            path.write_bytes(image)
            line = json.dumps({"prompt": prompt, "image_path": str(path), "sha256": digest})
            with lock:
                lines.write(line + "\n")

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines.close()


@dataclass(frozen=True)
class Contender:
    """One command to measure, the images it makes, and whether it needs a Batch API
    server of its own (its URL given as `{url}`)."""

    command: list[str]
    images: int
    batch_api: bool = False


@dataclass(frozen=True)
class Measure:
    """One contender's run: wall seconds, CPU seconds (user + system) and peak RSS (MB)."""

    wall: float
    cpu: float
    rss: float


def measured(command: list[str]) -> Measure:
    """Runs `command` as a process of its own and measures it."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(command)} exited with {status}")
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def batch_contenders(args: argparse.Namespace, work: Path) -> dict[str, Contender]:
    """The Batch API runs: `--batch-jobs` jobs in flight, then twice as many, each over
    `--batch-rounds` times as many prompts as its jobs hold."""
    found = {}
    for jobs in (args.batch_jobs, 2 * args.batch_jobs):
        prompts = work / f"batch-prompts-{jobs}.txt"
        images = jobs * args.job_requests * args.batch_rounds
        prompts.write_text("".join(f"prompt {i}\n" for i in range(images)))
        command = [
            sys.executable, "-m", "imagetask", "generate", str(prompts), "--quiet",
            "--model", "openai-batch:gpt-image-1", "--base-url", "{url}/v1",
            "--api-key-env", "HOME", "--batch-size", str(args.job_requests),
            "--jobs-in-flight", str(jobs), "--poll-every", "0.05",
        ]  # fmt: skip
        name = f"Batch API, {jobs} jobs of {args.job_requests}, {images:,} prompts"
        found[name] = Contender(command, images, batch_api=True)
    return found


def contenders(url: str, args: argparse.Namespace, work: Path) -> dict[str, Contender]:
    if args.only == "batch":
        return batch_contenders(args, work)
    prompts = work / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(args.prompts)))
    generate = [
        sys.executable,
        "-m",
        "imagetask",
        "generate",
        str(prompts),
        "--quiet",
        "--model",
        "openai:gpt-image-1",
        "--base-url",
        f"{url}/v1",
        "--api-key-env",
        "HOME",
        "--max-concurrency",
        str(args.in_flight),
    ]
    loop_command = [sys.executable, __file__, "--loop", url, "--prompts", str(args.prompts)]
    loop_command += ["--in-flight", str(args.in_flight)]
    commands = {
        "the loop": loop_command,
        "JSONL": [*generate],
        "JSONL --save-artifacts": [*generate, "--save-artifacts"],
        "JSONL --save-artifacts --no-inline-images": [
            *generate,
            "--save-artifacts",
            "--no-inline-images",
        ],
        "Parquet --save-artifacts": [*generate, "--format", "parquet", "--save-artifacts"],
        "JSONL --save-artifacts, 4x batch": [
            *generate,
            "--save-artifacts",
            "--batch-size",
            "200",
        ],
        "Parquet --save-artifacts, 4x batch and shard": [
            *generate,
            "--format",
            "parquet",
            "--save-artifacts",
            "--batch-size",
            "200",
            "--shard-mb",
            "2000",
        ],
        "Parquet": [*generate, "--format", "parquet"],
        "Parquet, 4x batch and shard": [
            *generate,
            "--format",
            "parquet",
            "--batch-size",
            "200",
            "--shard-mb",
            "2000",
        ],
    }
    found = {name: Contender(command, args.prompts) for name, command in commands.items()}
    if args.only != "http":
        found.update(batch_contenders(args, work))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--only", choices=["http", "batch"], help="only the HTTP or the Batch API contenders"
    )
    parser.add_argument("--batch-jobs", type=int, default=2, help="Batch API jobs in flight")
    parser.add_argument(
        "--batch-rounds",
        type=int,
        default=1,
        help="Batch API prompts as a multiple of the jobs in flight times their requests",
    )
    parser.add_argument("--job-requests", type=int, default=200, help="requests per job")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-batch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loop", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.prompts)
        return
    if args.serve_batch:
        serve_batch()
        return
    if args.loop:
        loop(args.loop, args.prompts, args.in_flight, args.out or Path.cwd() / "out")
        return
    server, url = started("--serve", 0 if args.only == "batch" else args.prompts)
    http = f"{args.prompts} prompts, {args.in_flight} in flight"
    batch = f"Batch API jobs of {args.job_requests} requests"
    shown = {"http": http, "batch": batch}.get(args.only or "", f"{http}; {batch}")
    print(
        f"unique {SIDE}x{SIDE} PNGs (~3 MB, ~4 MB base64): {shown}; {args.repeats} "
        f"repeat(s); {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
    )
    results: dict[str, list[Measure]] = {}
    try:
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                work = Path(folder)
                found = contenders(url, args, work)
                for name, contender in found.items():
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    full = [*contender.command, "--out" if name == "the loop" else "-o", str(out)]
                    results.setdefault(name, []).append(measured_against(contender, full))
    finally:
        server.terminate()
        server.wait()
    loop_runs = results.get("the loop")
    floor = statistics.median(m.wall for m in loop_runs) if loop_runs else None
    floor_cpu = statistics.median(m.cpu for m in loop_runs) / args.prompts if loop_runs else None
    print("| | wall | vs the loop | CPU per image | vs the loop | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        wall = statistics.median(m.wall for m in runs)
        cpu = statistics.median(m.cpu for m in runs) / found[name].images
        rss = statistics.median(m.rss for m in runs)
        wall_ratio = f"{wall / floor:.2f}x" if floor else "-"
        cpu_ratio = f"{cpu / floor_cpu:.2f}x" if floor_cpu else "-"
        print(
            f"| {name} | {wall:.2f} s | {wall_ratio} | {cpu * 1000:.1f} ms | "
            f"{cpu_ratio} | {rss:,.0f} MB |"
        )


def measured_against(contender: Contender, command: list[str]) -> Measure:
    """`command` measured, against a Batch API server of its own when it needs one."""
    if not contender.batch_api:
        return measured(command)
    server, url = started("--serve-batch", 0)
    try:
        return measured([part.replace("{url}", url) for part in command])
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
