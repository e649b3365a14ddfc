"""Properties of the row builder: it agrees with the plain-Python reference on any rows and
answers, sends each valid prompt once and loses no row.

Valid rows and well-formed answers come from the kit (`imagetask.testing.strategies`);
this file adds the invalid rows and malformed answers only the library itself must handle.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetask import ImageGeneration, InputRowError
from imagetask.build._batch import BatchOutput
from imagetask.testing import ScriptedModel
from imagetask.testing import strategies as kit
from tests.support.answers import entries
from tests.support.models import BatchScriptedModel
from tests.support.reference_rows import problem, reference_rows

PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tasks(draw: st.DrawFn) -> ImageGeneration:
    mappings = draw(st.sampled_from([{}, {"prompt": "text"}]))
    outputs = draw(st.sampled_from([{}, {"image": "picture"}, {"model_name": "model"}]))
    return ImageGeneration(
        image_generation_model=ScriptedModel([], model_name=draw(st.sampled_from(["m", "ünï"]))),
        name=draw(st.sampled_from(["image_generation_0", "t-1"])),
        num_generations=draw(st.integers(1, 4)),
        group_generations=draw(st.booleans()),
        add_raw_output=draw(st.booleans()),
        add_raw_input=draw(st.booleans()),
        images_as_bytes=draw(st.booleans()),
        inline_raw_images=draw(st.booleans()),
        metadata_column=draw(st.sampled_from(["distilabel_metadata", "meta"])),
        input_mappings=mappings,
        output_mappings=outputs,
        on_invalid_row="fail",
    )


@st.composite
def rows_for(draw: st.DrawFn, task: ImageGeneration) -> list[Any]:
    column = task.input_mappings.get("prompt", "prompt")
    good = kit.input_rows(task)
    rows: list[Any] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(
            st.sampled_from(["good"] * 8 + ["missing", "not-mapping", "bad-meta", "bad-prompt"])
        )
        if kind == "not-mapping":
            rows.append(draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=2))))
            continue
        row = draw(good)
        if kind == "missing":
            del row[column]
        elif kind == "bad-prompt":
            row[column] = draw(st.integers())
        elif kind == "bad-meta":
            row[task.metadata_column] = draw(st.text(max_size=3))
        rows.append(row)
    return rows


@st.composite
def cases(draw: st.DrawFn) -> tuple[ImageGeneration, list[Any], Any]:
    task = draw(tasks())
    rows = draw(rows_for(task))
    valid = sum(problem(task, i, row) is None for i, row in enumerate(rows))
    answers: Any = [draw(entries(task.num_generations)) for _ in range(valid)]
    batch = draw(st.sampled_from(["as-is"] * 8 + ["raise", "none", "short", "long"]))
    if batch == "raise":
        answers = RuntimeError("backend down")
    elif batch == "none":
        answers = None
    elif batch == "short" and answers:
        answers = answers[:-1]
    elif batch == "long":
        answers = [*answers, None]
    return task, rows, answers


def normalised(failures: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    return [
        (i, k, re.sub(r"not valid base64 \(.*\)$", "not valid base64", e)) for i, k, e in failures
    ]


def normalised_rows(rows: list[dict[str, Any]], task: ImageGeneration) -> list[dict[str, Any]]:
    key = f"error_{task.name}"

    def fix(meta: Any) -> Any:
        if isinstance(meta, dict) and isinstance(meta.get(key), str):
            return {**meta, key: re.sub(r"not valid base64 \(.*\)$", "not valid base64", meta[key])}
        return meta

    column = task.metadata_column
    out = []
    for row in rows:
        meta = row[column]
        out.append({**row, column: [fix(m) for m in meta] if isinstance(meta, list) else fix(meta)})
    return out


def answered(task: ImageGeneration, answers: Any) -> ScriptedModel:
    """Makes the task's model answer `answers` for its next batch."""
    name = task.image_generation_model.model_name
    model = (
        BatchScriptedModel(None, name=name)
        if answers is None
        else ScriptedModel(answers, model_name=name)
    )
    task.image_generation_model = model
    return model


def run_batch(task: ImageGeneration, rows: list[Any]) -> BatchOutput:
    batch = task.prepare(rows)
    batch.generate()
    return batch.finish()


@PROPERTY
@given(cases())
def test_native_rows_equal_the_reference(case: tuple[ImageGeneration, list[Any], Any]) -> None:
    task, rows, answers = case
    answered(task, answers)
    output = run_batch(task, rows)
    expected_rows, expected_failures = reference_rows(task, rows, answers)
    assert normalised_rows(output.rows, task) == normalised_rows(expected_rows, task)
    assert normalised(output.failures) == expected_failures
    per_input = 1 if task.group_generations else task.num_generations
    assert len(output.rows) == len(rows) * per_input


@PROPERTY
@given(cases())
def test_process_batch_sends_each_valid_prompt_once_and_loses_no_row(
    case: tuple[ImageGeneration, list[Any], Any],
) -> None:
    task, rows, answers = case
    model = answered(task, answers)
    built = task.process_batch(rows)
    column = task.input_mappings.get("prompt", "prompt")
    sent = [row[column] for i, row in enumerate(rows) if problem(task, i, row) is None]
    assert [call.prompts for call in model.calls] == ([sent] if sent else [])
    per_input = 1 if task.group_generations else task.num_generations
    assert len(built) == len(rows) * per_input


@PROPERTY
@given(cases())
def test_invalid_rows_raise_naming_the_first_one_when_not_passed_through(
    case: tuple[ImageGeneration, list[Any], Any],
) -> None:
    task, rows, _ = case
    task.on_invalid_row = "raise"
    problems = [(i, problem(task, i, row)) for i, row in enumerate(rows)]
    first = next(((i, p) for i, p in problems if p is not None), None)
    if first is None:
        assert len(task.prepare(rows).prompts) == len(rows)
    else:
        with pytest.raises(InputRowError) as info:
            task.prepare(rows)
        assert (info.value.row, str(info.value)) == first
