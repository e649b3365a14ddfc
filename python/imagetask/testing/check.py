"""`check_task`: a task's output rows checked against the library's invariants.

`check_task(task)` draws batches of input rows for the task (`input_rows`) and answers for
its model (`batch_answers`), runs a copy of the task on them with a `ScriptedModel`, and
checks every invariant of `INVARIANTS` on the rows it gives. The first that does not hold
raises `AssertionError` naming it, with the smallest rows and answers hypothesis found.
"""

from __future__ import annotations

import base64
import binascii
import copy
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from imagetask._extras import require
from imagetask.build._batch import failures_not_logged
from imagetask.build._columnar import arrow, dict_rows
from imagetask.build._converter import RowConverter
from imagetask.errors import InputRowError
from imagetask.testing.models import ScriptedModel
from imagetask.testing.strategies import batch_answers, input_rows

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy

    from imagetask.task._task import ImageTask

__all__ = ["INVARIANTS", "Case", "Example", "Invariant", "check_task"]

Row = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One drawn example: a batch of input rows and what the model answers for them."""

    rows: list[Row]
    answers: Sequence[Any] | BaseException


@dataclass(frozen=True)
class Example:
    """A case run through the task, with what the invariants look at.

    Attributes
    ----------
    task:
        The task that ran (a copy of the checked task, answered by a `ScriptedModel`).
    rows:
        The input rows as drawn; `given` are the same rows after the task ran on them.
    answers:
        What the model answered (or raised) for the batch.
    prompts:
        The prompts the model was sent, call by call.
    output:
        The output rows; empty when the task raised.
    error:
        What the task raised (an `InputRowError` from `format_input`, or any other
        exception), as text.
    images:
        `images[i][k]`: whether the model's answer had an image for generation `k` of row `i`.
    written:
        The columns the task wrote on the first output row whose input has none of the
        names the task writes (`None` when every input has one).
    """

    task: ImageTask
    rows: list[Row]
    answers: Sequence[Any] | BaseException
    given: list[Row]
    prompts: list[list[str]]
    output: list[Row]
    error: str | None
    images: list[list[bool]]
    written: frozenset[str] | None

    @property
    def per_input(self) -> int:
        """Output rows per input row."""
        return 1 if self.task.group_generations else self.task.num_generations

    def outputs_of(self, index: int) -> list[Row]:
        """The output rows of input row `index`."""
        return self.output[index * self.per_input : (index + 1) * self.per_input]

    def generations(self) -> Iterator[tuple[int, int, Row, Any]]:
        """`(row, generation, output row, metadata)` of every generation."""
        n = self.task.num_generations
        meta = self.task.output_schema.metadata
        for i in range(len(self.rows)):
            for j, out in enumerate(self.outputs_of(i)):
                if self.task.group_generations:
                    metas = out.get(meta)
                    for k in range(n):
                        yield i, k, out, metas[k] if isinstance(metas, list) else None
                else:
                    yield i, j, out, out.get(meta)

    def value(self, out: Row, column: str, k: int) -> Any:
        """Generation `k`'s value in `column` of its output row."""
        value = out.get(column)
        if self.task.group_generations:
            return value[k] if isinstance(value, list) and k < len(value) else None
        return value

    def output_columns(self) -> set[str]:
        """The columns the task writes besides `model_name` and the metadata column."""
        written = self.written or frozenset()
        return set(written) - {self.task.output_schema.model_name, self.task.output_schema.metadata}

    def failed(self, meta: Any) -> bool:
        """Whether a generation's metadata records an error (a failure row)."""
        return isinstance(meta, dict) and self.task.output_schema.error in meta


class Invariant(NamedTuple):
    """A property every task's rows must have: its name, what it says, and its check,
    which returns what is wrong with an example (or `None`)."""

    name: str
    statement: str
    check: Callable[[Example], str | None]


def _view(task: ImageTask, row: Row) -> Row:
    """The row as the task's hooks see it: dataset columns renamed to the task's inputs."""
    view = copy.deepcopy(row)
    for name in task.inputs:
        column = task.input_mappings.get(name, name)
        if column != name and column in view:
            view[name] = view.pop(column)
    return view


def _hooks_do_not_raise(example: Example) -> str | None:
    if example.error is not None:
        return example.error
    for i, k, _, meta in example.generations():
        if example.images[i][k] and example.failed(meta):
            error = meta[example.task.output_schema.error]
            return (
                f"generation {k} of row {i} failed although the model's answer had an "
                f"image: {error}"
            )
    return None


