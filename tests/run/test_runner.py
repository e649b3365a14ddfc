"""Running a whole dataset: readers, sinks, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from tests.support.runs import lines, make_task, prompts


def expected(rows: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    """The rows `process_batch` gives, as they read back from JSON."""
    built = make_task(**fields).process_batch(rows)
    return msgspec.json.decode(msgspec.json.encode(built))  # type: ignore[no-any-return]


def test_a_run_writes_every_row_in_order_with_its_summary(tmp_path: Path) -> None:
    rows = prompts(10)
    summary = make_task(num_generations=2).run(rows, tmp_path)
    assert lines(tmp_path / "data.jsonl") == expected(rows, num_generations=2)
    assert (summary.rows_in, summary.rows_out, summary.failed, summary.complete) == (
        10,
        20,
        0,
        True,
    )
    report = json.loads((tmp_path / "run.json").read_text())
    assert {k: report[k] for k in ("rows_in", "rows_out", "failed", "images", "data")} == {
        "rows_in": 10,
        "rows_out": 20,
        "failed": 0,
        "images": 20,
        "data": "data.jsonl",
    }
    assert report["task"]["num_generations"] == 2
    assert json.loads((tmp_path / "checkpoint.json").read_text())["complete"] is True


def test_a_generator_input_streams(tmp_path: Path) -> None:
    def rows() -> Any:
        for i in range(7):
            yield {"prompt": f"p{i}"}

    summary = make_task().run(rows(), tmp_path)
    assert [row["prompt"] for row in lines(tmp_path / "data.jsonl")] == [f"p{i}" for i in range(7)]
    assert summary.rows_in == 7


def test_a_limit_at_the_input_end_completes_the_run(tmp_path: Path) -> None:
    assert make_task().run(prompts(6), tmp_path, limit=6).complete is True


@pytest.mark.parametrize("as_bytes", [True, False])
def test_parquet_stores_image_bytes_whatever_images_as_bytes_says(
    tmp_path: Path, as_bytes: bool
) -> None:
    task = make_task(images_as_bytes=as_bytes)
    task.run(prompts(3), tmp_path, format="parquet")
    table = pq.read_table(tmp_path / "data")
    stored = [image["bytes"] for image in table.column("image").to_pylist()]
    expected = [row["image"] for row in make_task(images_as_bytes=True).process_batch(prompts(3))]
    assert stored == expected


def test_failure_rows_are_counted(tmp_path: Path) -> None:
    task = make_task(on_invalid_row="fail")
    summary = task.run([{"prompt": "a"}, {"other": 1}, {"prompt": "c"}], tmp_path)
    assert (summary.rows_out, summary.failed) == (3, 1)
    assert json.loads((tmp_path / "run.json").read_text())["images"] == 2
