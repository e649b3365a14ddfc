"""Fuzzing the task: hostile configurations, rows and answers through `process_batch`.

The only allowed outcomes are the documented ones: a `ConfigError` at construction, an
`InputRowError` naming a row (when invalid rows raise), or exactly the promised number of
rows, where every generation has an image or a recorded error. Never another exception,
a crash or a lost row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from imagetask import ConfigError, ImageGeneration, InputRowError
from tests.support.models import BatchScriptedModel
from tests.support.payloads import b64

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ERRORS = [
    ValueError("v"),
    RuntimeError(),
    KeyError("k"),
    TypeError("t"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
]


class Raising(Mapping[Any, Any]):
    """A Mapping that raises from one of its methods."""

    def __init__(self, data: dict[Any, Any], where: str, error: Exception) -> None:
        self.data, self.where, self.error = data, where, error

    def _maybe(self, where: str) -> None:
        if self.where == where:
            raise self.error

    def __getitem__(self, key: Any) -> Any:
        self._maybe("getitem")
        return self.data[key]

    def __iter__(self) -> Iterator[Any]:
        self._maybe("iter")
        return iter(self.data)

    def __len__(self) -> int:
        self._maybe("len")
        return len(self.data)

    def keys(self) -> Any:
        self._maybe("keys")
        return self.data.keys()


class BadKey:
    """A dict key that shares the hash of "prompt" and whose comparison raises once the
    rows are built (`armed`)."""

    armed = False

    def __hash__(self) -> int:
        return hash("prompt")

    def __eq__(self, other: object) -> bool:
        if BadKey.armed:
            raise RuntimeError("no comparing")
        return self is other


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.tuples(inner, inner),
    ),
    max_leaves=8,
)
keys = st.one_of(
    st.sampled_from(["prompt", "text", "image", "model_name", "distilabel_metadata"]),
    st.text(max_size=4),
    st.integers(),
)


@st.composite
def rows(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["dict"] * 6 + ["raising", "not-mapping", "bad-key", "deep"]))
    data = draw(st.dictionaries(keys, values, max_size=4))
    if draw(st.booleans()):
        data["prompt"] = draw(st.one_of(st.text(max_size=8), values))
    if kind == "raising":
        where = draw(st.sampled_from(["getitem", "iter", "len", "keys"]))
        return Raising(data, where, draw(st.sampled_from(ERRORS)))
    if kind == "not-mapping":
        return draw(values)
    if kind == "bad-key":
        data[BadKey()] = 1
    if kind == "deep":
        nested: Any = "x"
        for _ in range(draw(st.integers(100, 3000))):
            nested = [nested]
        data["deep"] = nested
    return data


payloads = st.one_of(
    st.binary(min_size=1, max_size=12).map(b64),
    st.binary(max_size=12),
    st.text(max_size=12),
    st.sampled_from(["", "\ud800", "data:image/png;base64,AAAA", "@@", None, 7, [b"x"]]),
)
parts = st.one_of(
    st.fixed_dictionaries(
        {"images": st.lists(payloads, max_size=4)},
        optional={"statistics": values, "seed": values, "error": values},
    ),
    values,
)
entries = st.one_of(
    st.lists(parts, max_size=4),
    st.tuples(parts),
    st.sampled_from(ERRORS),
    st.none(),
    values,
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "num_generations": draw(
            st.integers(1, 3) if draw(st.integers(0, 9)) else st.one_of(st.integers(), st.text())
        ),
        "group_generations": draw(st.booleans()),
        "add_raw_output": draw(st.booleans()),
        "add_raw_input": draw(st.booleans()),
        "images_as_bytes": draw(st.booleans()),
        "inline_raw_images": draw(st.booleans()),
        "on_invalid_row": draw(st.sampled_from(["raise", "fail"] * 5 + ["ignore"])),
    }
    if not draw(st.integers(0, 4)):
        fields["name"] = draw(st.text(max_size=8))
    if not draw(st.integers(0, 4)):
        fields["metadata_column"] = draw(st.sampled_from(["meta", "image", "prompt", ""]))
    if not draw(st.integers(0, 4)):
        fields["output_mappings"] = draw(
            st.dictionaries(
                st.sampled_from(["image", "model_name", "image_path", "nope"]),
                st.sampled_from(["picture", "image", "prompt", "model", "m"]),
                max_size=2,
            )
        )
    return fields


@FUZZ
@given(config=configs(), batch=st.lists(rows(), max_size=5), data=st.data())
def test_hostile_batches_give_documented_outcomes(
    config: dict[str, Any], batch: list[Any], data: st.DataObject
) -> None:
    model = BatchScriptedModel([])
    try:
        task = ImageGeneration(image_generation_model=model, **config)
    except ConfigError:
        event("refused at construction")
        return

    def answer(prompts: list[str], n: int) -> Any:
        shape = data.draw(st.sampled_from(["per-input"] * 6 + ["whole", "short", "long"]))
        if shape == "whole":
            return data.draw(entries)
        answers = [data.draw(entries) for _ in prompts]
        if shape == "short":
            return answers[:-1]
        if shape == "long":
            return [*answers, None]
        return answers

    model.answers = answer
    BadKey.armed = True
    try:
        out = task.process_batch(batch)
    except InputRowError as exc:
        event("an invalid row raised")
        assert task.on_invalid_row == "raise"
        assert 0 <= exc.row < len(batch)
        assert str(exc).startswith(f"row {exc.row} of the batch ") or (
            f"for row {exc.row} of the batch" in str(exc)
        )
        return
    finally:
        BadKey.armed = False
    event("built")
    per_input = 1 if task.group_generations else task.num_generations
    assert len(out) == len(batch) * per_input
    image = task.output_mappings.get("image", "image")
    meta = task.metadata_column
    error = f"error_{task.name}"
    for row in out:
        images = row[image] if task.group_generations else [row[image]]
        metas = row[meta] if task.group_generations else [row[meta]]
        assert len(images) == len(metas)
        for picture, metadata in zip(images, metas, strict=True):
            # Every generation has its image or says why it has none.
            assert (picture is None) == (error in metadata)
            if picture is not None:
                assert isinstance(picture, bytes if task.images_as_bytes else str)
                assert len(picture) > 0
            if error in metadata:
                # A failure row can always be written out.
                msgspec.json.encode(metadata[error])
