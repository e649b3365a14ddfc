"""Backend answers of every shape, valid or not, as hypothesis strategies: the kit's
well-formed answers (`imagetask.testing.strategies.answers`) and the malformed ones only
the library itself must handle."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from imagetask.testing import strategies as kit
from tests.support.payloads import b64

payloads = st.one_of(
    st.binary(max_size=24).map(b64),
    st.binary(max_size=24).map(lambda data: b64(data).rstrip("=")),
    st.binary(max_size=24),
    st.sampled_from(["@@@@", "YR==", "héllo", 42, None]),
)

extras = st.dictionaries(
    st.sampled_from(["seed", "revised_prompt", "statistics", "usage", "error"]),
    st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=4),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    max_size=3,
)


@st.composite
def entries(draw: st.DrawFn, n: int) -> Any:
    kind = draw(st.sampled_from(["kit"] * 6 + ["one-dict", "per-generation", "bad", "bad-part"]))
    if kind == "kit":
        return draw(kit.answers(n))
    if kind == "bad":
        return draw(
            st.one_of(
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.integers()
            )
        )
    count = draw(st.integers(0, n + 1))
    if kind == "one-dict":
        return [
            {"images": draw(st.lists(payloads, min_size=count, max_size=count)), **draw(extras)}
        ]
    parts: list[Any] = [{**draw(extras), "images": [draw(payloads)]} for _ in range(count)]
    if kind == "bad-part":
        parts.append(draw(st.sampled_from([{"pictures": []}, "x", {"images": "abc"}])))
    return parts
