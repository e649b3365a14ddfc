"""Row-building throughput: imagetask against plain Python and distilabel.

Each contender processes N input rows through its task's `process` in batches of 1000,
with a model that does no work: it returns answers built before timing (a distinct small
base64 image per generation). Every measurement runs in a fresh process with the default
garbage collector settings; the table reports the median and best of the repeats, the
ratios against the baselines measured in the same run, and each process's peak RSS.

    python benches/bench_rows.py                      # full matrix
    python benches/bench_rows.py --rows 10000 --repeats 3
    python benches/bench_rows.py --distilabel-python /path/to/venv/bin/python
    python benches/bench_rows.py --clock cpu          # process CPU time, on a shared machine
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
NAME = "image_generation_0"
MODEL = "bench-model"
CONTENDERS = ("imagetask", "python", "distilabel")


def make_rows(n_rows: int) -> list[dict[str, Any]]:
    return [{"prompt": f"a photo of object {i}", "id": i} for i in range(n_rows)]


def make_answers(n_rows: int, n: int) -> list[list[list[dict[str, Any]]]]:
    """Per batch, one answer per row: one dict holding `n` distinct 48-byte images."""
    pad = bytes(range(39))
    answers = []
    for start in range(0, n_rows, BATCH):
        batch = []
        for i in range(start, min(start + BATCH, n_rows)):
            images = [
                base64.b64encode(i.to_bytes(8, "little") + bytes([k]) + pad).decode()
                for k in range(n)
            ]
            batch.append([{"images": images}])
        answers.append(batch)
    return answers


class Replay:
    """Hands out the prepared answers batch after batch."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = iter(answers)

    def __call__(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        return next(self.answers)


def python_rows(
    batch: list[dict[str, Any]], answers: Any, n: int, raw: bool, group: bool
) -> list[dict[str, Any]]:
    """The plain-Python equivalent: the same rows, keys, metadata and content hashes."""
    out = []
    for row, entry in zip(batch, answers, strict=True):
        prompt = row["prompt"]
        upstream = row.get("distilabel_metadata") or {}
        images, metas = [], []
        for part in entry:
            for image in part["images"][:n]:
                meta = dict(upstream)
                if raw:
                    digest = hashlib.sha256(base64.b64decode(image)).hexdigest()
                    meta[f"raw_output_{NAME}"] = {"images": ["sha256:" + digest]}
                    meta[f"raw_input_{NAME}"] = prompt
                images.append(image)
                metas.append(meta)
        if group:
            out.append({**row, "image": images, "model_name": MODEL, "distilabel_metadata": metas})
        else:
            for image, meta in zip(images, metas, strict=True):
                out.append(
                    {**row, "image": image, "model_name": MODEL, "distilabel_metadata": meta}
                )
    return out


def imagetask_task(replay: Replay, n: int, raw: bool, group: bool) -> Any:
    """imagetask's `ImageGeneration` over a duck-typed model replaying `replay`."""
    from imagetask import ImageGeneration

    class Model:
        model_name = MODEL
        generate = staticmethod(replay)

        def load(self) -> None: ...

        def unload(self) -> None: ...

    return ImageGeneration(
        image_generation_model=Model(),
        num_generations=n,
        group_generations=group,
        add_raw_output=raw,
        add_raw_input=raw,
    )


def distilabel_task(replay: Any, n: int, raw: bool, group: bool) -> Any:
    """distilabel 1.5.3's `ImageGeneration`, loaded, over a model replaying `replay`."""
    import logging

    logging.disable(logging.WARNING)
    from distilabel.models.image_generation.base import ImageGenerationModel
    from distilabel.steps.tasks import ImageGeneration as DistilabelImageGeneration

    class DistilabelModel(ImageGenerationModel):  # type: ignore[misc]
        @property
        def model_name(self) -> str:
            return MODEL

        def generate(self, inputs: Any, num_generations: int = 1, **kwargs: Any) -> Any:
            return replay(inputs, num_generations)

    task = DistilabelImageGeneration(
        image_generation_model=DistilabelModel(),
        num_generations=n,
        group_generations=group,
        add_raw_output=raw,
        add_raw_input=raw,
    )
    task.load()
    return task


def worker(
    contender: str, n_rows: int, n: int, raw: bool, group: bool, clock: str
) -> dict[str, Any]:
    rows = make_rows(n_rows)
    replay = Replay(make_answers(n_rows, n))
    batches = [rows[start : start + BATCH] for start in range(0, n_rows, BATCH)]
    if contender == "imagetask":
        task = imagetask_task(replay, n, raw, group)

        def run(batch: list[dict[str, Any]]) -> int:
            return len(next(task.process(batch)))
    elif contender == "python":

        def run(batch: list[dict[str, Any]]) -> int:
            prompts = [row["prompt"] for row in batch]
            return len(python_rows(batch, replay(prompts, n), n, raw, group))
    else:
        task = distilabel_task(replay, n, raw, group)

        def run(batch: list[dict[str, Any]]) -> int:
            return len(next(task.process(batch)))

    timer = time.process_time if clock == "cpu" else time.perf_counter
    start = timer()
    produced = 0
    for batch in batches:
        produced += run(batch)
    elapsed = timer() - start
    return {
        "seconds": elapsed,
        "rows_out": produced,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(args: argparse.Namespace, python: str, contender: str, config: tuple[Any, ...]) -> Any:
    n_rows, n, raw, group = config
    return run_workers(
        python, __file__, contender, n_rows, args.repeats,
        ["--gens", str(n), "--raw", str(int(raw)), "--group", str(int(group)),
         "--clock", args.clock],
    )  # fmt: skip


def run_workers(
    python: str, script: str, contender: str, n_rows: int, repeats: int, options: list[str]
) -> Any:
    """Runs `script --worker contender` `repeats` times, each in a fresh process, and
    returns the median and best input rows/s and the peak RSS (None if it failed)."""
    runs = []
    for _ in range(repeats):
        run = run_worker(python, script, contender, n_rows, options)
        if run is None:
            return None
        runs.append(run)
    rates = [n_rows / run["seconds"] for run in runs]
    return {
        "median": statistics.median(rates),
        "best": max(rates),
        "rss": max(run["peak_rss_mb"] for run in runs),
        "rows_out": runs[0]["rows_out"],
    }


def run_worker(
    python: str, script: str, contender: str, n_rows: int, options: list[str]
) -> dict[str, Any] | None:
    """Runs `script --worker contender` once, in a fresh process: the figures it prints,
    or `None` if it failed (its error written to stderr)."""
    cmd = [python, script, "--worker", contender, "--rows", str(n_rows), *options]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(f"{contender} failed: {done.stderr[-2000:]}\n")
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def has_distilabel(python: str) -> bool:
    probe = [python, "-c", "import distilabel.steps.tasks"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--gens", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--raw", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--group", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--distilabel-python", default=sys.executable)
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="time the loop by the wall clock or by the process's CPU time (all threads)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.worker:
        result = worker(
            args.worker,
            args.rows[0],
            args.gens[0],
            bool(args.raw[0]),
            bool(args.group[0]),
            args.clock,
        )
        print(json.dumps(result))
        return

    with_distilabel = has_distilabel(args.distilabel_python)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; repeats={args.repeats}, batch={BATCH}, "
        f"clock={args.clock}"
    )
    print(
        "| rows | n | raw | grouped | contender | median input rows/s | best input rows/s | "
        "vs python | vs distilabel | peak RSS MB |"
    )
    print("|---:|---:|:-:|:-:|---|---:|---:|---:|---:|---:|")
    for config in itertools.product(args.rows, args.gens, args.raw, args.group):
        n_rows, n, raw, group = config
        results = {
            "imagetask": measure(args, sys.executable, "imagetask", config),
            "python": measure(args, sys.executable, "python", config),
        }
        # distilabel ignores group_generations (it always yields one row per input)
        if with_distilabel and not group:
            results["distilabel"] = measure(args, args.distilabel_python, "distilabel", config)
        for name, result in results.items():
            if result is None:
                continue
            base_py = results.get("python")
            base_dl = results.get("distilabel")
            vs_py = f"{result['median'] / base_py['median']:.2f}x" if base_py else "-"
            vs_dl = f"{result['median'] / base_dl['median']:.2f}x" if base_dl else "-"
            print(
                f"| {n_rows:,} | {n} | {'on' if raw else 'off'} | {'yes' if group else 'no'} "
                f"| {name} | {result['median']:,.0f} | {result['best']:,.0f} | {vs_py} | {vs_dl} "
                f"| {result['rss']:,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
