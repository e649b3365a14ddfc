"""The kit's strategies draw what they promise: valid rows for the task, and answers and
batches of every shape the issue lists."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from imagetask import ConfigError, ImageGeneration
from imagetask.errors import RequestError
from imagetask.testing import ScriptedModel
from imagetask.testing.strategies import answers, batch_answers, input_rows

T = TypeVar("T")
PNG = b"\x89PNG\r\n\x1a\n"

PLAIN = ImageGeneration(image_generation_model=ScriptedModel())
MAPPED = ImageGeneration(
    image_generation_model=ScriptedModel(),
    input_mappings={"prompt": "text"},
    output_mappings={"image": "picture"},
    metadata_column="meta",
)


def found(strategy: SearchStrategy[T], condition: Callable[[T], bool]) -> T:
    """The first example of `strategy` meeting `condition`, not shrunk (hypothesis fails
    if it finds none)."""
    first = settings(max_examples=5000, database=None, phases=[Phase.generate])
    return find(strategy, condition, settings=first)


@pytest.mark.parametrize("task", [PLAIN, MAPPED], ids=["plain", "mapped"])
def test_input_rows_are_accepted_by_the_task(task: ImageGeneration) -> None:
    column = task.input_mappings.get("prompt", "prompt")

    @given(st.lists(input_rows(task), max_size=5))
    def accepted(rows: list[dict[str, Any]]) -> None:
        batch = task.prepare(rows)
        assert batch.prompts == [row[column] for row in rows]
        for row in rows:
            meta = row.get(task.metadata_column)
            assert meta is None or isinstance(meta, dict)

    accepted()


def test_input_rows_cover_the_hard_cases() -> None:
    rows = input_rows(PLAIN)
    assert found(rows, lambda row: row == {"prompt": ""}) == {"prompt": ""}
    assert not found(rows, lambda row: not row["prompt"].isascii())["prompt"].isascii()
    assert "image" in found(rows, lambda row: "image" in row)
    assert "model_name" in found(rows, lambda row: "model_name" in row)
    upstream = found(rows, lambda row: bool(row.get("distilabel_metadata")))
    assert isinstance(upstream["distilabel_metadata"], dict)
    empty = found(rows, lambda row: row.get("distilabel_metadata", {}) is None)
    assert empty["distilabel_metadata"] is None
    nested = found(rows, lambda row: any(isinstance(v, (list, dict)) for v in row.values()))
    assert len(nested) >= 2
    mapped = input_rows(MAPPED)
    assert "picture" in found(mapped, lambda row: "picture" in row)
    assert "prompt" in found(mapped, lambda row: "prompt" in row)
    assert isinstance(found(mapped, lambda row: bool(row.get("meta")))["meta"], dict)


def test_input_rows_take_a_strategy_per_input() -> None:
    rows = input_rows(PLAIN, values={"prompt": st.just("fixed")})
    assert found(rows, lambda row: True)["prompt"] == "fixed"
    with pytest.raises(ConfigError, match=r"^input_rows: \['style'\] are not inputs"):
        input_rows(PLAIN, values={"style": st.just("x")})


def images_of(answer: Any) -> list[Any]:
    return [image for part in answer for image in part["images"]]


def is_png(payload: Any) -> bool:
    data = base64.b64decode(payload) if isinstance(payload, str) else payload
    return isinstance(data, bytes) and data.startswith(PNG)


def test_answers_come_in_every_shape() -> None:
    drawn = answers(2)
    one = found(drawn, lambda a: isinstance(a, list) and len(a) == 1 and len(images_of(a)) == 2)
    assert all(is_png(image) for image in images_of(one))
    per_image = found(
        drawn, lambda a: isinstance(a, list) and len(a) == 2 and len(images_of(a)) == 2
    )
    assert [len(part["images"]) for part in per_image] == [1, 1]
    assert found(drawn, lambda a: a is None) is None
    failed = found(drawn, lambda a: isinstance(a, BaseException))
    assert isinstance(failed, (TimeoutError, RequestError))
    fewer = found(drawn, lambda a: isinstance(a, list) and 0 < len(images_of(a)) < 2)
    assert len(images_of(fewer)) == 1
    part = found(drawn, lambda a: isinstance(a, list) and any("error" in p for p in a))
    assert any(p["images"] == [None] for p in part)
    for kind in (bytes, str):
        answer = found(
            drawn,
            lambda a, kind=kind: (
                isinstance(a, list) and any(isinstance(image, kind) for image in images_of(a))
            ),
        )
        assert all(is_png(image) for image in images_of(answer) if image is not None)
    extra = found(drawn, lambda a: isinstance(a, list) and any("seed" in p for p in a))
    assert any(isinstance(p.get("seed"), int) for p in extra)


def test_batch_answers_mostly_answer_every_prompt_and_sometimes_fail_whole() -> None:
    drawn = batch_answers(1, 2)
    assert len(found(drawn, lambda b: isinstance(b, list) and len(b) == 2)) == 2
    assert isinstance(found(drawn, lambda b: isinstance(b, BaseException)), RuntimeError)
    assert len(found(drawn, lambda b: isinstance(b, list) and len(b) == 1)) == 1
    assert len(found(drawn, lambda b: isinstance(b, list) and len(b) == 3)) == 3
