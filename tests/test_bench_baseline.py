"""The benchmark's plain-Python baseline builds exactly the rows imagetask builds."""

from __future__ import annotations

import importlib.util
import itertools
from types import ModuleType
from typing import Any

import pytest

from tests.support.repository import ROOT


def load_bench(name: str = "bench_rows") -> ModuleType:
    """A benchmark script of `benches/`, loaded as a module."""
    path = ROOT / "benches" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("n", "raw", "group"), list(itertools.product([1, 4], [True, False], [False, True]))
)
def test_python_baseline_matches_imagetask(n: int, raw: bool, group: bool) -> None:
    bench = load_bench()
    rows = bench.make_rows(2500)
    answers = bench.make_answers(2500, n)

    task = bench.imagetask_task(bench.Replay(answers), n, raw, group)
    replay = bench.Replay(answers)
    for start in range(0, len(rows), bench.BATCH):
        batch: list[dict[str, Any]] = rows[start : start + bench.BATCH]
        expected = bench.python_rows(batch, replay([r["prompt"] for r in batch], n), n, raw, group)
        assert task.process_batch(batch) == expected
        assert len(expected) == len(batch) * (1 if group else n)


@pytest.mark.parametrize(("n", "raw"), list(itertools.product([1, 4], [True, False])))
def test_python_columnar_baseline_matches_imagetask(n: int, raw: bool) -> None:
    bench = load_bench("bench_arrow")
    table = bench.make_table(2500)
    answers = bench.make_answers(3, n)
    task = bench.imagetask_task(bench.Replay(answers), n, raw)
    replay = bench.Replay(answers)
    for start in range(0, table.num_rows, bench.BATCH):
        batch = table.slice(start, bench.BATCH)
        expected = bench.python_columns(batch, replay(batch.column("prompt").to_pylist()), n, raw)
        assert task.process_arrow(batch).equals(expected)
        assert expected.num_rows == batch.num_rows * n
