"""End-to-end throughput of `imagetask generate` against the simplest Python+msgspec loop.

Both read a text file of prompts, make one placeholder PNG per prompt with the same
native function, build the same rows (base64 image, model name, raw output with the
image's sha256 reference, raw input) and write them to JSONL; the loop's output is
checked to be byte-identical to the command's. The command also syncs its output and
checkpoint to disk (crash safety: at most every second by default, after every batch as
`imagetask-sync`); the loop does neither.
Each measurement is a fresh process; the table gives the median of the repeats, the
ratio to the loop, and the process's peak RSS.

    python benches/bench_generate.py                  # 10k and 100k prompts
    python benches/bench_generate.py --prompts 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from imagetask import _core

SIZE = "4x4"
BATCH_SIZES = (50, 1000)
CONTENDERS = ("imagetask", "imagetask-sync", "python")
"""`imagetask-sync` checkpoints after every batch (`--checkpoint-every 0`)."""


def baseline(source: Path, output: Path, batch_size: int) -> None:
    """The simplest loop doing the command's work (run in its own process)."""
    encoder = msgspec.json.Encoder()
    width, height = (int(side) for side in SIZE.split("x"))
    name = "image_generation_0"
    with source.open(encoding="utf-8") as lines, output.open("wb") as out:
        batch: list[str] = []
        for line in lines:
            prompt = line.rstrip("\n")
            if prompt.strip():
                batch.append(prompt)
            if len(batch) == batch_size:
                out.write(encoder.encode_lines(_rows(batch, width, height, name)))
                batch = []
        if batch:
            out.write(encoder.encode_lines(_rows(batch, width, height, name)))


def _rows(batch: list[str], width: int, height: int, name: str) -> list[dict[str, Any]]:
    images = _core.placeholder_images(batch, num_generations=1, seed=0, width=width, height=height)
    rows = []
    for prompt, [image] in zip(batch, images, strict=True):
        rows.append(
            {
                "prompt": prompt,
                "image": base64.b64encode(image).decode(),
                "model_name": "placeholder",
                "distilabel_metadata": {
                    f"raw_output_{name}": {
                        "images": ["sha256:" + hashlib.sha256(image).hexdigest()],
                        "seed": 0,
                    },
                    f"raw_input_{name}": prompt,
                    f"statistics_{name}": {"image_bytes": len(image)},
                },
            }
        )
    return rows


_WRAPPER = """
import atexit, os, runpy, sys
def peak():
    with open('/proc/self/status') as status, open(os.environ['BENCH_PEAK'], 'w') as out:
        out.write(next(l for l in status if l.startswith('VmHWM')).split()[1])
atexit.register(peak)
sys.argv = sys.argv[1:]
if sys.argv[0] == '-m':
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
else:
    runpy.run_path(sys.argv[0], run_name='__main__')
"""


def timed(argv: list[str], work: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB, the process's own VmHWM) of a fresh Python process."""
    peak = work / "peak"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *argv],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "BENCH_PEAK": str(peak)},
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {done.returncode}")
    return seconds, int(peak.read_text()) // 1024


def measure(prompts: int, repeats: int, work: Path) -> list[str]:
    source = work / f"prompts-{prompts}.txt"
    source.write_text("".join(f"a photo of object number {i}\n" for i in range(prompts)))
    lines = []
    for batch_size in BATCH_SIZES:
        results: dict[str, list[tuple[float, int]]] = {name: [] for name in CONTENDERS}
        for repeat in range(repeats):
            outputs = []
            for name, checkpoint_every in (("imagetask", "1"), ("imagetask-sync", "0")):
                out = work / f"{name}-{prompts}-{batch_size}-{repeat}"
                command = ["-m", "imagetask.cli", "generate", str(source), "-o", str(out)]
                options = ["--size", SIZE, "--batch-size", str(batch_size), "--quiet"]
                checkpoint = ["--checkpoint-every", checkpoint_every]
                results[name].append(timed([*command, *options, *checkpoint], work))
                outputs.append(out)
            loop_out = work / f"loop-{prompts}-{batch_size}-{repeat}.jsonl"
            results["python"].append(
                timed([__file__, "--baseline", str(source), str(loop_out), str(batch_size)], work)
            )
            for out in outputs:
                if not filecmp.cmp(loop_out, out / "data.jsonl", shallow=False):
                    raise SystemExit("the loop's output differs from the command's")
                shutil.rmtree(out)
            loop_out.unlink()
        medians = {
            name: statistics.median(seconds for seconds, _ in runs)
            for name, runs in results.items()
        }
        for name, runs in results.items():
            rate = prompts / medians[name]
            ratio = medians["python"] / medians[name]
            rss = max(mb for _, mb in runs)
            best = prompts / min(seconds for seconds, _ in runs)
            lines.append(
                f"| {prompts:,} | {batch_size} | {name} | {rate:,.0f} | {best:,.0f} "
                f"| {ratio:.2f}x | {rss} |"
            )
    return lines


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--baseline":
        baseline(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"# imagetask generate, placeholder {SIZE}, JSONL; {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"median of {args.repeats} (whole process, startup included)\n"
    )
    print(
        "| prompts | batch | contender | rows/s (median) | rows/s (best) | vs python "
        "| peak RSS MB |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work:
        for prompts in args.prompts:
            for line in measure(prompts, args.repeats, Path(work)):
                print(line, flush=True)


if __name__ == "__main__":
    main()
