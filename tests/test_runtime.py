"""Where a run's model calls run: on worker threads, or in place while they are quick."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from imagetask import ImageGeneration
from imagetask._runtime import CallDispatcher, Workers
from imagetask.models import PlaceholderImageGeneration
from tests.support.runs import lines, prompts


class Threads:
    """Calls that record the thread they ran on, each lasting `seconds`."""

    def __init__(self) -> None:
        self.seen: list[bool] = []  # per call: whether it ran on the calling thread

    def call(self, seconds: float) -> Any:
        def run() -> int:
            self.seen.append(threading.current_thread() is threading.main_thread())
            time.sleep(seconds)
            return len(self.seen)

        return run


def test_quick_calls_run_in_place_after_the_first_and_slow_ones_on_workers() -> None:
    workers = Workers(1, "test")
    calls = CallDispatcher(workers, quick_seconds=1.0)
    threads = Threads()
    try:
        results = [calls.submit(threads.call(0)).result() for _ in range(3)]
        slow = CallDispatcher(workers, quick_seconds=0.001)
        results += [slow.submit(threads.call(0.01)).result() for _ in range(2)]
    finally:
        workers.shutdown()
    assert results == [1, 2, 3, 4, 5]
    assert threads.seen == [False, True, True, False, False]


def test_a_call_in_place_hands_what_it_raises_to_its_future_ctrl_c_included() -> None:
    workers = Workers(1, "test")
    calls = CallDispatcher(workers, quick_seconds=1.0)
    try:
        assert calls.submit(lambda: 1).result() == 1  # on a worker: quick
        failed = calls.submit(lambda: 1 // 0)
        assert failed.done()
        with pytest.raises(ZeroDivisionError):
            failed.result()

        def interrupted() -> None:
            raise KeyboardInterrupt

        stopped = calls.submit(interrupted)
        with pytest.raises(KeyboardInterrupt):
            stopped.result()
    finally:
        workers.shutdown()


class RecordingPlaceholder(PlaceholderImageGeneration):
    """The placeholder, recording the thread of each call; each lasts `seconds` more."""

    def __init__(self, seconds: float) -> None:
        super().__init__(size="4x4")
        self.seconds = seconds
        self.on_main: list[bool] = []

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        self.on_main.append(threading.current_thread() is threading.main_thread())
        time.sleep(self.seconds)
        return super().generate(inputs, num_generations, **kwargs)


@pytest.mark.parametrize("seconds", [0.0, 0.02])
def test_a_run_writes_the_same_rows_wherever_its_model_calls_run(
    tmp_path: Path, seconds: float
) -> None:
    model = RecordingPlaceholder(seconds)
    task = ImageGeneration(image_generation_model=model, input_batch_size=2, num_generations=2)
    rows = prompts(40)
    summary = task.run(rows, tmp_path)
    reference = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="4x4"), num_generations=2
    )
    built = msgspec.json.decode(msgspec.json.encode(reference.process_batch(rows)))
    assert lines(tmp_path / "data.jsonl") == built
    assert (summary.rows_in, summary.rows_out, len(model.on_main)) == (40, 80, 20)
    assert model.on_main[0] is False
    if seconds:
        assert not any(model.on_main)
    else:  # quick calls; a busy machine may slow a few past the limit
        assert sum(model.on_main) >= 10
