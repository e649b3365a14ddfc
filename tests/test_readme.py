"""The README's code blocks run verbatim, in order, in a copy of the files the repository
ships, as a new user would run them: bash blocks with `bash -e`, Python blocks as
scripts. `pip install` commands are left out (the install has been done); a block is
skipped only where a comment before it gives one of the reasons below."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.repository import ROOT

SKIP_REASONS = frozenset(
    {
        "needs an API key",
        "the test command itself",
        "benchmarks run on purpose, for minutes",
    }
)
_MAIN_JOBS = (
    "imagetask generate examples/prompts.txt -o out --num-generations 2 --save-artifacts",
    "--format parquet",
    "imagetask gallery out",
    "task.run(rows,",
    "task.process_arrow(",
    "from imagetask.integrations.datasets import generate",
    "from imagetask.integrations.ray import generate",
    "check_task(",
    "imagetask bench --replay out",
)
"""What the README's runnable blocks must keep showing."""
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SKIP = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->\s*$")
_PIP = re.compile(r"^\s*pip install [^&\n]*(&&\s*)?")


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    line: int
    language: str
    code: str
    skipped: str | None

    def runnable(self) -> str:
        """The code without its `pip install` commands."""
        if self.language == "python":
            return self.code
        return "\n".join(_PIP.sub("", line) for line in self.code.splitlines())


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        blocks.append(
            Block(
                line=text.count("\n", 0, match.start()) + 1,
                language=match.group(1),
                code=match.group(2),
                skipped=skip.group(1) if skip else None,
            )
        )
    return blocks


def shipped_copy(dest: Path) -> Path:
    """The files git tracks, copied as a fresh clone has them."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        source = ROOT / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())
    return dest


def test_every_skipped_block_gives_an_accepted_reason() -> None:
    blocks = readme_blocks()
    reasons = {block.skipped for block in blocks if block.skipped is not None}
    assert reasons <= SKIP_REASONS
    run = "\n".join(
        block.runnable()
        for block in blocks
        if block.skipped is None and block.language in ("bash", "python")
    )
    for needed in _MAIN_JOBS:
        assert needed in run


def test_the_readme_blocks_run_in_order(tmp_path: Path) -> None:
    clone = shipped_copy(tmp_path / "clone")
    for block in readme_blocks():
        if block.skipped is not None or block.language not in ("bash", "python"):
            continue
        code = block.runnable()
        if not code.strip():
            continue
        if block.language == "python":
            script = tmp_path / f"readme_{block.line}.py"
            script.write_text(code, encoding="utf-8")
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        done = subprocess.run(
            command, cwd=clone, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, (
            f"README.md line {block.line} ({block.language}) exited {done.returncode}:\n"
            f"{code}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
    assert (clone / "out" / "gallery" / "compare.html").is_file()
    assert (clone / "out-parquet" / "README.md").is_file()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pip install . && imagetask generate x", "imagetask generate x"),
        ("pip install '.[ray]'", ""),
        ("  pip install '.[arrow,datasets]' 'polars>=1,<3'", ""),
        ("imagetask gallery out", "imagetask gallery out"),
    ],
)
def test_install_commands_are_left_out(line: str, expected: str) -> None:
    assert Block(1, "bash", line, None).runnable() == expected
