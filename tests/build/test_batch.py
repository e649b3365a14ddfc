"""`process_batch` against hostile rows and hooks: only an `Exception` fails a row, and rows
are read once, so what the caller changes later does not reach the output."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from imagetask import (
    ImageGeneration,
    InputRowError,
)
from imagetask._core import StoredImage, answer_facts
from imagetask.build import _batch as batch_module
from imagetask.outcome import Cost
from tests.support.models import BatchScriptedModel, task_for
from tests.support.payloads import b64

META = "distilabel_metadata"
ERROR = "error_image_generation_0"


# --- only Exception is a failed row --------------------------------------------------


class Interrupting(ImageGeneration):
    """Raises `what` from `format_input` (or `format_output`) for the prompt "stop"."""

    def format_input(self, input: dict[str, Any]) -> str:
        if input["prompt"] == "stop" and self.name == "in_0":
            raise STOP[0]
        return str(input["prompt"])

    def format_output(self, output: dict[str, Any], input: dict[str, Any] | None = None) -> Any:
        if input is not None and input["prompt"] == "stop" and self.name == "out_0":
            raise STOP[0]
        return {"image": output["images"][0]}


STOP: list[BaseException] = []


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(3), MemoryError()])
@pytest.mark.parametrize("hook", ["in_0", "out_0"])
def test_interrupts_in_a_hook_propagate_instead_of_failing_a_row(
    stop: BaseException, hook: str
) -> None:
    STOP[:] = [stop]
    answers = [[{"images": [b64(b"a")]}], [{"images": [b64(b"b")]}]]
    task = Interrupting(image_generation_model=BatchScriptedModel(answers), name=hook)
    with pytest.raises(type(stop)):
        task.process_batch([{"prompt": "go"}, {"prompt": "stop"}])


def test_an_exception_in_a_hook_fails_only_its_row() -> None:
    STOP[:] = [ValueError("bad row")]
    answers = [[{"images": [b64(b"a")]}], [{"images": [b64(b"b")]}]]
    task = Interrupting(image_generation_model=BatchScriptedModel(answers), name="out_0")
    rows = task.process_batch([{"prompt": "go"}, {"prompt": "stop"}])
    assert [row["image"] for row in rows] == [b64(b"a"), None]
    assert rows[1][META]["error_out_0"] == "ValueError: bad row"


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(2), MemoryError()])
def test_a_model_that_is_interrupted_stops_the_batch(stop: BaseException) -> None:
    with pytest.raises(type(stop)):
        task_for(stop).process_batch([{"prompt": "p"}])
    with pytest.raises(type(stop)):
        task_for([stop]).process_batch([{"prompt": "p"}])


def test_a_cancelled_request_stops_the_batch_instead_of_failing_its_row() -> None:
    import asyncio

    with pytest.raises(asyncio.CancelledError):
        task_for([[{"images": [b64(b"a")]}], asyncio.CancelledError()]).process_batch(
            [{"prompt": "a"}, {"prompt": "b"}]
        )


# --- rows are read once; what the caller changes later does not reach the output ------


class Hostile(Mapping[str, Any]):
    """A Mapping whose methods raise or count their calls."""

    def __init__(self, data: dict[str, Any], fail: str | None = None) -> None:
        self.data = data
        self.fail = fail
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        if self.fail == "getitem":
            raise RuntimeError("getitem exploded")
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        if self.fail == "iter":
            raise RuntimeError("iter exploded")
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def keys(self) -> Any:
        if self.fail == "keys":
            raise RuntimeError("keys exploded")
        return self.data.keys()


@pytest.mark.parametrize("fail", ["getitem", "keys"])
def test_a_raising_mapping_is_an_input_row_error_naming_the_row(fail: str) -> None:
    rows: list[Any] = [{"prompt": "a"}, Hostile({"prompt": "b"}, fail=fail)]
    with pytest.raises(InputRowError) as info:
        task_for([]).process_batch(rows)
    assert info.value.row == 1
    assert str(info.value) == (
        f"row 1 of the batch cannot be read as a mapping: RuntimeError: {fail} exploded"
    )


def test_a_raising_mapping_is_a_failure_row_when_invalid_rows_pass() -> None:
    rows: list[Any] = [{"prompt": "a"}, Hostile({"prompt": "b"}, fail="keys")]
    task = task_for([[{"images": [b64(b"a")]}]], on_invalid_row="fail")
    out = task.process_batch(rows)
    assert [row.get("prompt") for row in out] == ["a", None]
    assert out[1][META][ERROR] == (
        "row 1 of the batch cannot be read as a mapping: RuntimeError: keys exploded"
    )
    assert out[1]["image"] is None


def test_a_mapping_is_read_once() -> None:
    row = Hostile({"prompt": "p", "extra": 1})
    rows = task_for([[{"images": [b64(b"a")]}]], num_generations=1).process_batch([row])
    assert row.reads == 2  # one __getitem__ per key, once
    assert rows[0]["prompt"] == "p" and rows[0]["extra"] == 1


def test_rows_changed_while_the_model_runs_do_not_change_the_output() -> None:
    rows: list[dict[str, Any]] = [{"prompt": "a", "keep": 1}, {"prompt": "b", "keep": 2}]

    def answer(prompts: list[str], n: int) -> Any:
        rows.clear()
        rows.append({"other": True})
        return [[{"images": [b64(p.encode())]}] for p in prompts]

    out = task_for(answer).process_batch(rows)
    assert [(row["prompt"], row["keep"]) for row in out] == [("a", 1), ("b", 2)]


def test_a_row_dict_changed_while_the_model_runs_does_not_change_the_output() -> None:
    row = {"prompt": "a", "keep": 1}

    def answer(prompts: list[str], n: int) -> Any:
        row.clear()
        return [[{"images": [b64(b"x")]}]]

    [out] = task_for(answer).process_batch([row])
    assert (out["prompt"], out["keep"]) == ("a", 1)


# --- images an answer keeps in files ---------------------------------------------------


class FileImage:
    """An `ImageFile`: its bytes, handed over once by `read`."""

    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data
        self.size = len(data)

    def read(self) -> bytes:
        data, self.data = self.data, None
        assert data is not None, "an ImageFile is read once"
        return data


def file_answers(prompts: list[str], n: int) -> list[Any]:
    """Row 0 answers base64 text; row 1 a tuple whose second image is in a file; row 2
    `None` and then a file."""
    return [
        [{"images": [b64(b"a")]}],
        ({"images": [b64(b"b")], "seed": 1}, {"images": [FileImage(b"c")]}),
        [{"images": [None, FileImage(b"d")]}],
    ]


def test_images_in_files_are_read_into_the_dict_rows() -> None:
    task = task_for(file_answers, num_generations=2)
    rows = task.process_batch([{"prompt": "p"}, {"prompt": "q"}, {"prompt": "r"}])
    assert [row["image"] for row in rows] == [
        b64(b"a"),
        None,
        b64(b"b"),
        b64(b"c"),
        None,
        b64(b"d"),
    ]


def test_images_in_files_are_read_into_the_arrow_table() -> None:
    task = task_for(file_answers, num_generations=2)
    table = task.process_arrow(pa.table({"prompt": ["p", "q", "r"]}))
    images = [None if cell is None else cell["bytes"] for cell in table["image"].to_pylist()]
    assert images == [b"a", None, b"b", b"c", None, b"d"]


def test_a_file_that_hands_over_a_stored_image_is_read_from_its_store(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\nstored"
    path = tmp_path / "stored.png"
    path.write_bytes(data)

    class HandsOverStored:
        size = len(data)

        def read(self) -> StoredImage:
            return stored

    def answer(prompts: list[str], n: int) -> Any:
        return [[{"images": [HandsOverStored()]}], [{"images": [b64(b"b")]}]]

    stored = StoredImage(path, hashlib.sha256(data).hexdigest(), len(data), "png")
    task = task_for(answer)
    rows = task.process_batch([{"prompt": "p"}, {"prompt": "q"}])
    # A dict row keeps the handle, as for a StoredImage the answer holds.
    assert [row["image"] for row in rows] == [stored, b64(b"b")]
    assert [row[META].get(ERROR) for row in rows] == [None, None]
    table = task.process_arrow(pa.table({"prompt": ["p", "q"]}))
    assert [cell["bytes"] for cell in table["image"].to_pylist()] == [data, b"b"]
    assert table[META].combine_chunks().field(ERROR).to_pylist() == [None, None]


class Raising:
    """An answer's image whose every attribute raises."""

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"no {name}")


