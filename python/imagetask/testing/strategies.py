"""Hypothesis strategies for a task's input rows and its model's answers.

`input_rows(task)` draws one valid input row for `task`; `answers(n)` one prompt's
answer; `batch_answers(n, inputs)` what `generate` returns (or raises) for a batch. The
values are what a `ScriptedModel` takes:

```python
@given(st.lists(input_rows(task), max_size=4), st.data())
def test_my_task(rows, data):
    model = ScriptedModel(data.draw(batch_answers(task.num_generations, len(rows))))
```

Needs the `testing` extra (hypothesis).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from imagetask import _core
from imagetask._extras import require
from imagetask.errors import ConfigError, RequestError

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy

    from imagetask.task._task import ImageTask

__all__ = ["answers", "batch_answers", "input_rows"]

Row = dict[str, Any]

_UPSTREAM_KEYS = ["raw_output_upstream_0", "raw_input_upstream_0", "statistics_upstream_0", "id"]


def _hypothesis() -> None:
    """Imports hypothesis, or raises `MissingExtraError` naming the `testing` extra."""
    require("hypothesis", "testing", "imagetask.testing")


@functools.cache
def _values() -> SearchStrategy[Any]:
    """Arbitrary column values: scalars, text, bytes, and lists and dicts of them."""
    _hypothesis()
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
    )
    values: SearchStrategy[Any] = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=6,
    )
    return values


def input_rows(
    task: ImageTask, *, values: Mapping[str, SearchStrategy[Any]] | None = None
) -> SearchStrategy[Row]:
    """One input row that `task` must accept.

    The row has each of the task's inputs under its dataset column (after
    `input_mappings`), holding arbitrary text (unicode, empty strings) unless `values`
    gives a strategy for that input; extra columns with nested values, among them names
    the task writes (its output columns, `model_name`, the metadata column's name) and the
    inputs' own names; sometimes upstream metadata (a dict, or `None`) in the metadata
    column. Column order is arbitrary.
    """
    _hypothesis()
    from hypothesis import strategies as st

    given = dict(values or {})
    unknown = sorted(set(given) - set(task.inputs))
    if unknown:
        raise ConfigError(f"input_rows: {unknown} are not inputs of the task {task.inputs}")
    columns = {
        task.input_mappings.get(name, name): given.get(name, st.text(max_size=12))
        for name in task.inputs
    }
    schema = task.output_schema
    meta = schema.metadata
    outputs = [*schema.columns.values(), schema.model_name]
    colliding = sorted({*outputs, *task.inputs, meta, "image", "image_path"})
    keys = st.one_of(st.sampled_from(colliding), st.text(max_size=6))
    upstream = st.one_of(
        st.none(),
        st.dictionaries(
            st.one_of(st.sampled_from(_UPSTREAM_KEYS), st.text(max_size=6)), _values(), max_size=3
        ),
    )

    extras = st.dictionaries(keys, _values(), max_size=3)
    present = st.booleans()

    @st.composite
    def rows(draw: DrawFn) -> Row:
        row: Row = {key: value for key, value in draw(extras).items() if key != meta}
        for column, strategy in columns.items():
            row[column] = draw(strategy)
        if draw(present):
            row[meta] = draw(upstream)
        return row

    strategy: SearchStrategy[Row] = rows()
    return strategy


@functools.cache
def _images() -> SearchStrategy[bytes]:
    """Small valid PNG images (1 to 4 pixels a side), distinct per seed."""
    _hypothesis()
    from hypothesis import strategies as st

    def picture(seed: int, width: int, height: int) -> bytes:
        images = _core.placeholder_images(
            ["imagetask.testing"], num_generations=1, seed=seed, width=width, height=height
        )
        return images[0][0]

    images: SearchStrategy[bytes] = st.builds(
        picture, st.integers(0, 2**32), st.integers(1, 4), st.integers(1, 4)
    )
    return images


def answers(num_generations: int) -> SearchStrategy[Any]:
    """One prompt's answer from a model asked for `num_generations` images.

    Mostly a list of dicts: one dict holding the images, or one dict per image; each image
    a small PNG as bytes or base64 text; sometimes extra keys (`seed`, `revised_prompt`,
    `statistics`, `usage`), fewer or more images than asked, failed parts
    (`{"images": [None], "error": ...}`). Else a missing answer (`None`) or the exception
    of a request that failed.
    """
    return _answers(num_generations)


@functools.cache
def _answers(num_generations: int) -> SearchStrategy[Any]:
    _hypothesis()
    from hypothesis import strategies as st

    image = _images()
    payloads = st.one_of(image, image.map(lambda data: base64.b64encode(data).decode("ascii")))
    extras = st.fixed_dictionaries(
        {},
        optional={
            "seed": st.integers(0, 2**32),
            "revised_prompt": st.text(max_size=8),
            "statistics": st.dictionaries(
                st.sampled_from(["latency_ms", "image_bytes"]), st.integers(0, 10**6), max_size=2
            ),
            "usage": st.dictionaries(
                st.sampled_from(["input_tokens", "output_tokens"]), st.integers(0, 99)
            ),
        },
    )
    failed_part = st.builds(
        lambda error: {"images": [None], "error": error},
        st.sampled_from(["content policy violation", "request timed out", ""]),
    )
    # Mostly the images asked for; sometimes fewer (some are missing) or one more.
    count = st.one_of(st.just(num_generations), st.integers(0, num_generations + 1))
    one_dict = st.builds(
        lambda extra, images: [{**extra, "images": images}],
        extras,
        count.flatmap(lambda n: st.lists(payloads, min_size=n, max_size=n)),
    )
    part = st.one_of(
        st.builds(lambda extra, payload: {**extra, "images": [payload]}, extras, payloads),
        failed_part,
    )
    per_image = count.flatmap(lambda n: st.lists(part, min_size=n, max_size=n))
    failed_request = st.one_of(
        st.builds(TimeoutError, st.just("request timed out")),
        st.builds(
            RequestError, st.just("request failed after 5 attempts: 503 Service Unavailable")
        ),
    )
    strategy: SearchStrategy[Any] = st.one_of(one_dict, per_image, st.none(), failed_request)
    return strategy


def batch_answers(
    num_generations: int, inputs: int
) -> SearchStrategy[Sequence[Any] | BaseException]:
    """What a model's `generate` gives for a batch of `inputs` prompts.

    Mostly a list of `inputs` answers drawn from `answers(num_generations)`; sometimes a
    whole-batch failure: an exception the model raises, or a list one answer short or
    one answer long (which cannot be matched to the prompts).
    """
    return _batch_answers(num_generations, inputs)


@functools.cache
def _batch_answers(
    num_generations: int, inputs: int
) -> SearchStrategy[Sequence[Any] | BaseException]:
    _hypothesis()
    from hypothesis import strategies as st

    answer = _answers(num_generations)
    per_prompt = st.lists(answer, min_size=inputs, max_size=inputs)
    outcomes = st.sampled_from(["answered"] * 8 + ["raised", "short", "long"])

    @st.composite
    def batches(draw: DrawFn) -> Sequence[Any] | BaseException:
        listed: list[Any] = draw(per_prompt)
        outcome = draw(outcomes)
        if outcome == "raised":
            return RuntimeError("the backend is down")
        if outcome == "short" and listed:
            return listed[:-1]
        if outcome == "long":
            return [*listed, draw(answer)]
        return listed

    strategy: SearchStrategy[Sequence[Any] | BaseException] = batches()
    return strategy
