"""Resume (`resume=True`, `--resume`): a stopped run goes on where its checkpoint says, and a
checkpoint, output, input or task that does not match is refused with one clear error."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagetask import (
    ImageGeneration,
    RunError,
    RunInterrupted,
)
from imagetask.cli import main
from imagetask.models import PlaceholderImageGeneration
from imagetask.readers import Reader
from tests.support.engine_models import EndpointModel, log_lines
from tests.support.outputs import image_bytes, recorded_table
from tests.support.repository import EXAMPLES
from tests.support.runs import checkpoint, lines, make_task, prompts, rows_done


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_limited_run_resumes_to_the_whole_run(tmp_path: Path, format: Any) -> None:
    rows = prompts(11)
    fields = {"images_as_bytes": True, "num_generations": 2}
    make_task(**fields).run(rows, tmp_path / "whole", format=format)
    first = make_task(**fields).run(rows, tmp_path / "parts", format=format, limit=4)
    assert (first.rows_in, first.rows_out, first.complete) == (4, 8, False)
    data = "data.jsonl"
    if format == "jsonl":
        assert (tmp_path / "parts" / data).read_bytes().count(b"\n") == 8
    else:
        assert recorded_table(tmp_path / "parts").num_rows == 8
    with pytest.raises(RunError, match=r"already holds a run \(checkpoint.json\): resume it"):
        make_task(**fields).run(rows, tmp_path / "parts", format=format)
    more = make_task(**fields).run(rows, tmp_path / "parts", format=format, resume=True, limit=7)
    assert (more.resumed_from, more.rows_in, more.complete) == (4, 7, False)
    rest = make_task(**fields).run(rows, tmp_path / "parts", format=format, resume=True)
    assert (rest.resumed_from, rest.rows_in, rest.rows_out, rest.complete) == (7, 11, 22, True)
    again = make_task(**fields).run(rows, tmp_path / "parts", format=format, resume=True)
    assert (again.rows_in, again.complete) == (11, True)
    if format == "jsonl":
        assert (tmp_path / "parts" / data).read_bytes() == (tmp_path / "whole" / data).read_bytes()
    else:
        whole = recorded_table(tmp_path / "whole").to_pylist()
        assert recorded_table(tmp_path / "parts").to_pylist() == whole
        # Each session ended with a shard: 4, 3, then 4 input rows.
        shards = sorted(path.name for path in (tmp_path / "parts" / "data").iterdir())
        assert shards == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
        assert not (tmp_path / "parts" / ".staging").exists()


def test_resume_cuts_an_unfinished_batch_and_goes_on(tmp_path: Path) -> None:
    rows = prompts(11)
    make_task().run(rows, tmp_path / "whole")
    out = tmp_path / "crashed"
    make_task().run(rows, out, limit=6)
    with (out / "data.jsonl").open("ab") as data:
        data.write(b'{"prompt":"prompt 6","image":"iVBO')
    summary = make_task().run(rows, out, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.rows_out) == (6, 11, 11)
    assert (out / "data.jsonl").read_bytes() == (tmp_path / "whole" / "data.jsonl").read_bytes()


def test_resume_refuses_a_different_task(tmp_path: Path) -> None:
    make_task().run(prompts(5), tmp_path, limit=2)
    with pytest.raises(
        RunError, match=r"the task differs from the run's: `num_generations` was 1, now 3"
    ):
        make_task(num_generations=3).run(prompts(5), tmp_path, resume=True)
    # Batch size is free to change on resume.
    summary = make_task(input_batch_size=1).run(prompts(5), tmp_path, resume=True)
    assert summary.rows_in == 5


class Interrupting(PlaceholderImageGeneration):
    """Placeholder pictures, until the call numbered `_stop_at` gets a Ctrl-C."""

    _stop_at = 0

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        self._stop_at -= 1
        if self._stop_at == 0:
            raise KeyboardInterrupt
        return super().generate(inputs, num_generations, **kwargs)


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_ctrl_c_keeps_the_finished_batches_and_resume_completes(
    tmp_path: Path, format: Any
) -> None:
    rows = prompts(20)
    fields = {"images_as_bytes": True, "num_generations": 2, "save_artifacts": True}
    whole = make_task(**fields).run(rows, tmp_path / "whole", format=format)
    model = Interrupting(size="4x4")
    model._stop_at = 4
    interrupted = ImageGeneration(image_generation_model=model, input_batch_size=3, **fields)
    with pytest.raises(RunInterrupted) as caught:
        interrupted.run(rows, tmp_path / "out", format=format, batches_in_flight=1)
    assert caught.value.summary.rows_in == 9
    assert str(caught.value) == (
        "interrupted after 9 input rows; run again with resume (--resume) to continue"
    )
    resumed = ImageGeneration(
        image_generation_model=Interrupting(size="4x4"), input_batch_size=3, **fields
    ).run(rows, tmp_path / "out", format=format, resume=True)
    assert (resumed.resumed_from, resumed.rows_in, resumed.rows_out) == (9, 20, whole.rows_out)
    if format == "jsonl":
        data = "data.jsonl"
        assert (tmp_path / "out" / data).read_bytes() == (tmp_path / "whole" / data).read_bytes()
        return
    table = recorded_table(tmp_path / "out")
    assert table.to_pylist() == recorded_table(tmp_path / "whole").to_pylist()
    built = make_task(images_as_bytes=True, num_generations=2).process_batch(rows)
    assert image_bytes(table) == [row["image"] for row in built]
    for path, row in zip(table.column("image_path").to_pylist(), built, strict=True):
        assert (tmp_path / "out" / path).read_bytes() == row["image"]


# Resume checks the checkpoint and the output against each other.


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda state: state.update(sink=None),
            "not a checkpoint this version can resume: Expected `object`, got `null` - at `$.sink`",
        ),
        (
            lambda state: state.pop("rows_in"),
            "not a checkpoint this version can resume: Object missing required field `rows_in`",
        ),
        (
            lambda state: state.update(rows_out="6"),
            "not a checkpoint this version can resume: Expected `int`, got `str` - at `$.rows_out`",
        ),
        (
            lambda state: state.update(complete=1),
            "not a checkpoint this version can resume: Expected `bool`, got `int` - at "
            "`$.complete`",
        ),
        (
            lambda state: state.update(rows_in=-1),
            "not a checkpoint this version can resume: Expected `int` >= 0 - at `$.rows_in`",
        ),
        (
            lambda state: state.update(version=1),
            "not a checkpoint this version can resume: Invalid enum value 1 - at `$.version`",
        ),
        (
            lambda state: state["sink"].pop("bytes"),
            "the checkpoint's `sink` is not valid: Object missing required field `bytes`",
        ),
        (
            lambda state: state["sink"].update(rows=5),
            "not a checkpoint this version can resume: `sink.rows` (5) is not `rows_out` (6)",
        ),
    ],
)
def test_resume_refuses_a_checkpoint_with_a_bad_key(
    tmp_path: Path, change: Any, message: str
) -> None:
    make_task().run(prompts(10), tmp_path, limit=6)
    state = checkpoint(tmp_path)
    change(state)
    (tmp_path / "checkpoint.json").write_text(json.dumps(state))
    data = (tmp_path / "data.jsonl").read_bytes()
    with pytest.raises(RunError) as caught:
        make_task().run(prompts(10), tmp_path, resume=True)
    assert str(caught.value).endswith(message), str(caught.value)
    assert (tmp_path / "data.jsonl").read_bytes() == data


def test_resume_refuses_an_output_shorter_than_recorded(tmp_path: Path) -> None:
    make_task().run(prompts(10), tmp_path, limit=6)
    data = tmp_path / "data.jsonl"
    recorded = checkpoint(tmp_path)["sink"]["bytes"]
    with data.open("r+b") as file:
        file.truncate(recorded - 10)
    with pytest.raises(RunError) as caught:
        make_task().run(prompts(10), tmp_path, resume=True)
    assert str(caught.value) == (
        f"{data}: holds {recorded - 10:,} bytes, fewer than the {recorded:,} the checkpoint "
        "records: the output was changed or lost since; start again in an empty folder"
    )
    # Nothing was written: no padding up to the recorded size.
    assert data.stat().st_size == recorded - 10
    assert b"\0" not in data.read_bytes()


def test_resume_refuses_an_output_whose_rows_differ_from_recorded(tmp_path: Path) -> None:
    make_task().run(prompts(10), tmp_path, limit=6)
    data = tmp_path / "data.jsonl"
    content = data.read_bytes()
    data.write_bytes(content.replace(b"\n", b" ", 1))  # same size, one line fewer
    with pytest.raises(RunError, match=r"its first [\d,]+ bytes hold 5 whole lines, not the 6"):
        make_task().run(prompts(10), tmp_path, resume=True)
    data.unlink()
    with pytest.raises(RunError, match=r"data.jsonl: holds 0 bytes, fewer than the [\d,]+"):
        make_task().run(prompts(10), tmp_path, resume=True)


def test_resume_refuses_parquet_shards_or_staged_batches_that_changed(tmp_path: Path) -> None:
    task = make_task(images_as_bytes=True)
    task.run(prompts(10), tmp_path / "limited", format="parquet", limit=6)
    state = checkpoint(tmp_path / "limited")
    shard = tmp_path / "limited" / "data" / state["sink"]["shards"][0]["name"]
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(RunError, match=r"train-00000.parquet: [\d,]+ bytes, not the [\d,]+ bytes"):
        task.run(prompts(10), tmp_path / "limited", format="parquet", resume=True)
    shard.unlink()
    with pytest.raises(RunError, match=r"train-00000.parquet: missing, not the [\d,]+ bytes"):
        task.run(prompts(10), tmp_path / "limited", format="parquet", resume=True)

    class Stop(PlaceholderImageGeneration):
        def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
            if "prompt 6" in inputs:
                raise KeyboardInterrupt
            return super().generate(inputs, num_generations, **kwargs)

    out = tmp_path / "staged"
    stopped = ImageGeneration(
        image_generation_model=Stop(size="4x4"), input_batch_size=3, images_as_bytes=True
    )
    with pytest.raises(RunInterrupted):
        stopped.run(prompts(10), out, format="parquet", batches_in_flight=1)
    [staged] = checkpoint(out)["sink"]["staged"]
    assert staged["rows"] == 6
    stream = out / ".staging" / staged["name"]
    with stream.open("r+b") as file:
        file.truncate(staged["bytes"] - 1)
    with pytest.raises(RunError, match=r"staged-00000.arrows: [\d,]+ bytes, fewer than the"):
        stopped.run(prompts(10), out, format="parquet", resume=True)
    assert stream.stat().st_size == staged["bytes"] - 1


def test_resume_after_the_first_checkpoint_only(tmp_path: Path) -> None:
    """The state a run killed before its first batch leaves: a checkpoint, no data."""
    make_task().run(prompts(4), tmp_path / "whole")
    out = tmp_path / "out"
    make_task().run(prompts(4), out, limit=0)
    (out / "data.jsonl").unlink()
    summary = make_task().run(prompts(4), out, resume=True)
    assert (summary.rows_in, summary.rows_out) == (4, 4)
    assert (out / "data.jsonl").read_bytes() == (tmp_path / "whole" / "data.jsonl").read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_checkpoint_keeps_the_first_batchs_first_row_and_the_last_batchs_last(
    tmp_path: Path, fmt: str
) -> None:
    from imagetask.io._checkpoint import row_digest

    rows = [{"prompt": f"A{i}"} for i in range(9)]
    source: Any = rows
    if fmt == "parquet":
        source = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(rows), source)
        source = Reader(source)
    make_task(input_batch_size=2).run(source, tmp_path / "out", format=fmt, limit=7)
    mark = checkpoint(tmp_path / "out")["input"]
    assert (mark["first"], mark["last"]) == (row_digest(rows[0]), row_digest(rows[6]))


def test_resuming_with_another_input_is_refused(tmp_path: Path) -> None:
    first = [{"prompt": f"A{i}"} for i in range(20)]
    other = [{"prompt": f"B{i}"} for i in range(20)]
    make_task().run(first, tmp_path, limit=5)
    with pytest.raises(RunError) as info:
        make_task().run(other, tmp_path, resume=True)
    assert str(info.value) == (
        "input row 0: not the row the run to resume read there: resume it with the input it "
        "started with"
    )
    edited = [*first[:4], {"prompt": "changed"}, *first[5:]]
    with pytest.raises(RunError, match=r"^input row 4: not the row"):
        make_task().run(edited, tmp_path, resume=True)
    summary = make_task().run(first, tmp_path, resume=True)
    assert (summary.rows_in, summary.complete) == (20, True)


# A resume checks that the input starts with the rows the run read, finished or not.


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_finished_run_resumed_with_a_grown_input_goes_on_with_the_new_rows(
    tmp_path: Path, format: Any
) -> None:
    task = make_task(images_as_bytes=True)
    task.run(prompts(7), tmp_path, format=format)
    summary = task.run(prompts(12), tmp_path, format=format, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.rows_out, summary.complete) == (
        7,
        12,
        12,
        True,
    )
    if format == "jsonl":
        assert [row["id"] for row in lines(tmp_path / "data.jsonl")] == list(range(12))
    else:
        shards = sorted((tmp_path / "data").iterdir())
        ids = [i for shard in shards for i in pq.read_table(shard).column("id").to_pylist()]
        assert ids == list(range(12))
        assert "num_examples: 12" in (tmp_path / "README.md").read_text()
    report = json.loads((tmp_path / "run.json").read_text())
    assert (report["rows_in"], report["resumed_from"], report["complete"]) == (12, 7, True)


def test_a_finished_run_resumed_with_the_same_input_writes_nothing(tmp_path: Path) -> None:
    task = make_task()
    first = task.run(prompts(7), tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    again = task.run(prompts(7), tmp_path, resume=True)
    assert (again.rows_in, again.rows_out, again.complete) == (7, 7, True)
    assert again.seconds == first.seconds
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    assert after == before


@pytest.mark.parametrize("finished", [True, False])
def test_a_resume_refuses_an_input_with_a_row_changed_between_the_first_and_last_done(
    tmp_path: Path, finished: bool
) -> None:
    task = make_task()
    task.run(prompts(12), tmp_path, limit=None if finished else 9)
    before = (tmp_path / "checkpoint.json").read_bytes()
    changed = prompts(14)
    changed[4]["prompt"] = "changed"
    with pytest.raises(RunError) as info:
        task.run(changed, tmp_path, resume=True)
    last = 11 if finished else 8
    assert str(info.value) == (
        f"input row {last}: the rows up to this one are not the ones the run to resume read "
        "(a row was changed, added or removed): resume it with the input it started with"
    )
    assert (tmp_path / "checkpoint.json").read_bytes() == before
    assert [row["id"] for row in lines(tmp_path / "data.jsonl")] == list(range(last + 1))


BASE = "https://images.example/v1"


def endpoint_task(log: Path, base_url: str, api_key: str = "sk-one") -> ImageGeneration:
    model = EndpointModel(log=str(log), size="4x4", base_url=base_url, api_key=api_key)
    return ImageGeneration(image_generation_model=model, input_batch_size=2)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (f"{BASE}?deployment=a", f"{BASE}?deployment=b"),
        ("https://me:pw-1@images.example/v1", "https://me:pw-2@images.example/v1"),
    ],
)
def test_resume_refuses_a_url_whose_hidden_parts_changed(
    tmp_path: Path, first: str, second: str
) -> None:
    rows = [{"prompt": f"p{i}"} for i in range(5)]
    out, log = tmp_path / "out", tmp_path / "log"
    endpoint_task(log, first).run(rows, out, limit=2)
    with pytest.raises(RunError) as info:
        endpoint_task(log, second).run(rows, out, resume=True)
    assert str(info.value).startswith(
        f"{out}: the task differs from the run's: `image_generation_model.base_url.hidden` was "
    )
    generated = [line[2] for line in log_lines(log) if line[0] == "generate"]
    assert generated == ["p0", "p1"]  # the changed endpoint was sent nothing
    checkpoint = (out / "checkpoint.json").read_text()
    assert "deployment=a" not in checkpoint and "pw-1" not in checkpoint
    # A rotated API key changes no output: the run resumes.
    summary = endpoint_task(log, first, api_key="sk-rotated").run(rows, out, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.complete) == (2, 5, True)


PROMPTS = EXAMPLES / "prompts.txt"


def test_limit_and_resume(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert (
        main(["generate", str(PROMPTS), "-o", out, "--limit", "5", "--quiet", "--size", "4x4"]) == 0
    )
    assert main(["generate", str(PROMPTS), "-o", out, "--resume", "--quiet", "--size", "4x4"]) == 0
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (report["rows_in"], report["resumed_from"], report["complete"]) == (12, 5, True)


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(1000)))
    command = [
        sys.executable, "-m", "imagetask", "generate", str(source), "-o", str(tmp_path / "o"),
        "--size", "4x4", "--batch-size", "4", "--checkpoint-every", "0", "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt once the first batches are checkpointed.
    while process.poll() is None and rows_done(tmp_path / "o") == 0:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate()
    assert process.returncode == 130, err
    done = json.loads((tmp_path / "o" / "checkpoint.json").read_text())["rows_in"]
    assert 0 < done < 1000
    resume = shlex.join(["imagetask", *command[3:], "--resume"])
    assert err == f"imagetask: interrupted after {done:,} input rows; to continue: {resume}\n"
    assert (tmp_path / "o" / "data.jsonl").read_bytes().count(b"\n") == done
    finished = subprocess.run([*command, "--resume"], capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "o" / "data.jsonl").read_bytes().count(b"\n") == 1000