def _one_row_per_generation(example: Example) -> str | None:
    expected = len(example.rows) * example.per_input
    if len(example.output) != expected:
        return (
            f"{len(example.rows)} input rows gave {len(example.output)} output rows, "
            f"expected {expected}"
        )
    if example.task.group_generations:
        n = example.task.num_generations
        for i, out in enumerate(example.output):
            for column in [example.task.output_schema.metadata, *sorted(example.output_columns())]:
                value = out.get(column)
                if not (isinstance(value, list) and len(value) == n):
                    return f"the grouped row of row {i} has no list of {n} values in '{column}'"
    return None


def _input_rows_unmodified(example: Example) -> str | None:
    for i, (drawn, given) in enumerate(zip(example.rows, example.given, strict=True)):
        if drawn != given:
            return f"row {i} was {drawn!r} before the task ran and {given!r} after"
    return None


def _input_columns_unchanged(example: Example) -> str | None:
    may_write = example.task.output_schema.written
    for i, row in enumerate(example.rows):
        for out in example.outputs_of(i):
            if list(out)[: len(row)] != list(row):
                return (
                    f"an output row of row {i} has the columns {list(out)}, expected "
                    f"{list(row)} first"
                )
            for column, value in row.items():
                if column not in may_write and out[column] != value:
                    return (
                        f"an output row of row {i} has {out[column]!r} in its input column "
                        f"{column!r}, expected {value!r}"
                    )
    return None


def _same_columns_on_every_row(example: Example) -> str | None:
    task = example.task
    written = example.written
    for i, row in enumerate(example.rows):
        for out in example.outputs_of(i):
            for column in (task.output_schema.metadata, task.output_schema.model_name):
                if column not in out:
                    return f"an output row of row {i} has no column '{column}'"
            if written is not None and set(out) != set(row) | written:
                return (
                    f"an output row of row {i} has the columns {sorted(out)}, expected its "
                    f"input's columns and {sorted(written)}, like every other row"
                )
    return None


def _nothing_silently_lost(example: Example) -> str | None:
    task = example.task
    schema = task.output_schema
    if schema.image_output in task.outputs:
        columns = {schema.columns[schema.image_output]}
    else:
        columns = example.output_columns()
    if not columns:
        return None
    for i, k, out, meta in example.generations():
        if not example.images[i][k] or example.failed(meta):
            continue
        if all(example.value(out, column, k) is None for column in columns):
            return (
                f"generation {k} of row {i} had an image in the model's answer, but its row "
                f"has none in {sorted(columns)} and no '{task.output_schema.error}' in its metadata"
            )
    return None


def _model_failures_fail_only_their_rows(example: Example) -> str | None:
    for i, k, out, meta in example.generations():
        if example.images[i][k]:
            continue
        if not example.failed(meta):
            return (
                f"generation {k} of row {i} had no image in the model's answer, but its row "
                f"records no '{example.task.output_schema.error}' in its metadata: {meta!r}"
            )
        filled = sorted(
            column
            for column in example.output_columns()
            if example.value(out, column, k) is not None
        )
        if filled:
            return f"generation {k} of row {i} failed, but its row has values in {filled}"
    return None


def _upstream_metadata_merged(example: Example) -> str | None:
    task = example.task
    own = task.output_schema.own_keys
    for i, k, _, meta in example.generations():
        upstream = example.rows[i].get(task.output_schema.metadata)
        if not isinstance(upstream, dict):
            continue
        if not isinstance(meta, dict):
            return f"generation {k} of row {i} has {meta!r} as its metadata, expected a dict"
        for key, value in upstream.items():
            if key not in own and (key not in meta or meta[key] != value):
                return (
                    f"generation {k} of row {i} lost the upstream metadata {key!r}: "
                    f"{value!r} (its metadata: {meta!r})"
                )
    return None


def _raw_input_is_what_format_input_returned(example: Example) -> str | None:
    task = example.task
    expected = []
    for row in example.rows:
        try:
            expected.append(task.format_input(_view(task, row)))
        except Exception as exc:
            return f"format_input raised {type(exc).__name__}: {exc} when called again on a row"
    if example.prompts != [expected]:
        return (
            f"the model was sent {example.prompts!r}, expected one call with format_input's "
            f"values {expected!r}"
        )
    if not task.add_raw_input:
        return None
    key = task.output_schema.raw_input
    for i, k, _, meta in example.generations():
        recorded = meta.get(key) if isinstance(meta, dict) else None
        if recorded != expected[i]:
            return (
                f"generation {k} of row {i} records {recorded!r} as its raw input, but the "
                f"model was sent {expected[i]!r}"
            )
    return None


