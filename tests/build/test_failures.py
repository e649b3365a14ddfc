"""Failure is per row and no row is lost (SPEC §5)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from imagetask import ImageGeneration, InputRowError
from imagetask.testing import ScriptedModel
from tests.support.models import BatchScriptedModel, EchoModel
from tests.support.payloads import b64, ref

NAME = "image_generation_0"
META = "distilabel_metadata"


def failure(sent: str | None, raw: Any, error: str, **columns: Any) -> dict[str, Any]:
    return {
        **columns,
        "image": None,
        "model_name": "scripted",
        META: {f"raw_output_{NAME}": raw, f"raw_input_{NAME}": sent, f"error_{NAME}": error},
    }


def task_for(answers: Any, **fields: Any) -> ImageGeneration:
    return ImageGeneration(image_generation_model=ScriptedModel(answers), **fields)


def test_format_output_raising_fails_only_that_generation(caplog: pytest.LogCaptureFixture) -> None:
    class Picky(ImageGeneration):
        def format_output(
            self, output: dict[str, Any], input: dict[str, Any] | None = None
        ) -> dict[str, Any]:
            if output["images"][0] == b64(b"bad"):
                raise ValueError("cannot use this one")
            return {"image": output["images"][0]}

    model = ScriptedModel([[{"images": [b64(b"ok"), b64(b"bad")], "seed": 9}]])
    task = Picky(image_generation_model=model, num_generations=2)
    with caplog.at_level(logging.WARNING, logger="imagetask"):
        rows = task.process_batch([{"prompt": "x"}])
    assert rows[1] == {
        "prompt": "x",
        "image": None,
        "model_name": "scripted",
        META: {
            "raw_output_picky_0": {"images": [b64(b"bad")], "seed": 9},
            "raw_input_picky_0": "x",
            "error_picky_0": "ValueError: cannot use this one",
        },
    }
    assert rows[0]["image"] == b64(b"ok")
    assert caplog.messages == [
        "Task 'picky_0' failed for row 0, generation 1: ValueError: cannot use this one"
    ]


def test_model_raising_fails_every_row_of_the_batch_with_the_error() -> None:
    task = task_for(RuntimeError("quota exceeded"), num_generations=2)
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "b"}])
    error = "the model raised RuntimeError: quota exceeded"
    assert rows == [
        failure("a", None, error, prompt="a"),
        failure("a", None, error, prompt="a"),
        failure("b", None, error, prompt="b"),
        failure("b", None, error, prompt="b"),
    ]


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        (None, "the model returned None instead of a list of answers"),
        ("nope", "the model returned str, expected a list of 2 answers"),
        (
            [[{"images": [b64(b"a")]}]],
            "the model returned 1 answers for 2 inputs; they cannot be matched to rows",
        ),
        (
            [[{"images": [b64(b"a")]}]] * 3,
            "the model returned 3 answers for 2 inputs; they cannot be matched to rows",
        ),
    ],
)
def test_unusable_batch_answers_keep_every_row(answers: Any, error: str) -> None:
    model = BatchScriptedModel(None) if answers is None else ScriptedModel(answers)
    task = ImageGeneration(image_generation_model=model)
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "b"}])
    assert rows == [failure("a", None, error, prompt="a"), failure("b", None, error, prompt="b")]


def test_per_input_failures_leave_batch_mates_untouched() -> None:
    good = [{"images": [b64(b"g")]}]
    answers = [
        good,
        TimeoutError("request timed out"),
        None,
        {"images": [b64(b"x")]},
        [{"pictures": []}],
        [{"images": [b64(b"only-one")]}],
        [{"images": [42]}],
        [{"images": ["not*base64"]}],
    ]
    prompts = [f"p{i}" for i in range(len(answers))]
    rows = task_for(answers, num_generations=2).process_batch([{"prompt": p} for p in prompts])
    assert len(rows) == 2 * len(answers)
    errors = [row[META].get(f"error_{NAME}") for row in rows]
    assert errors[0:2] == [None, "the model returned 1 image(s) for 2 generation(s)"]
    assert errors[2:4] == ["the model raised TimeoutError: request timed out"] * 2
    assert errors[4:6] == ["the model returned no answer for this input"] * 2
    assert (
        errors[6:8]
        == ["the model's answer is dict, expected a list of dicts with an 'images' list"] * 2
    )
    assert errors[8:10] == ["part 0 of the model's answer is not a dict with an 'images' list"] * 2
    assert errors[10:12] == [None, "the model returned 1 image(s) for 2 generation(s)"]
    assert errors[12:14] == [
        "image 0 of the model's answer is a int, expected base64 text or bytes",
        "the model returned 1 image(s) for 2 generation(s)",
    ]
    assert errors[14].startswith("image 0 of the model's answer is not valid base64 (")
    assert rows[0]["image"] == b64(b"g") and rows[10]["image"] == b64(b"only-one")
    # raw answers are kept, payloads inlined since no image column holds them
    assert rows[6][META][f"raw_output_{NAME}"] == {"images": [b64(b"x")]}
    assert rows[8][META][f"raw_output_{NAME}"] == [{"pictures": []}]
    assert rows[12][META][f"raw_output_{NAME}"] == {"images": [42]}
    assert rows[14][META][f"raw_output_{NAME}"] == {"images": ["not*base64"]}
    assert [row["prompt"] for row in rows] == [p for p in prompts for _ in range(2)]


def test_failures_have_the_same_top_level_keys_as_successes() -> None:
    answers = [[{"images": [b64(b"a")]}], None]
    for group in (False, True):
        for raw in (False, True):
            task = task_for(answers, group_generations=group, add_raw_output=raw, add_raw_input=raw)
            rows = task.process_batch([{"prompt": "a"}, {"prompt": "b"}])
            assert len({tuple(row) for row in rows}) == 1


def test_grouped_failure_keeps_list_lengths() -> None:
    answers = [[{"images": [b64(b"a")]}]]
    rows = task_for(answers, num_generations=3, group_generations=True).process_batch(
        [{"prompt": "x"}]
    )
    (row,) = rows
    assert row["image"] == [b64(b"a"), None, None]
    assert len(row[META]) == 3
    assert row[META][0] == {f"raw_output_{NAME}": {"images": [ref(b"a")]}, f"raw_input_{NAME}": "x"}
    assert row[META][2][f"error_{NAME}"] == "the model returned 1 image(s) for 3 generation(s)"


def test_extra_images_beyond_num_generations_are_not_turned_into_rows() -> None:
    answers = [[{"images": [b64(b"a"), b64(b"b"), b64(b"c")]}]]
    rows = task_for(answers, num_generations=2).process_batch([{"prompt": "x"}])
    assert [row["image"] for row in rows] == [b64(b"a"), b64(b"b")]


def test_missing_column_raises_naming_the_row_and_column_before_the_model_is_called() -> None:
    model = ScriptedModel([])
    task = ImageGeneration(image_generation_model=model)
    with pytest.raises(InputRowError) as info:
        task.process_batch([{"prompt": "a"}, {"text": "b", "id": 2}])
    assert (
        str(info.value)
        == "row 1 of the batch lacks the input column 'prompt' (its columns: 'text', 'id')"
    )
    assert (info.value.row, info.value.column) == (1, "prompt")
    assert model.calls == []


@pytest.mark.parametrize(
    ("row", "message", "column"),
    [
        (["prompt"], "row 0 of the batch is a list, not a mapping", None),
        (
            {"prompt": 3},
            "row 0 of the batch has no text prompt: its column 'prompt' holds a int",
            "prompt",
        ),
        (
            {"prompt": "x", META: "oops"},
            f"row 0 of the batch has a str in column '{META}', expected a dict of metadata",
            META,
        ),
    ],
)
def test_bad_rows_raise_clear_errors(row: Any, message: str, column: str | None) -> None:
    with pytest.raises(InputRowError) as info:
        ImageGeneration(image_generation_model=EchoModel()).process_batch([row])
    assert (str(info.value), info.value.row, info.value.column) == (message, 0, column)


def test_invalid_rows_pass_through_as_failure_rows_when_asked() -> None:
    model = ScriptedModel(lambda prompt, n: [{"images": [b64(prompt.encode())]}])
    task = ImageGeneration(image_generation_model=model, on_invalid_row="fail")
    rows = task.process_batch([{"prompt": "a"}, {"text": "b"}, 7, {"prompt": "c"}])
    assert model.calls[0].prompts == ["a", "c"]
    assert [row["image"] for row in rows] == [b64(b"a"), None, None, b64(b"c")]
    assert rows[1] == failure(
        None,
        None,
        "row 1 of the batch lacks the input column 'prompt' (its columns: 'text')",
        text="b",
    ) | {"model_name": "scripted"}
    assert rows[2][META][f"error_{NAME}"] == "row 2 of the batch is a int, not a mapping"


def test_all_rows_invalid_does_not_call_the_model() -> None:
    model = ScriptedModel([])
    task = ImageGeneration(image_generation_model=model, on_invalid_row="fail", num_generations=2)
    rows = task.process_batch([{}, {}])
    assert len(rows) == 4 and model.calls == []


def test_empty_batch() -> None:
    model = ScriptedModel([])
    assert ImageGeneration(image_generation_model=model).process_batch([]) == []
    assert model.calls == []


def test_a_hook_returning_garbage_is_a_row_failure_not_a_crash() -> None:
    class Broken(ImageGeneration):
        def format_output(self, output: dict[str, Any], input: dict[str, Any] | None = None) -> Any:
            return ["not", "a", "dict"]

    task = Broken(image_generation_model=EchoModel())
    (row,) = task.process_batch([{"prompt": "x"}])
    assert row[META]["error_broken_0"] == "format_output returned a list, expected a dict"


def test_format_input_raising_names_the_row() -> None:
    class Broken(ImageGeneration):
        def format_input(self, input: dict[str, Any]) -> str:
            raise KeyError("style")

    with pytest.raises(
        InputRowError, match=r"^format_input failed for row 0 of the batch: KeyError: 'style'$"
    ):
        Broken(image_generation_model=EchoModel()).process_batch([{"prompt": "x"}])
