"""A run's memory: its peak does not grow with the run's length nor the shard size, the
answered batches held behind a slow one are bounded by the bytes of their images, and a
worker keeps nothing of a batch it ran."""

from __future__ import annotations

import base64
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from imagetask import ImageGeneration
from imagetask._runtime import Workers
from imagetask.run import _runner as runner
from tests.support.memory import peak_mb as memory_peak

IMAGE_BYTES = 1 << 20

RUN = """
import base64, os, sys
from imagetask import ImageGeneration
from imagetask._runtime import Workers
from imagetask.testing import ScriptedModel

rows, batch, inline = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "inline"

def answer(prompt, n):
    image = b"\\x89PNG\\r\\n\\x1a\\n" + os.urandom({size})
    return [{{"images": [base64.b64encode(image).decode()]}}]

task = ImageGeneration(
    image_generation_model=ScriptedModel(answer),
    input_batch_size=batch,
    save_artifacts=True,
    inline_images=inline,
)
summary = task.run(({{"prompt": f"p{{i}}"}} for i in range(rows)), sys.argv[4])
assert (summary.rows_out, summary.failed) == (rows, 0), summary
"""


def peak_mb(tmp_path: Path, rows: int, batch: int, inline: bool) -> int:
    """The peak RSS (MB) of a process running `rows` rows of 1 MB images."""
    out = tmp_path / f"run-{rows}-{batch}-{inline}"
    mode = "inline" if inline else "paths"
    peak = memory_peak(RUN.format(size=IMAGE_BYTES), str(rows), str(batch), mode, str(out))
    assert len(list((out / "artifacts/image_generation_0/images").iterdir())) == rows
    return peak


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "paths-only"])
def test_peak_memory_does_not_grow_with_the_run_length(tmp_path: Path, inline: bool) -> None:
    short = peak_mb(tmp_path, 40, 8, inline)
    long = peak_mb(tmp_path, 160, 8, inline)
    # 120 more images of 1 MB (1.4 MB of base64 each): were they held, 160 MB or more.
    assert long - short < 25, (short, long)


PARQUET_RUN = """
import base64, os, sys
from imagetask import ImageGeneration
from imagetask._runtime import Workers
from imagetask.io import _parquet
from imagetask.testing import ScriptedModel

rows, shard = int(sys.argv[1]), int(sys.argv[2])
_parquet.ROW_GROUP_BYTES = 8 << 20
_parquet.STAGED_BATCH_BYTES = 1 << 20

def answer(prompt, n):
    image = b"\\x89PNG\\r\\n\\x1a\\n" + os.urandom({size})
    return [{{"images": [base64.b64encode(image).decode()]}}]

task = ImageGeneration(
    image_generation_model=ScriptedModel(answer), input_batch_size=16, save_artifacts=True
)
summary = task.run(
    ({{"prompt": f"p{{i}}"}} for i in range(rows)), sys.argv[3], format="parquet",
    shard_bytes=shard,
)
assert (summary.rows_out, summary.failed) == (rows, 0), summary
"""


def parquet_peak_mb(tmp_path: Path, rows: int, shard_mb: int) -> tuple[int, int]:
    """The peak RSS (MB) of a process writing `rows` rows of 1 MB images to Parquet, in
    shards of `shard_mb` MB and row groups of 8 MB, and the shards it wrote."""
    out = tmp_path / f"parquet-{rows}-{shard_mb}"
    peak = memory_peak(
        PARQUET_RUN.format(size=IMAGE_BYTES), str(rows), str(shard_mb << 20), str(out)
    )
    shards = sorted((out / "data").iterdir())
    assert sum(pq.read_metadata(shard).num_rows for shard in shards) == rows
    return peak, len(shards)


def test_parquet_peak_memory_does_not_grow_with_the_shard_size(tmp_path: Path) -> None:
    narrow, narrow_shards = parquet_peak_mb(tmp_path, 256, 32)
    wide, wide_shards = parquet_peak_mb(tmp_path, 256, 128)
    assert (narrow_shards, wide_shards) == (8, 2)
    # A shard held whole would cost 96 MB more at 4x the shard size.
    assert wide - narrow < 40, (narrow, wide)


class SlowFirstBatch:
    """Answers every batch at once with 1 MB images, but the first only once released;
    reports one idle request slot throughout, so that a run keeps starting batches."""

    model_name = "slow-first"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started_while_blocked = 0
        self._lock = threading.Lock()
        self._first = True

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def idle_slots(self) -> int:
        return 1

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> list[Any]:
        with self._lock:
            first, self._first = self._first, False
            if not self.release.is_set():
                self.started_while_blocked += 1
        if first:
            self.release.wait(10)
        image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(IMAGE_BYTES)).decode()
        return [[{"images": [image]}] for _ in inputs]


def test_answered_batches_held_behind_a_slow_one_are_bounded_by_their_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of 2 images of 1.4 MB of base64: 3 MB allows two answered batches held.
    monkeypatch.setattr(runner, "_HELD_IMAGE_BYTES", 3 << 20)
    model = SlowFirstBatch()
    task = ImageGeneration(image_generation_model=model, input_batch_size=2)
    threading.Timer(1.0, model.release.set).start()
    summary = task.run(({"prompt": f"p{i}"} for i in range(40)), tmp_path / "out")
    assert (summary.rows_out, summary.failed) == (40, 0)
    # The slow batch, the two answered ones, and the one started before their answers
    # were counted; without the bound, 16 (2 batches in flight x 8).
    assert 2 <= model.started_while_blocked <= 4, model.started_while_blocked


def test_a_worker_keeps_nothing_of_the_call_it_ran() -> None:
    class Work:
        def run(self) -> int:
            return 7

    work = Work()
    alive = weakref.ref(work)
    workers = Workers(1, "test")
    try:
        assert workers.submit(work.run).result() == 7
        del work
        deadline = time.monotonic() + 5
        while alive() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        # Kept until the worker's next call, it would hold a batch's answers meanwhile.
        assert alive() is None
    finally:
        workers.shutdown()