def _comparable(task: ImageTask, rows: list[Row]) -> list[Row]:
    """Rows with the documented differences of the Arrow layout taken out: converted to
    the cells the layout stores and back, images as their bytes (`imagetask.build._converter`)."""
    convert = RowConverter(task.output_schema, images_as_bytes=True)
    return [convert.row(convert.arrow_row(row), f"row {i}") for i, row in enumerate(rows)]


def _outcome(task: ImageTask, build: Callable[[], list[Row]]) -> list[Row] | str:
    """The comparable rows `build` gives, or what it raised."""
    try:
        return _comparable(task, build())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _columnar_matches_dict(example: Example) -> str | None:
    pa = arrow()
    try:
        table = pa.Table.from_pylist(example.rows)
        rows = table.to_pylist()
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None  # rows that are not a table are checked on the dict path only
    task, answers = example.task, example.answers
    _answered(task, answers)
    expected = _outcome(task, lambda: task.process_batch(rows))
    _answered(task, answers)
    got = _outcome(task, lambda: dict_rows(task, task.process_arrow(table)))
    if got == expected:
        return None
    if isinstance(got, str) or isinstance(expected, str):
        return f"process_arrow gave {got!r} where process_batch gave {expected!r}"
    for index, (arrow_row, dict_row) in enumerate(zip(got, expected, strict=False)):
        if arrow_row != dict_row:
            return (
                f"output row {index}: process_arrow gave {arrow_row!r}, process_batch {dict_row!r}"
            )
    return f"process_arrow gave {len(got)} rows, process_batch {len(expected)}"


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "hooks_do_not_raise",
        "format_input, format_output and complete_rows handle every valid row: nothing "
        "raises, and no generation whose answer had an image fails",
        _hooks_do_not_raise,
    ),
    Invariant(
        "one_row_per_generation",
        "every input row gives num_generations output rows, in input order (one row of "
        "lists of num_generations values when grouped)",
        _one_row_per_generation,
    ),
    Invariant(
        "input_rows_unmodified",
        "the task does not change the input rows it is given",
        _input_rows_unmodified,
    ),
    Invariant(
        "input_columns_unchanged",
        "every output row starts with its input row's columns, in their order, with their "
        "values (except the columns the task writes)",
        _input_columns_unchanged,
    ),
    Invariant(
        "same_columns_on_every_row",
        "every output row has its input's columns plus the same written columns (outputs, "
        "model_name, metadata), failures included",
        _same_columns_on_every_row,
    ),
    Invariant(
        "nothing_silently_lost",
        "every generation whose answer had an image has an image or an error under "
        "error_<name> in its metadata",
        _nothing_silently_lost,
    ),
    Invariant(
        "model_failures_fail_only_their_rows",
        "a generation whose answer had no image (a failed, missing or unusable answer, or a "
        "failed batch) is a failure row: None in its output columns, its error under "
        "error_<name>",
        _model_failures_fail_only_their_rows,
    ),
    Invariant(
        "upstream_metadata_merged",
        "the metadata of every generation holds the input row's upstream metadata",
        _upstream_metadata_merged,
    ),
    Invariant(
        "raw_input_is_what_format_input_returned",
        "the model is sent format_input's value for each row, in one call, and the raw "
        "input recorded is that value",
        _raw_input_is_what_format_input_returned,
    ),
    Invariant(
        "columnar_matches_dict",
        "process_arrow carries the same information as process_batch for the same rows "
        "and answers (checked on rows pyarrow holds as a table)",
        _columnar_matches_dict,
    ),
)
"""The invariants `check_task` checks, in order."""


