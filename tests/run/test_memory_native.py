"""A run on the native answer path holds the images of the requests in flight, not of
its batches: its peak memory does not grow with the batch size (nor, in Parquet, with the
shard size), and stays within a few images of the same run's with tiny images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.memory import IMAGE_BYTES, LargeImageServer
from tests.support.memory import peak_mb as memory_peak
from tests.support.servers import serving

ROWS = 128

RUN = """
import sys
from imagetask import ImageGeneration
from imagetask.models import OpenAIImageGeneration

url, batch, inline, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "inline", sys.argv[4]
artifacts = sys.argv[5] == "artifacts"
parquet = {{"format": "parquet", "shard_bytes": int(sys.argv[6])}} if len(sys.argv) > 6 else {{}}
if parquet:
    from imagetask.io import _parquet
    _parquet.ROW_GROUP_BYTES = 8 << 20
task = ImageGeneration(
    image_generation_model=OpenAIImageGeneration(
        model="dall-e-2", base_url=url, api_key="k", max_concurrency=4
    ),
    input_batch_size=batch,
    save_artifacts=artifacts,
    inline_images=inline,
)
assert task.takes_stored_images
summary = task.run(({{"prompt": f"p{{i}}"}} for i in range({rows})), out, **parquet)
assert (summary.rows_out, summary.failed) == ({rows}, 0), summary
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LargeImageServer]:
    with serving(LargeImageServer()) as server:
        yield server


def peak_mb(server: LargeImageServer, out: Path, batch: int, inline: bool) -> int:
    """The peak RSS (MB) of a process running `ROWS` rows of the server's images in
    batches of `batch` rows."""
    mode = "inline" if inline else "paths"
    args = (f"{server.url}/v1", str(batch), mode, str(out), "artifacts")
    peak = memory_peak(RUN.format(rows=ROWS), *args)
    assert len(list((out / "artifacts/image_generation_0/images").iterdir())) == ROWS
    assert not (out / ".spool").exists()
    return peak


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "paths-only"])
def test_peak_memory_does_not_grow_with_the_batch_size(
    server: LargeImageServer, tmp_path: Path, inline: bool
) -> None:
    small = peak_mb(server, tmp_path / "batch-16", 16, inline)
    large = peak_mb(server, tmp_path / "batch-64", 64, inline)
    noise, server.noise = server.noise, b""
    try:
        tiny = peak_mb(server, tmp_path / "tiny", 64, inline)
    finally:
        server.noise = noise
    # 48 more images per batch, 2 batches in flight: were they held, 96 MB or more.
    assert large - small < 16, (small, large)
    # 4 requests in flight, each with its body (1.4 MB, read and joined) and its image, and
    # 4 rows' base64 being written: about 26 MB (the answers holding the images: 190 MB).
    assert large - tiny < 40, (tiny, large)


def parquet_peak_mb(
    server: LargeImageServer, out: Path, batch: int, shard_mb: int, artifacts: bool
) -> int:
    """The peak RSS (MB) of a process writing `ROWS` rows of the server's images to
    Parquet, with their artifacts or not, in batches of `batch` rows, shards of `shard_mb`
    MB and row groups of 8 MB."""
    kept = "artifacts" if artifacts else "none"
    args = (f"{server.url}/v1", str(batch), "inline", str(out), kept, str(shard_mb << 20))
    peak = memory_peak(RUN.format(rows=ROWS), *args)
    shards = sorted((out / "data").glob("*.parquet"))
    assert len(shards) == -(-ROWS * IMAGE_BYTES // (shard_mb << 20))
    serials = set()
    for shard in shards:
        table = pq.read_table(shard)
        images = table.column("image").to_pylist()
        paths = table.column("image_path").to_pylist() if artifacts else [None] * len(images)
        for image, path in zip(images, paths, strict=True):
            data = (out / path).read_bytes() if artifacts else image["bytes"]
            assert image == {"bytes": data, "path": path}
            assert data.startswith(b"\x89PNG") and len(data) == 16 + IMAGE_BYTES
            serials.add(data[8:16])
    assert len(serials) == ROWS
    assert not (out / ".spool").exists()
    return peak


@pytest.mark.parametrize("artifacts", [True, False], ids=["artifacts", "no-artifacts"])
def test_parquet_peak_memory_does_not_grow_with_the_batch_and_shard_size(
    server: LargeImageServer, tmp_path: Path, artifacts: bool
) -> None:
    small = parquet_peak_mb(server, tmp_path / "batch-16", 16, 16, artifacts)
    large = parquet_peak_mb(server, tmp_path / "batch-64", 64, 64, artifacts)
    # 48 more images per batch, 2 batches in flight, and a shard 4x as large: were the
    # batches' images held (as bytes, then in their Arrow table), 150 MB or more.
    assert large - small < 16, (small, large)
