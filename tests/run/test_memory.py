"""A run's memory: its peak does not grow with the run's length."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

IMAGE_BYTES = 1 << 20

RUN = """
import base64, os, resource, sys
from imagetask import ImageGeneration
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
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def peak_mb(tmp_path: Path, rows: int, batch: int, inline: bool) -> int:
    """The peak RSS (MB) of a process running `rows` rows of 1 MB images."""
    out = tmp_path / f"run-{rows}-{batch}-{inline}"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN.format(size=IMAGE_BYTES),
            str(rows),
            str(batch),
            "inline" if inline else "paths",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(list((out / "artifacts/image_generation_0/images").iterdir())) == rows
    return int(done.stdout)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "paths-only"])
def test_peak_memory_does_not_grow_with_the_run_length(tmp_path: Path, inline: bool) -> None:
    short = peak_mb(tmp_path, 40, 8, inline)
    long = peak_mb(tmp_path, 160, 8, inline)
    # 120 more images of 1 MB (1.4 MB of base64 each): were they held, 160 MB or more.
    assert long - short < 25, (short, long)