def _is_image(payload: Any) -> bool:
    """Whether an answer's payload is an image: non-empty bytes, or canonical base64 text
    of some."""
    if isinstance(payload, bytes):
        return bool(payload)
    if not isinstance(payload, str) or not payload.isascii():
        return False
    padded = payload + "=" * (-len(payload) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
    except binascii.Error:
        return False
    return bool(data) and base64.b64encode(data).decode("ascii") == padded


def _answer_images(answers: Any, count: int, n: int) -> list[list[bool]]:
    """For each row and generation, whether the model's answer had an image for it."""
    if (
        isinstance(answers, (BaseException, str))
        or not isinstance(answers, Sequence)
        or len(answers) != count
    ):
        return [[False] * n for _ in range(count)]
    images = []
    for entry in answers:
        found: list[bool] = []
        if isinstance(entry, list) and all(
            isinstance(part, dict) and isinstance(part.get("images"), list) for part in entry
        ):
            found = [_is_image(image) for part in entry for image in part["images"]][:n]
        images.append(found + [False] * (n - len(found)))
    return images


def _written(task: ImageTask, rows: list[Row], output: list[Row]) -> frozenset[str] | None:
    """The columns the task wrote on the first output row whose input has none of the
    names it writes (besides its declared inputs)."""
    declared = {task.input_mappings.get(name, name) for name in task.inputs}
    may_write = task.output_schema.written
    per_input = 1 if task.group_generations else task.num_generations
    for i, row in enumerate(rows):
        if not (set(row) - declared) & may_write and i * per_input < len(output):
            return frozenset(set(output[i * per_input]) - set(row))
    return None


def _answered(task: ImageTask, answers: Sequence[Any] | BaseException) -> ScriptedModel:
    """Gives the task a model that answers `answers` (a copy) and returns it."""
    model = ScriptedModel(copy.deepcopy(answers), model_name=task.llm.model_name)
    task.image_generation_model = model
    return model


def _run(task: ImageTask, case: Case) -> Example:
    """Runs one case through the task: `prepare`, `generate`, `finish`."""
    model = _answered(task, case.answers)
    given = copy.deepcopy(case.rows)
    output: list[Row] = []
    error = None
    try:
        batch = task.prepare(given)
        batch.generate()
        output = batch.finish().rows
    except InputRowError as exc:
        error = str(exc)
    except Exception as exc:
        error = f"the task raised {type(exc).__name__}: {exc}"
    return Example(
        task=task,
        rows=case.rows,
        answers=case.answers,
        given=given,
        prompts=[call.prompts for call in model.calls],
        output=output,
        error=error,
        images=_answer_images(case.answers, len(case.rows), task.num_generations),
        written=_written(task, case.rows, output),
    )


def _message(task: ImageTask, invariant: Invariant, problem: str, case: Case) -> str:
    rows = "\n".join(f"  row {i}: {row!r}" for i, row in enumerate(case.rows))
    return (
        f"check_task({type(task).__name__}): invariant '{invariant.name}' does not hold: "
        f"{problem}\n({invariant.statement})\n"
        f"falsifying rows:\n{rows}\n"
        f"falsifying answers: {case.answers!r}"
    )


def check_task(
    task: ImageTask,
    *,
    max_examples: int = 200,
    values: Mapping[str, SearchStrategy[Any]] | None = None,
) -> None:
    """Checks `task`'s output rows against every invariant of `INVARIANTS`.

    Draws up to `max_examples` batches of one to four input rows (`input_rows(task,
    values=values)`) with the model's answers for them (`batch_answers`), and runs each
    through a copy of the task whose model is a `ScriptedModel` giving those answers
    (the task's own model is never called; artifacts go to a temporary folder). The task
    is checked as configured (`num_generations`, `group_generations`, the raw flags,
    mappings); `format_input` is expected to depend on its row only.

    Raises `AssertionError` naming the first invariant that does not hold, with the
    shrunk rows and answers that break it. Do not call it inside a `@given` test.
    """
    require("hypothesis", "testing", "check_task")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    rows = st.lists(input_rows(task, values=values), min_size=1, max_size=4)

    @st.composite
    def cases(draw: DrawFn) -> Case:
        drawn: list[Row] = draw(rows)
        return Case(drawn, draw(batch_answers(task.num_generations, len(drawn))))

    clone = copy.copy(task)
    clone.on_invalid_row = "raise"

    @settings(
        max_examples=max_examples,
        deadline=None,
        # Every task's check is one test function to hypothesis: examples saved for one
        # task would be replayed, unshrunk, for the next.
        database=None,
        # The explain phase tries variants of the shrunk example, and a shorter variant it
        # finds would be reported unshrunk.
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(cases())
    def run(case: Case) -> None:
        example = _run(clone, case)
        for invariant in INVARIANTS:
            try:
                problem = invariant.check(example)
            except Exception as exc:  # rows so far from the library's that a check breaks
                problem = f"checking it raised {type(exc).__name__}: {exc}"
            if problem is not None:
                raise AssertionError(_message(task, invariant, problem, case))

    with tempfile.TemporaryDirectory(prefix="imagetask-check-") as folder, failures_not_logged():
        if "output_dir" in clone.runtime_parameters_names:
            clone.set_runtime_parameters({"output_dir": folder})
        run()
