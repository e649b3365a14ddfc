"""Throughput inside the engines: Hugging Face `datasets` and Ray Data.

The placeholder backend (native PNGs of `--size` pixels, no network) over `--rows`
prompts, `--batch` rows per batch; each measurement runs once untimed, then `--repeats`
times (median and best of input rows/s):

- datasets arrow: `imagetask.integrations.datasets.generate` (`Dataset.map` on Arrow
  batches, `process_arrow`, the `Image()` feature), written to the dataset's cache file;
- datasets dicts (the baseline): the same `Dataset.map` written by hand, with python
  batches turned into dict rows for `process_batch` and its rows back into columns;
- datasets arrow, `num_proc=2`;
- ray, 1 and 2 actors: `imagetask.integrations.ray.generate(...).materialize()` on a
  local cluster of 2 CPUs started once (actor start-up is in the time, as a user pays it).

    python benches/bench_engines.py
    python benches/bench_engines.py --rows 200000 --size 32x32 --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", default="8x8")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def make_task(args: argparse.Namespace, **fields: Any) -> Any:
    from imagetask import ImageGeneration
    from imagetask.models import PlaceholderImageGeneration

    model = PlaceholderImageGeneration(size=args.size)
    return ImageGeneration(image_generation_model=model, input_batch_size=args.batch, **fields)


def by_hand(task: Any) -> Callable[[dict[str, list[Any]]], dict[str, list[Any]]]:
    """The map function a user writes without the integration: dict rows both ways."""

    def generate(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        names = list(batch)
        rows = [
            dict(zip(names, values, strict=True)) for values in zip(*batch.values(), strict=True)
        ]
        out = task.process_batch(rows)
        return {name: [row[name] for row in out] for name in out[0]} if out else {}

    return generate


def measure(repeats: int, rows: int, run: Callable[[int], int]) -> list[float]:
    """Input rows/s of each repeat, after one untimed run (imports, first-call costs);
    `run(i)` returns the number of output rows."""
    run(-1)
    rates = []
    for repeat in range(repeats):
        start = time.perf_counter()
        produced = run(repeat)
        elapsed = time.perf_counter() - start
        assert produced == rows, (produced, rows)
        rates.append(rows / elapsed)
    return rates


def main() -> None:
    args = parse()
    import datasets
    import pyarrow as pa
    import ray
    import ray.data

    from imagetask.integrations import datasets as hf
    from imagetask.integrations import ray as on_ray

    datasets.disable_progress_bars()
    prompts = [f"a photo of object {i}" for i in range(args.rows)]
    table = pa.table({"prompt": prompts, "id": list(range(args.rows))})
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        datasets.Dataset(table).save_to_disk(Path(folder) / "input")
        dataset = datasets.load_from_disk(Path(folder) / "input")
        arrow_task = make_task(args)
        dict_task = make_task(args, images_as_bytes=True)
        results["datasets arrow"] = measure(
            args.repeats,
            args.rows,
            lambda i: hf.generate(dataset, arrow_task, new_fingerprint=f"arrow{i}").num_rows,
        )
        results["datasets dicts"] = measure(
            args.repeats,
            args.rows,
            lambda i: (
                dataset.map(
                    by_hand(dict_task),
                    batched=True,
                    batch_size=args.batch,
                    new_fingerprint=f"dicts{i}",
                ).num_rows
            ),
        )
        results["datasets arrow num_proc=2"] = measure(
            args.repeats,
            args.rows,
            lambda i: (
                hf.generate(dataset, arrow_task, num_proc=2, new_fingerprint=f"arrow2-{i}").num_rows
            ),
        )

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    blocks = [
        table.slice(offset, args.batch * 10) for offset in range(0, args.rows, args.batch * 10)
    ]
    for actors in (1, 2):
        task = make_task(args)
        results[f"ray {actors} actor{'s' if actors > 1 else ''}"] = measure(
            args.repeats,
            args.rows,
            lambda i, task=task, actors=actors: (
                on_ray.generate(ray.data.from_arrow(blocks), task, concurrency=actors)
                .materialize()
                .count()
            ),
        )
    ray.shutdown()

    baseline = statistics.median(results["datasets dicts"])
    print(
        f"# {platform.machine()}, {platform.python_version()}; rows={args.rows:,}, "
        f"batch={args.batch}, size={args.size}, repeats={args.repeats}"
    )
    print("| contender | median input rows/s | best input rows/s | vs datasets dicts |")
    print("|---|---:|---:|---:|")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"| {name} | {median:,.0f} | {max(rates):,.0f} | {median / baseline:.2f}x |")
    one, two = (statistics.median(results[name]) for name in ("ray 1 actor", "ray 2 actors"))
    print(f"ray 2 actors / 1 actor: {two / one:.2f}x")


if __name__ == "__main__":
    main()
