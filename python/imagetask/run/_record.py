"""What an ended run says of itself: its record `run.json` (the `RunSummary`, its speeds
and the task's dump) and the text of its dataset card."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagetask._durable import write_atomic
from imagetask.io._parquet import DATA
from imagetask.io._run_folder import SUMMARY
from imagetask.outcome import Cost

if TYPE_CHECKING:
    from imagetask.io._checkpoint import Checkpoint
    from imagetask.outcome import RunSummary
    from imagetask.run._runnable import RunnableTask

__all__ = ["dataset_card", "write_record"]


def write_record(summary: RunSummary, dump: dict[str, Any]) -> None:
    """Writes `run.json` in the folder of a run that ended (not interrupted): `summary`,
    its speeds and `dump`, the task's."""
    data = Path(summary.data).name
    seconds = max(summary.seconds, 1e-9)
    record = {
        **asdict(summary),
        "data": data + ("/" if data == DATA else ""),
        "images": summary.images,
        "rows_per_s": round(summary.rows_in / seconds, 1),
        "images_per_s": round(summary.images / seconds, 1),
        "task": dump,
    }
    write_atomic(Path(summary.output) / SUMMARY, json.dumps(record, indent=2).encode() + b"\n")


def dataset_card(task: RunnableTask, done: Checkpoint, output: Path) -> str:
    """The text of the dataset card of the run in `output` that `done` records."""
    model = task.image_generation_model
    generations = done.rows_in * task.num_generations
    images = generations - done.failed
    cost = Cost(done.cost_usd, done.priced_images).describe(images)
    status = "complete" if done.complete else "not complete (resume it to go on)"
    return (
        f"# {output.name or 'imagetask output'}\n\n"
        f"Images generated with imagetask: task `{type(task).__name__}` (`{task.name}`), "
        f"model `{model.model_name}` ({type(model).__name__}), "
        f"{task.num_generations} generation(s) per input row.\n\n"
        "| input rows | output rows | images | failed generations | run |\n"
        "| --- | --- | --- | --- | --- |\n"
        f"| {done.rows_in:,} | {done.rows_out:,} | {images:,} | "
        f"{done.failed:,} | {status} |\n\n"
        f"Estimated cost of the images, from the backend's prices: {cost}"
        f"{' (the backend has no prices)' if not done.priced_images else ''}.\n\n"
        "The task's configuration is in `run.json`; failed generations have a null image "
        f"and their error in `{task.output_schema.metadata}`."
    )
