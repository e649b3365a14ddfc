"""Running a whole dataset: readers, sinks, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from outputs import image_bytes, recorded_table

from imagetask import ImageGeneration
from imagetask.errors import ReadError, RunError, RunInterrupted
from imagetask.io._readers import Reader
from imagetask.models import PlaceholderImageGeneration


def make_task(**fields: Any) -> ImageGeneration:
    fields.setdefault("input_batch_size", 3)
    return ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"), **fields)


def prompts(count: int) -> list[dict[str, Any]]:
    return [{"prompt": f"prompt {i}", "id": i} for i in range(count)]


def lines(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


def expected(rows: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    """The rows `process_batch` gives, as they read back from JSON."""
    built = make_task(**fields).process_batch(rows)
    return msgspec.json.decode(msgspec.json.encode(built))  # type: ignore[no-any-return]


def test_a_run_writes_every_row_in_order_with_its_summary(tmp_path: Path) -> None:
    rows = prompts(10)
    summary = make_task(num_generations=2).run(rows, tmp_path)
    assert lines(tmp_path / "data.jsonl") == expected(rows, num_generations=2)
    assert (summary.rows_in, summary.rows_out, summary.failed, summary.complete) == (
        10,
        20,
        0,
        True,
    )
    report = json.loads((tmp_path / "run.json").read_text())
    assert {k: report[k] for k in ("rows_in", "rows_out", "failed", "images", "data")} == {
        "rows_in": 10,
        "rows_out": 20,
        "failed": 0,
        "images": 20,
        "data": "data.jsonl",
    }
    assert report["task"]["num_generations"] == 2
    assert json.loads((tmp_path / "checkpoint.json").read_text())["complete"] is True


def test_a_generator_input_streams(tmp_path: Path) -> None:
    def rows() -> Any:
        for i in range(7):
            yield {"prompt": f"p{i}"}

    summary = make_task().run(rows(), tmp_path)
    assert [row["prompt"] for row in lines(tmp_path / "data.jsonl")] == [f"p{i}" for i in range(7)]
    assert summary.rows_in == 7


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


def test_a_limit_at_the_input_end_completes_the_run(tmp_path: Path) -> None:
    assert make_task().run(prompts(6), tmp_path, limit=6).complete is True


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


def test_a_bad_row_names_its_line_after_writing_the_rows_before(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"text": "c"}\n{"prompt": "d"}\n')
    out = tmp_path / "out"
    with pytest.raises(RunError) as caught:
        make_task(input_batch_size=2).run(Reader(source), out)
    assert str(caught.value) == (
        f"{source} line 4: the row lacks the input column 'prompt' (its columns: 'text')"
    )
    assert [row["prompt"] for row in lines(out / "data.jsonl")] == ["a", "b"]
    state = json.loads((out / "checkpoint.json").read_text())
    assert (state["rows_in"], state["complete"]) == (2, False)


def test_invalid_json_names_its_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(ReadError, match=rf"^{source} line 2: invalid JSON: "):
        make_task().run(Reader(source), tmp_path / "out")
    source.write_text('["a"]\n')
    with pytest.raises(ReadError, match=rf"^{source} line 1: expected a JSON object, got list$"):
        make_task().run(Reader(source), tmp_path / "out2")


def test_readers_of_every_format(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a cat\n\n  \na dog\n")
    (tmp_path / "p.csv").write_text('prompt,n\n"a, cat",1\na dog,2\n')
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "a cat"}, {"prompt": "a dog"}]), tmp_path / "p.parquet"
    )
    assert list(Reader(tmp_path / "p.txt")) == [(1, {"prompt": "a cat"}), (4, {"prompt": "a dog"})]
    assert list(Reader(tmp_path / "p.csv")) == [
        (2, {"prompt": "a, cat", "n": "1"}),
        (3, {"prompt": "a dog", "n": "2"}),
    ]
    assert list(Reader(tmp_path / "p.parquet")) == [
        (1, {"prompt": "a cat"}),
        (2, {"prompt": "a dog"}),
    ]
    assert [Reader(tmp_path / f"p.{kind}").count() for kind in ("txt", "csv", "parquet")] == [
        2,
        None,
        2,
    ]
    (tmp_path / "bad.csv").write_text("prompt\na,b\n")
    with pytest.raises(ReadError, match=r"bad.csv line 2: more fields than the header's 1$"):
        list(Reader(tmp_path / "bad.csv"))
    with pytest.raises(ReadError, match=r"cannot tell the input format from the extension '.xml'"):
        Reader(tmp_path / "p.xml")


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


@pytest.mark.parametrize("as_bytes", [True, False])
def test_parquet_stores_image_bytes_whatever_images_as_bytes_says(
    tmp_path: Path, as_bytes: bool
) -> None:
    task = make_task(images_as_bytes=as_bytes)
    task.run(prompts(3), tmp_path, format="parquet")
    table = pq.read_table(tmp_path / "data")
    stored = [image["bytes"] for image in table.column("image").to_pylist()]
    expected = [row["image"] for row in make_task(images_as_bytes=True).process_batch(prompts(3))]
    assert stored == expected


def test_failure_rows_are_counted(tmp_path: Path) -> None:
    task = make_task(on_invalid_row="fail")
    summary = task.run([{"prompt": "a"}, {"other": 1}, {"prompt": "c"}], tmp_path)
    assert (summary.rows_out, summary.failed) == (3, 1)
    assert json.loads((tmp_path / "run.json").read_text())["images"] == 2
