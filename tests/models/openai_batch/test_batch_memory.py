"""A Batch API run holds the answer line being read, not its jobs' images: its peak memory
does not grow with the jobs in flight, their size or the run's length, and stays within a
few images of the same run's with tiny images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.memory import LargeBatchServer
from tests.support.memory import peak_mb as memory_peak
from tests.support.servers import serving

ROWS = 128

RUN = """
import sys
from imagetask import ImageGeneration
from imagetask.models import OpenAIBatchImageGeneration

url, out = sys.argv[1], sys.argv[2]
count, requests, jobs = (int(arg) for arg in sys.argv[3:])
task = ImageGeneration(
    image_generation_model=OpenAIBatchImageGeneration(
        model="gpt-image-1", base_url=url, api_key="k", output_dir=out,
        poll_interval=0.005, max_poll_interval=0.02,
    ),
    input_batch_size=requests,
    save_artifacts=True,
)
assert task.takes_stored_images
rows = ({"prompt": f"p{i}"} for i in range(count))
summary = task.run(rows, out, batches_in_flight=jobs)
assert (summary.rows_out, summary.failed) == (count, 0), summary
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LargeBatchServer]:
    with serving(LargeBatchServer()) as server:
        yield server


def peak_mb(server: LargeBatchServer, out: Path, requests: int, jobs: int, rows: int = ROWS) -> int:
    """The peak RSS (MB) of a process running `rows` rows of the server's images in jobs
    of `requests`, `jobs` of them in flight."""
    peak = memory_peak(RUN, f"{server.url}/v1", str(out), str(rows), str(requests), str(jobs))
    assert len(list((out / "artifacts/image_generation_0/images").iterdir())) == rows
    assert not (out / ".spool").exists()
    assert sorted(path.name for path in (out / "batch-jobs").iterdir()) == ["journal.jsonl"]
    return peak


def test_peak_memory_does_not_grow_with_the_jobs_in_flight_or_the_runs_length(
    server: LargeBatchServer, tmp_path: Path
) -> None:
    # The lower of two runs: a peak is the highest of moments whose overlap varies.
    small = min(peak_mb(server, tmp_path / f"2-jobs-of-16-{n}", 16, 2) for n in range(2))
    large = peak_mb(server, tmp_path / "4-jobs-of-32", 32, 4)
    long = min(
        peak_mb(server, tmp_path / f"4-jobs-of-8-{n}", 8, 4, rows=4 * ROWS) for n in range(2)
    )
    noise, server.noise = server.noise, b""
    try:
        tiny = peak_mb(server, tmp_path / "tiny", 32, 4)
    finally:
        server.noise = noise
    # 4 jobs of 32 hold every row at once: were their images held, 96 MB more or more.
    assert large - small < 16, (small, large)
    # 64 output files: each read on a thread of its own would leave that thread's memory
    # of the file's largest line and image behind (17-21 MB more over the run).
    assert long - small < 13, (small, long)
    # One answer line read at a time (1.4 MB, its image decoded), the jobs' downloads,
    # and a row's base64 being written: about 20 MB (a batch's images read back when its
    # rows are built: 75 MB).
    assert large - tiny < 40, (tiny, large)
