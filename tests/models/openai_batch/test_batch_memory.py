"""A Batch API run holds the answer line being read, not its jobs' images: its peak memory
does not grow with the jobs in flight or their size, and stays within a few images of the
same run's with tiny images."""

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

url, requests, jobs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
task = ImageGeneration(
    image_generation_model=OpenAIBatchImageGeneration(
        model="gpt-image-1", base_url=url, api_key="k", output_dir=out,
        poll_interval=0.005, max_poll_interval=0.02,
    ),
    input_batch_size=requests,
    save_artifacts=True,
)
assert task.takes_stored_images
rows = ({{"prompt": f"p{{i}}"}} for i in range({rows}))
summary = task.run(rows, out, batches_in_flight=jobs)
assert (summary.rows_out, summary.failed) == ({rows}, 0), summary
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LargeBatchServer]:
    with serving(LargeBatchServer()) as server:
        yield server


def peak_mb(server: LargeBatchServer, out: Path, requests: int, jobs: int) -> int:
    """The peak RSS (MB) of a process running `ROWS` rows of the server's images in jobs
    of `requests`, `jobs` of them in flight."""
    peak = memory_peak(
        RUN.format(rows=ROWS), f"{server.url}/v1", str(requests), str(jobs), str(out)
    )
    assert len(list((out / "artifacts/image_generation_0/images").iterdir())) == ROWS
    assert not (out / ".spool").exists()
    assert sorted(path.name for path in (out / "batch-jobs").iterdir()) == ["journal.jsonl"]
    return peak


def test_peak_memory_does_not_grow_with_the_jobs_in_flight(
    server: LargeBatchServer, tmp_path: Path
) -> None:
    small = peak_mb(server, tmp_path / "2-jobs-of-16", 16, 2)
    large = peak_mb(server, tmp_path / "4-jobs-of-32", 32, 4)
    noise, server.noise = server.noise, b""
    try:
        tiny = peak_mb(server, tmp_path / "tiny", 32, 4)
    finally:
        server.noise = noise
    # 4 jobs of 32 hold every row at once: were their images held, 96 MB more or more.
    assert large - small < 16, (small, large)
    # One answer line read at a time (1.4 MB, its body copied, its image decoded), the
    # jobs' downloads, and 4 rows' base64 being written: about 20 MB (a batch's images
    # read back when its rows are built: 75 MB).
    assert large - tiny < 40, (tiny, large)
