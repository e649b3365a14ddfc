"""Crash safety: `kill -9` at random moments, then resume; nothing lost, nothing twice."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec

from imagetask.models import PlaceholderImageGeneration

PROMPTS = 12000
GENERATIONS = 2


def command(source: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "imagetask.cli", "generate", str(source), "-o", str(out),
        "--num-generations", str(GENERATIONS), "--batch-size", "4", "--save-artifacts",
        "--size", "6x6", "--quiet", "--checkpoint-every", "0", *extra,
    ]  # fmt: skip


def rows_done(out: Path) -> int:
    """The input rows the checkpoint records as done (0 before the first)."""
    try:
        return int(json.loads((out / "checkpoint.json").read_text())["rows_in"])
    except (OSError, ValueError):
        return 0


def expected_pairs(prompts: list[str]) -> Counter[tuple[str, str]]:
    model = PlaceholderImageGeneration(size="6x6")
    answers = model.generate(prompts, GENERATIONS)
    return Counter(
        (prompt, base64.b64encode(image).decode())
        for prompt, answer in zip(prompts, answers, strict=True)
        for image in (part["images"][0] for part in answer)
    )


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    prompts = [f"prompt number {i}" for i in range(PROMPTS)]
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    rng = random.Random(20261125)
    targets = sorted(rng.sample(range(1, PROMPTS), 6))
    kills = 0
    progress = []
    for attempt, target in enumerate(targets):
        extra = ("--resume",) if attempt else ()
        process = subprocess.Popen(command(source, out, *extra), stderr=subprocess.PIPE)
        # Kill once the run has passed `target` rows, at a random moment after that.
        while process.poll() is None and rows_done(out) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        process.stderr.close()  # type: ignore[union-attr]
        progress.append(rows_done(out))
    assert kills >= 3, "the run finished before it could be killed often enough"
    # Killed at several different points, each resume going further.
    assert len({done for done in progress if 0 < done < PROMPTS}) >= 3, progress
    assert progress == sorted(progress)
    final = subprocess.run(command(source, out, "--resume"), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr

    raw = (out / "data.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    rows = [msgspec.json.decode(line) for line in raw.splitlines()]
    assert Counter((row["prompt"], row["image"]) for row in rows) == expected_pairs(prompts)
    assert [row["prompt"] for row in rows] == [p for p in prompts for _ in range(GENERATIONS)]
    for row in rows:
        path = out / row["image_path"]
        data = path.read_bytes()
        assert path.name == hashlib.sha256(data).hexdigest() + ".png"
        assert data == base64.b64decode(row["image"])
    report = json.loads((out / "run.json").read_text())
    assert (report["rows_in"], report["rows_out"]) == (PROMPTS, PROMPTS * GENERATIONS)
    # Besides the hidden temporary files a kill can leave, the folder holds exactly the
    # rows' images: a file written before a kill is regenerated identically and used.
    images = out / "artifacts" / "image_generation_0" / "images"
    visible = {path.name for path in images.iterdir() if not path.name.startswith(".")}
    assert visible == {Path(row["image_path"]).name for row in rows}
