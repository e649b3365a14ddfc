"""`check_task` passes correct tasks and names the invariant a broken one breaks, with the
shrunk falsifying rows and answers (issue: a testing kit for users' own tasks)."""

from __future__ import annotations

import ast
import base64
import itertools
import logging
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import strategies as st

from imagetask import ImageGeneration, ImageTask
from imagetask.build._batch import Failure
from imagetask.testing import INVARIANTS, ScriptedModel, check_task

Row = dict[str, Any]
EXAMPLES = 100


def failure_of(task: ImageTask, **options: Any) -> tuple[str, list[Row], str]:
    """Runs check_task expecting a failure: (invariant, falsifying rows, whole message)."""
    with pytest.raises(AssertionError) as info:
        check_task(task, max_examples=EXAMPLES, **options)
    message = str(info.value)
    found = re.match(r"check_task\(\w+\): invariant '(\w+)' does not hold: ", message)
    assert found is not None, message
    rows = [
        ast.literal_eval(text) for text in re.findall(r"^  row \d+: (.*)$", message, re.MULTILINE)
    ]
    assert rows, message
    return found.group(1), rows, message


# Correct tasks pass.


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"num_generations": 3},
        {"num_generations": 2, "group_generations": True},
        {"add_raw_output": False, "add_raw_input": False, "images_as_bytes": True},
        {"inline_raw_images": True, "num_generations": 2},
        {
            "name": "t-1",
            "input_mappings": {"prompt": "text"},
            "output_mappings": {"image": "picture", "model_name": "generator"},
            "metadata_column": "meta",
        },
        {"save_artifacts": True, "num_generations": 2},
        {"save_artifacts": True, "image_format": "JPEG", "group_generations": True},
        {"on_invalid_row": "fail", "num_generations": 2},
    ],
    ids=lambda fields: ",".join(fields) or "defaults",
)
def test_image_generation_keeps_every_invariant(
    fields: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = ScriptedModel()
    task = ImageGeneration(image_generation_model=model, **fields)
    before = task.dump()
    check_task(task, max_examples=EXAMPLES)
    # The task checked is a copy: the caller's task, model and folder are as they were.
    assert task.dump() == before
    assert task.image_generation_model is model and model.calls == []
    assert list(tmp_path.iterdir()) == []


class Styled(ImageGeneration):
    """A template prompt over two input columns."""

    template: str = "{prompt}, in the style of {style}"

    @property
    def inputs(self) -> list[str]:
        return ["prompt", "style"]

    def format_input(self, input: Row) -> str:
        return self.template.format(**input)


class Captioned(ImageTask):
    """An ImageTask of its own: a caption column beside the image."""

    @property
    def inputs(self) -> list[str]:
        return ["prompt"]

    @property
    def outputs(self) -> list[str]:
        return ["image", "caption", "model_name"]

    def format_input(self, input: Row) -> str:
        return "Photo: " + input["prompt"]

    def format_output(self, output: dict[str, Any], input: Row | None = None) -> Row:
        caption = (input or {}).get("prompt", "")[:10]
        return {"image": output["images"][0], "caption": caption}

    def process(self, inputs: list[Row]) -> Generator[list[Row], None, None]:
        yield self.process_batch(inputs)


class Repeated(ImageGeneration):
    """An input that is not text: `count` is an int in the user's data."""

    @property
    def inputs(self) -> list[str]:
        return ["prompt", "count"]

    def format_input(self, input: Row) -> str:
        return " and ".join([input["prompt"]] * input["count"])


@pytest.mark.parametrize(
    "task",
    [
        Styled(image_generation_model=ScriptedModel(), num_generations=2),
        Styled(
            image_generation_model=ScriptedModel(),
            input_mappings={"style": "look"},
            template="{style}: {prompt}",
        ),
        Captioned(image_generation_model=ScriptedModel(), num_generations=2),
        Captioned(image_generation_model=ScriptedModel(), group_generations=True),
    ],
    ids=["styled", "styled-mapped", "captioned", "captioned-grouped"],
)
def test_correct_subclasses_pass(task: ImageTask) -> None:
    check_task(task, max_examples=EXAMPLES)


def test_values_give_inputs_that_are_not_text() -> None:
    task = Repeated(image_generation_model=ScriptedModel())
    check_task(task, max_examples=EXAMPLES, values={"count": st.integers(1, 3)})
    # Drawn as text, `count` breaks the hook: that is what `values` is for.
    invariant, _, message = failure_of(task)
    assert invariant == "hooks_do_not_raise"
    assert "TypeError" in message


def test_failed_generations_are_not_logged_while_checking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("imagetask")
    level = logger.level
    with caplog.at_level(logging.WARNING, logger="imagetask"):
        check_task(ImageGeneration(image_generation_model=ScriptedModel()), max_examples=50)
    assert caplog.records == []
    assert logger.level == level


# Planted bugs are caught, with the shrunk falsifying row in the message.


class CrashesOnSomeText(ImageGeneration):
    def format_input(self, input: Row) -> str:
        return "A photo of " + input["prompt"].encode("ascii").decode()


class DropsTextImages(ImageGeneration):
    def format_output(self, output: dict[str, Any], input: Row | None = None) -> Row:
        image = output["images"][0]
        if isinstance(image, bytes):
            return {"image": base64.b64encode(image).decode()}
        return {}


class ReadsUndeclaredColumn(ImageGeneration):
    def format_input(self, input: Row) -> str:
        return f"{input['prompt']}, in the style of {input['style']}"


def test_format_input_crashing_on_some_strings_is_caught() -> None:
    task = CrashesOnSomeText(image_generation_model=ScriptedModel())
    invariant, rows, message = failure_of(task)
    assert invariant == "hooks_do_not_raise"
    assert "format_input failed for row 0 of the batch: UnicodeEncodeError" in message
    # Shrunk: one row, its one column, one character that is not ASCII.
    assert len(rows) == 1 and list(rows[0]) == ["prompt"]
    prompt = rows[0]["prompt"]
    assert len(prompt) == 1 and not prompt.isascii()


def test_format_output_dropping_images_without_an_error_is_caught() -> None:
    task = DropsTextImages(image_generation_model=ScriptedModel(), num_generations=2)
    invariant, rows, message = failure_of(task)
    assert invariant == "nothing_silently_lost"
    assert (
        "generation 0 of row 0 had an image in the model's answer, but its row has none in "
        "['image'] and no 'error_drops_text_images_0' in its metadata"
    ) in message
    assert rows == [{"prompt": ""}]
    answers = ast.literal_eval(message.split("falsifying answers: ", 1)[1])
    assert isinstance(answers[0][0]["images"][0], str)


def test_format_input_reading_an_undeclared_column_is_caught() -> None:
    task = ReadsUndeclaredColumn(image_generation_model=ScriptedModel())
    invariant, rows, message = failure_of(task)
    assert invariant == "hooks_do_not_raise"
    assert "format_input failed for row 0 of the batch: KeyError: 'style'" in message
    assert rows == [{"prompt": ""}]


class RaisesOnText(ImageGeneration):
    def format_output(self, output: dict[str, Any], input: Row | None = None) -> Row:
        if isinstance(output["images"][0], str):
            raise ValueError("expected bytes")
        return {"image": output["images"][0]}


class NotesInItsInput(ImageGeneration):
    """Writes into the row's upstream metadata: the hook's row is a shallow copy."""

    def format_input(self, input: Row) -> str:
        meta = input.get("distilabel_metadata")
        if isinstance(meta, dict):
            meta["seen_by"] = self.name
        prompt: str = input["prompt"]
        return prompt


NUMBERS = itertools.count()


class Numbered(ImageGeneration):
    def format_input(self, input: Row) -> str:
        return f"{input['prompt']} #{next(NUMBERS)}"


CAPTIONS = itertools.count()


class NumberedCaptions(Captioned):
    """Captions from a counter: format_output is not a function of its generation, so the
    Arrow path and the dict path caption the same rows differently."""

    def format_output(self, output: dict[str, Any], input: Row | None = None) -> Row:
        return {"image": output["images"][0], "caption": f"#{next(CAPTIONS)}"}


class Completing(ImageGeneration):
    """A `complete_rows` that changes the built rows: `change` says how."""

    def change(self, row: Row) -> None:
        raise NotImplementedError

    def complete_rows(self, rows: list[Row]) -> list[Failure]:
        for row in rows:
            self.change(row)
        return super().complete_rows(rows)


class DropsARow(Completing):
    def complete_rows(self, rows: list[Row]) -> list[Failure]:
        if len(rows) > 1:
            rows.pop()
        return []


class UppercasesThePrompt(Completing):
    def change(self, row: Row) -> None:
        row["prompt"] = row["prompt"].upper()


class MarksImagesOnly(Completing):
    def change(self, row: Row) -> None:
        if row["image"] is not None:
            row["seen"] = True


class DropsUpstreamMetadata(Completing):
    def change(self, row: Row) -> None:
        meta = row["distilabel_metadata"]
        row["distilabel_metadata"] = {k: v for k, v in meta.items() if self.name in k}


class HidesErrors(Completing):
    def change(self, row: Row) -> None:
        row["distilabel_metadata"].pop(f"error_{self.name}", None)


class RewritesRawInput(Completing):
    def change(self, row: Row) -> None:
        meta = row["distilabel_metadata"]
        meta[f"raw_input_{self.name}"] = meta[f"raw_input_{self.name}"] + "!"


class PlantedBug(NamedTuple):
    """A broken task, the invariant check_task reports it breaking, and words of the report."""

    cls: type[ImageTask]
    invariant: str
    problem: str


PLANTED_BUGS = [
    PlantedBug(
        RaisesOnText, "hooks_do_not_raise", "failed although the model's answer had an image"
    ),
    PlantedBug(DropsARow, "one_row_per_generation", "input rows gave"),
    PlantedBug(NotesInItsInput, "input_rows_unmodified", "before the task ran"),
    PlantedBug(UppercasesThePrompt, "input_columns_unchanged", "in its input column 'prompt'"),
    PlantedBug(MarksImagesOnly, "same_columns_on_every_row", "like every other row"),
    PlantedBug(DropsTextImages, "nothing_silently_lost", "but its row has none in ['image']"),
    PlantedBug(DropsUpstreamMetadata, "upstream_metadata_merged", "lost the upstream metadata"),
    PlantedBug(
        HidesErrors, "model_failures_fail_only_their_rows", "records no 'error_hides_errors_0'"
    ),
    PlantedBug(Numbered, "raw_input_is_what_format_input_returned", "expected one call with"),
    PlantedBug(RewritesRawInput, "raw_input_is_what_format_input_returned", "as its raw input"),
    PlantedBug(NumberedCaptions, "columnar_matches_dict", "process_arrow gave"),
]


@pytest.mark.parametrize(
    ("cls", "invariant", "problem"), PLANTED_BUGS, ids=[bug.cls.__name__ for bug in PLANTED_BUGS]
)
def test_each_invariant_catches_its_planted_bug(
    cls: type[ImageTask], invariant: str, problem: str
) -> None:
    task = cls(image_generation_model=ScriptedModel(), num_generations=2)
    found, _, message = failure_of(task)
    assert (found, problem in message) == (invariant, True), message
    statement = next(i.statement for i in INVARIANTS if i.name == invariant)
    assert f"({statement})" in message


class ReplacesARow(Completing):
    def complete_rows(self, rows: list[Row]) -> list[Failure]:
        rows[0] = "not a row"
        return []


def test_rows_that_break_a_check_are_reported_as_its_failure() -> None:
    task = ReplacesARow(image_generation_model=ScriptedModel())
    invariant, rows, message = failure_of(task)
    assert invariant == "hooks_do_not_raise"
    assert "does not hold: checking it raised AttributeError: 'str' object has no attribute" in (
        message
    )
    assert rows == [{"prompt": ""}]


def test_every_invariant_has_a_planted_bug_above() -> None:
    # Each planted bug names an invariant of the kit, and no invariant lacks one.
    assert {bug.invariant for bug in PLANTED_BUGS} == {invariant.name for invariant in INVARIANTS}
