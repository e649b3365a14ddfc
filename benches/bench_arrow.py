"""Columnar throughput: `process_arrow` against plain Python columnar code and distilabel.

Each contender turns an Arrow table of N prompts into the output table in batches of
1000 rows, with a model that does no work: it replays answers built before timing (one
dict per input holding `n` distinct base64 images, 48 bytes each), cycling through at
most 100 prebuilt batches so that 10M rows fit in memory. Every measurement runs in a
fresh process with the default garbage collector settings; the contenders take turns,
one round of each after another, so that a machine that drifts moves them alike. The
table reports the median and best of the repeats, the ratios against the baselines
measured in the same run, the same ratios by the CPU time of the thread doing the work
(the time a busy machine's other tenants take from it left out), and each process's peak
RSS.

- imagetask: `ImageGeneration.process_arrow(batch)`.
- imagetask-bytes: the same, the model answering with the images' bytes (decoded before
  timing), as a backend of the native answer protocol hands them over: the ceiling.
- python: the simplest pure-Python columnar code building the same table (lists,
  `hashlib`, `base64`, `json`, `pyarrow`); `tests/test_bench_baseline.py` checks that it
  builds exactly imagetask's table.
- user: the code a user would write for the same information, not the same table:
  `base64.b64decode` per answer, `pa.array(images, pa.binary())`, `model_name` repeated,
  the metadata with `pa.StructArray.from_arrays` (the raw output as a struct of lists of
  the image payloads as the model gave them, the raw input the prompt), input columns
  repeated with `take`. No hashing, no JSON, no Hugging Face `Image` struct.
- distilabel (when the given interpreter has 1.5.3): `ImageGeneration.process` on the
  batch's rows (`to_pylist()`; its dict rows are not converted back to Arrow).

`--images` runs the second table: realistic images (about 100 KB of base64 each) against
the machine's own limit measured in the same run: SHA-256 of the same bytes with hashlib.

    python benches/bench_arrow.py                          # 1M rows, n=1 and 4, raw on/off
    python benches/bench_arrow.py --rows 100000 10000000 --gens 1 --raw 1 --contenders imagetask
    python benches/bench_arrow.py --images 2000
    python benches/bench_arrow.py --distilabel-python /path/to/venv/bin/python
    python benches/bench_arrow.py --worker imagetask --gens 1 --raw 0 --pool 2  # one run

A worker run prints its seconds as JSON; `--pool 2` replays 2 batches of answers over and
over, which stay in the cache, where the 100 of the table's runs do not: the difference is
what reading answers out of the cache costs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

BATCH = 1000
POOL = 100
NAME = "image_generation_0"
MODEL = "bench-model"
META = "distilabel_metadata"
CONTENDERS = ("imagetask", "imagetask-bytes", "python", "user", "distilabel")


def make_table(n_rows: int) -> Any:
    import pyarrow as pa

    prompts = pa.array([f"a photo of object {i}" for i in range(n_rows)], pa.string())
    return pa.table({"prompt": prompts, "id": pa.array(range(n_rows), pa.int64())})


def make_answers(n_batches: int, n: int, size: int = 48) -> list[list[list[dict[str, Any]]]]:
    """`n_batches` batches of answers: one dict per input holding `n` distinct images."""
    pad = bytes(range(256)) * (size // 256 + 1)
    answers = []
    for b in range(n_batches):
        batch = []
        for i in range(BATCH):
            serial = (b * BATCH + i).to_bytes(8, "little")
            images = [
                base64.b64encode(serial + bytes([k]) + pad[: size - 9]).decode() for k in range(n)
            ]
            batch.append([{"images": images}])
        answers.append(batch)
    return answers


class Replay:
    """Hands out the prepared answers batch after batch, cycling, cut to the batch."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        batch = self.answers[self.calls % len(self.answers)]
        self.calls += 1
        return batch[: len(inputs)]