def test_an_image_whose_attributes_raise_fails_its_generation_not_the_batch() -> None:
    def answer(prompts: list[str], n: int) -> Any:
        return [[{"images": [Raising()]}], [{"images": [b64(b"b")]}]]

    task = task_for(answer)
    rows = task.process_batch([{"prompt": "p"}, {"prompt": "q"}])
    assert [row["image"] for row in rows] == [None, b64(b"b")]
    assert rows[0][META][ERROR] == (
        "image 0 of the model's answer is a Raising, expected base64 text or bytes"
    )
    table = task.process_arrow(pa.table({"prompt": ["p", "q"]}))
    assert [cell and cell["bytes"] for cell in table["image"].to_pylist()] == [None, b"b"]


def priced(images: list[Any], usd: Any) -> dict[str, Any]:
    return {"images": images, "statistics": {"cost_usd": usd}}


@pytest.mark.parametrize(
    ("answers", "image_bytes", "cost"),
    [
        ([[priced([b64(b"ab"), b"xyz", None], 0.5)], [priced([FileImage(b"c")], 2)]], 7, (3.0, 3)),
        ([[priced([b64(b"ab")], True)], [priced([b"x"], -1.0)], [priced([b"y"], "1")]], 6, (0, 0)),
        ([[priced([b"x"], float("nan"))], [priced([b"y"], 10**400)]], 2, (0, 0)),
        ([None, 3, "text", ValueError("x"), [{"statistics": {"cost_usd": 1.0}}]], 0, (0, 0)),
        (ValueError("the whole batch failed"), 0, (0, 0)),
    ],
)
def test_a_batch_counts_its_images_bytes_and_prices_from_any_answers(
    answers: Any, image_bytes: int, cost: tuple[float, int]
) -> None:
    task = task_for(answers)
    batch = task.prepare([{"prompt": "p"}])
    batch.generate()
    assert (batch.image_bytes(), batch.cost()) == (image_bytes, Cost(*cost))


def test_a_batch_walks_its_answers_once_for_their_bytes_and_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walked: list[Any] = []

    def counted(answers: Any) -> Any:
        walked.append(answers)
        return answer_facts(answers)

    monkeypatch.setattr(batch_module, "answer_facts", counted)
    first = [[priced([b"ab"], 1.0)]]
    batch = task_for(first).prepare([{"prompt": "p"}])
    batch.generate()
    assert (batch.image_bytes(), batch.cost(), batch.image_bytes()) == (2, Cost(1.0, 1), 2)
    assert walked == [first]
    second = [[priced([b"abc", b"d"], 0.5)]]
    batch.answers = second  # new answers are walked anew
    assert (batch.cost(), batch.image_bytes()) == (Cost(1.0, 2), 4)
    assert walked == [first, second]
