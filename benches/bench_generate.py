"""End-to-end throughput of `imagetask generate` against the simplest Python+msgspec loop.

Both read a text file of prompts, make one placeholder PNG per prompt with the same
native function, build the same rows (base64 image, model name, raw output with the
image's sha256 reference, raw input) and write them to JSONL; the loop's output is
checked to be byte-identical to the command's. With `--parquet`, both read a Parquet file
of prompts and write Parquet (`--format parquet`): the loop is the simplest pyarrow code
(`iter_batches`, `pa.array`, `StructArray.from_arrays`, one `ParquetWriter`), and its
table is checked to equal the command's shards. The command also syncs its output and
checkpoint to disk (crash safety: at most every second by default, after every batch as
`imagetask-sync`); the loop does neither.
Each measurement is a fresh process; the table gives the median of the repeats, the
ratio to the loop, the CPU time the process used (user and system, every thread: time a
busy machine's other tenants take from it is not counted, the command's model thread is),
and the process's peak RSS.

    python benches/bench_generate.py                  # 10k and 100k prompts
    python benches/bench_generate.py --prompts 100000 --repeats 5
    python benches/bench_generate.py --parquet --prompts 100000
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import hashlib
import os
import platform
import resource
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


def parquet_baseline(source: Path, output: Path, batch_size: int) -> None:
    """The simplest pyarrow loop doing the command's work with Parquet in and out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    width, height = (int(side) for side in SIZE.split("x"))
    name = "image_generation_0"
    encode = msgspec.json.encode
    writer = None
    for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_size):
        prompt = batch.column("prompt")
        prompts = prompt.to_pylist()
        made = _core.placeholder_images(
            prompts, num_generations=1, seed=0, width=width, height=height
        )
        images = [image for [image] in made]
        raw = [
            encode({"images": ["sha256:" + hashlib.sha256(image).hexdigest()], "seed": 0})
            for image in images
        ]
        statistics = [encode({"image_bytes": len(image)}) for image in images]
        count = len(images)
        nothing = pa.nulls(count, pa.string())
        table = pa.table(
            {
                "prompt": prompt,
                "image": pa.StructArray.from_arrays(
                    [pa.array(images, pa.binary()), nothing], names=["bytes", "path"]
                ),
                "model_name": pa.array(["placeholder"] * count),
                "distilabel_metadata": pa.StructArray.from_arrays(
                    [
                        pa.array(raw, pa.string()),
                        prompt,
                        pa.array(statistics, pa.string()),
                        nothing,
                    ],
                    names=[
                        f"raw_output_{name}",
                        f"raw_input_{name}",
                        f"statistics_{name}",
                        f"error_{name}",
                    ],
                ),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(output, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def same_tables(loop: Path, out: Path) -> bool:
    """Whether the loop's Parquet file holds the rows of the command's shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = sorted((out / "data").glob("*.parquet"))
    made = pa.concat_tables(pq.read_table(shard) for shard in shards)
    return bool(pq.read_table(loop).to_pylist() == made.to_pylist())


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


def timed(argv: list[str], work: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user and system, every thread) and peak RSS (MB, the
    process's own VmHWM) of a fresh Python process."""
    peak = work / "peak"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *argv],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "BENCH_PEAK": str(peak)},
        check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {done.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, int(peak.read_text()) // 1024


def measure(prompts: int, repeats: int, work: Path, parquet: bool) -> list[str]:
    texts = [f"a photo of object number {i}" for i in range(prompts)]
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = work / f"prompts-{prompts}.parquet"
        pq.write_table(pa.table({"prompt": texts}), source)
    else:
        source = work / f"prompts-{prompts}.txt"
        source.write_text("".join(f"{text}\n" for text in texts))
    formats = ["--format", "parquet"] if parquet else []
    lines = []
    for batch_size in BATCH_SIZES:
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in CONTENDERS}
        for repeat in range(repeats):
            outputs = []
            for name, checkpoint_every in (("imagetask", "1"), ("imagetask-sync", "0")):
                out = work / f"{name}-{prompts}-{batch_size}-{repeat}"
                command = ["-m", "imagetask.cli", "generate", str(source), "-o", str(out)]
                options = ["--size", SIZE, "--batch-size", str(batch_size), "--quiet", *formats]
                checkpoint = ["--checkpoint-every", checkpoint_every]
                results[name].append(timed([*command, *options, *checkpoint], work))
                outputs.append(out)
            loop_out = work / f"loop-{prompts}-{batch_size}-{repeat}"
            loop = [__file__, "--baseline", str(source), str(loop_out), str(batch_size)]
            results["python"].append(timed(loop, work))
            for out in outputs:
                same = (
                    same_tables(loop_out, out)
                    if parquet
                    else filecmp.cmp(loop_out, out / "data.jsonl", shallow=False)
                )
                if not same:
                    raise SystemExit("the loop's output differs from the command's")
                shutil.rmtree(out)
            loop_out.unlink()
        medians = {
            name: statistics.median(seconds for seconds, _, _ in runs)
            for name, runs in results.items()
        }
        cpu = {
            name: statistics.median(seconds for _, seconds, _ in runs)
            for name, runs in results.items()
        }
        for name, runs in results.items():
            rate = prompts / medians[name]
            ratio = medians["python"] / medians[name]
            rss = max(mb for _, _, mb in runs)
            best = prompts / min(seconds for seconds, _, _ in runs)
            lines.append(
                f"| {prompts:,} | {batch_size} | {name} | {rate:,.0f} | {best:,.0f} "
                f"| {ratio:.2f}x | {cpu[name]:.2f} | {cpu['python'] / cpu[name]:.2f}x "
                f"| {rss} |"
            )
    return lines


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--baseline":
        source = Path(sys.argv[2])
        loop = parquet_baseline if source.suffix == ".parquet" else baseline
        loop(source, Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--parquet", action="store_true", help="Parquet in and out, against a pyarrow loop"
    )
    args = parser.parse_args()
    kind = "Parquet in and out" if args.parquet else "JSONL"
    print(
        f"# imagetask generate, placeholder {SIZE}, {kind}; {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"median of {args.repeats} (whole process, startup included)\n"
    )
    print(
        "| prompts | batch | contender | rows/s (median) | rows/s (best) | vs python "
        "| CPU s (median) | vs python (CPU) | peak RSS MB |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work:
        for prompts in args.prompts:
            for line in measure(prompts, args.repeats, Path(work), args.parquet):
                print(line, flush=True)


if __name__ == "__main__":
    main()