def python_columns(table: Any, answers: Any, n: int, raw: bool) -> Any:
    """The plain-Python equivalent: the same columns, metadata and content hashes."""
    import pyarrow as pa

    prompts = table.column("prompt").to_pylist()
    images: list[bytes] = []
    raw_outputs: list[str] = []
    raw_inputs: list[str] = []
    rows: list[int] = []
    for index, (prompt, entry) in enumerate(zip(prompts, answers, strict=True)):
        for part in entry:
            for image in part["images"][:n]:
                data = base64.b64decode(image)
                images.append(data)
                rows.append(index)
                if raw:
                    ref = "sha256:" + hashlib.sha256(data).hexdigest()
                    raw_outputs.append(json.dumps({"images": [ref]}, separators=(",", ":")))
                    raw_inputs.append(prompt)
    count = len(images)
    take = pa.array(rows, pa.uint32())
    columns = {name: table.column(name).take(take) for name in table.column_names}
    columns["image"] = pa.StructArray.from_arrays(
        [pa.array(images, pa.binary()), pa.nulls(count, pa.string())], names=["bytes", "path"]
    )
    columns["model_name"] = pa.array([MODEL] * count, pa.string())
    fields: dict[str, Any] = {}
    if raw:
        fields[f"raw_output_{NAME}"] = pa.array(raw_outputs, pa.string())
        fields[f"raw_input_{NAME}"] = pa.array(raw_inputs, pa.string())
    fields[f"statistics_{NAME}"] = pa.nulls(count, pa.string())
    fields[f"error_{NAME}"] = pa.nulls(count, pa.string())
    columns[META] = pa.StructArray.from_arrays(list(fields.values()), names=list(fields))
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def user_columns(table: Any, answers: Any, n: int, raw: bool) -> Any:
    """The code a user would write for the same information (see the module)."""
    import pyarrow as pa

    images: list[bytes] = []
    rows: list[int] = []
    payloads: list[list[str]] = []
    for index, entry in enumerate(answers):
        for part in entry:
            given = part["images"][:n]
            for image in given:
                images.append(base64.b64decode(image))
                rows.append(index)
                if raw:
                    payloads.append([image])
    count = len(images)
    take = pa.array(rows, pa.uint32())
    columns = {name: table.column(name).take(take) for name in table.column_names}
    columns["image"] = pa.array(images, pa.binary())
    columns["model_name"] = pa.array([MODEL] * count, pa.string())
    if raw:
        raw_output = pa.StructArray.from_arrays(
            [pa.array(payloads, pa.list_(pa.string()))], names=["images"]
        )
        prompts = table.column("prompt").take(take).combine_chunks()
        columns[META] = pa.StructArray.from_arrays(
            [raw_output, prompts], names=[f"raw_output_{NAME}", f"raw_input_{NAME}"]
        )
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def imagetask_task(replay: Replay, n: int, raw: bool) -> Any:
    """imagetask's `ImageGeneration` over a duck-typed model replaying `replay`."""
    from imagetask import ImageGeneration

    class Model:
        model_name = MODEL
        generate = staticmethod(replay)

        def load(self) -> None: ...

        def unload(self) -> None: ...

    return ImageGeneration(
        image_generation_model=Model(), num_generations=n, add_raw_output=raw, add_raw_input=raw
    )


def worker(contender: str, n_rows: int, n: int, raw: bool, pool: int = POOL) -> dict[str, Any]:
    table = make_table(n_rows)
    replay = Replay(make_answers(min(pool, -(-n_rows // BATCH)), n))
    if contender == "imagetask-bytes":
        replay = Replay(
            [
                [
                    [{"images": [base64.b64decode(image) for image in part["images"]]}]
                    for [part] in batch
                ]
                for batch in replay.answers
            ]
        )
    if contender in ("imagetask", "imagetask-bytes"):
        task = imagetask_task(replay, n, raw)

        def run(batch: Any) -> int:
            return int(task.process_arrow(batch).num_rows)
    elif contender == "python":

        def run(batch: Any) -> int:
            answers = replay(batch.column("prompt").to_pylist(), n)
            return int(python_columns(batch, answers, n, raw).num_rows)
    elif contender == "user":

        def run(batch: Any) -> int:
            answers = replay(batch.column("prompt").to_pylist(), n)
            return int(user_columns(batch, answers, n, raw).num_rows)
    else:
        from bench_rows import distilabel_task  # beside this script

        task = distilabel_task(replay, n, raw, group=False)

        def run(batch: Any) -> int:
            return len(next(task.process(batch.to_pylist())))

    start, cpu = time.perf_counter(), time.thread_time()
    produced = 0
    for offset in range(0, n_rows, BATCH):
        produced += run(table.slice(offset, BATCH))
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "rows_out": produced,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def images_worker(count: int, size: int, as_bytes: bool) -> dict[str, Any]:
    """Large images: process_arrow's image bytes/s and hashlib's SHA-256 bytes/s."""
    table = make_table(count)
    answers = make_answers(-(-count // BATCH), 1, size)
    decoded = [base64.b64decode(entry[0]["images"][0]) for batch in answers for entry in batch]
    if as_bytes:  # as a Hugging Face endpoint answers: the image's bytes
        answers = [
            [[{"images": [base64.b64decode(e[0]["images"][0])]}] for e in b] for b in answers
        ]
    start = time.perf_counter()
    for data in decoded[:count]:
        hashlib.sha256(data).digest()
    hashed = time.perf_counter() - start
    task = imagetask_task(Replay(answers), 1, True)
    start = time.perf_counter()
    for offset in range(0, count, BATCH):
        task.process_arrow(table.slice(offset, BATCH))
    built = time.perf_counter() - start
    total = sum(len(data) for data in decoded[:count])
    return {"hashlib": total / hashed, "imagetask": total / built, "bytes": total}


def measure(
    args: argparse.Namespace, pythons: dict[str, str], config: tuple[Any, ...]
) -> dict[str, dict[str, float]]:
    """Every contender's median and best input rows/s (by the wall clock and by the
    worker thread's CPU time) and peak RSS over `args.repeats` rounds; each round runs
    every contender once, starting one further along, so that a machine that drifts
    between rounds moves every contender alike."""
    from bench_rows import run_worker  # beside this script

    n_rows, n, raw = config
    options = ["--gens", str(n), "--raw", str(int(raw))]
    names = list(pythons)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    failed: set[str] = set()
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            if name not in failed:
                result = run_worker(pythons[name], __file__, name, n_rows, options)
                if result is None:
                    failed.add(name)
                else:
                    runs[name].append(result)
    summary = {}
    for name, done in runs.items():
        if name in failed or not done:
            continue
        rates = [n_rows / run["seconds"] for run in done]
        cpu_rates = [n_rows / run["cpu_seconds"] for run in done]
        summary[name] = {
            "median": statistics.median(rates),
            "best": max(rates),
            "cpu": statistics.median(cpu_rates),
            "rss": max(run["peak_rss_mb"] for run in done),
        }
    return summary


def rows_table(args: argparse.Namespace) -> None:
    from bench_rows import has_distilabel  # beside this script

    with_distilabel = has_distilabel(args.distilabel_python)
    print(
        "| rows | n | raw | contender | median input rows/s | best input rows/s | "
        "vs python | vs user | vs distilabel | by CPU: vs user | vs distilabel | peak RSS MB |"
    )
    print("|---:|---:|:-:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config in itertools.product(args.rows, args.gens, args.raw):
        n_rows, n, raw = config
        pythons = {
            name: sys.executable
            for name in ("imagetask", "imagetask-bytes", "python", "user")
            if name in args.contenders
        }
        if with_distilabel and "distilabel" in args.contenders:
            pythons["distilabel"] = args.distilabel_python
        results = measure(args, pythons, config)
        for name, result in results.items():
            ratios = []
            for key, bases in (
                ("median", ("python", "user", "distilabel")),
                ("cpu", ("user", "distilabel")),
            ):
                for base in bases:
                    baseline = results.get(base)
                    ratios.append(f"{result[key] / baseline[key]:.2f}x" if baseline else "-")
            print(
                f"| {n_rows:,} | {n} | {'on' if raw else 'off'} | {name} "
                f"| {result['median']:,.0f} | {result['best']:,.0f} | {' | '.join(ratios)} "
                f"| {result['rss']:,.0f} |",
                flush=True,
            )


def images_table(args: argparse.Namespace) -> None:
    print(f"\n{args.images:,} images of {args.size:,} bytes, n=1, raw output on")
    print("| answers hold | contender | median MB/s of image bytes | vs limit |")
    print("|---|---|---:|---:|")
    for kind in ("base64", "bytes"):
        runs = []
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "--images-worker", str(args.images)]
            cmd += ["--size", str(args.size)] + (["--as-bytes"] if kind == "bytes" else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        limit = statistics.median(run["hashlib"] for run in runs)
        ours = statistics.median(run["imagetask"] for run in runs)
        print(
            f"| {kind} | hashlib SHA-256 of the same bytes (limit) | {limit / 1e6:,.0f} | 1.00x |"
        )
        print(f"| {kind} | imagetask process_arrow | {ours / 1e6:,.0f} | {ours / limit:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--images-worker", type=int)
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--gens", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--raw", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--images", type=int, default=0, help="also the large-image table")
    parser.add_argument("--size", type=int, default=100_000, help="bytes per large image")
    parser.add_argument("--as-bytes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--distilabel-python", default=sys.executable)
    parser.add_argument(
        "--pool", type=int, default=POOL, help="with --worker: the batches of answers replayed"
    )
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.rows[0], args.gens[0], bool(args.raw[0]), args.pool)
        print(json.dumps(result))
        return
    if args.images_worker:
        print(json.dumps(images_worker(args.images_worker, args.size, args.as_bytes)))
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; repeats={args.repeats}, batch={BATCH}"
    )
    if args.rows:
        rows_table(args)
    if args.images:
        images_table(args)


if __name__ == "__main__":
    main()
