"""The native row builder: bounded counts, every image checked the same way whatever the
flags, the garbage collector left as it was found, and failures that do not carry old errors."""

from __future__ import annotations

import base64
import gc
import json
import threading
from typing import Any

import msgspec
import pytest

from imagetask import (
    ImageGeneration,
    _core,
)
from tests.support.models import BatchScriptedModel, task_for
from tests.support.payloads import PNG, b64, sha

META = "distilabel_metadata"
ERROR = "error_image_generation_0"
RAW = "raw_output_image_generation_0"


@pytest.mark.parametrize("count", [0, 10**12, 2**63])
def test_the_native_builder_refuses_an_unbounded_count(count: int) -> None:
    with pytest.raises(ValueError, match="num_generations must be between 1 and 10000"):
        _core.RowBuilder(
            model_name="m",
            inputs=[("prompt", "prompt")],
            outputs=[("image", "image")],
            num_generations=count,
            group_generations=False,
            add_raw_output=True,
            add_raw_input=True,
            image_bytes=False,
            inline_raw_images=False,
            pass_invalid_rows=False,
            model_name_column="model_name",
            metadata_column=META,
            raw_output_key="raw_output_t",
            raw_input_key="raw_input_t",
            statistics_key="statistics_t",
            error_key="error_t",
        )


def test_the_largest_count_builds_every_row() -> None:
    n = _core.MAX_GENERATIONS
    answer = [[{"images": [b64(f"{k}".encode()) for k in range(n)]}]]
    rows = task_for(answer, num_generations=n, add_raw_output=False).process_batch(
        [{"prompt": "p"}]
    )
    assert len(rows) == n
    assert [base64.b64decode(row["image"]) for row in rows[:3]] == [b"0", b"1", b"2"]


# --- every image is checked the same way whatever the flags ---------------------------

BAD_IMAGES = [
    ("not base64!", "image 0 of the model's answer is not valid base64"),
    ("data:image/png;base64,iVBORw0KGgo=", "image 0 of the model's answer is not valid base64"),
    ("", "image 0 of the model's answer is empty"),
    (b"", "image 0 of the model's answer is empty"),
    ("\ud800abc", "image 0 of the model's answer is not valid base64 (it is not ASCII text)"),
]


@pytest.mark.parametrize(("image", "error"), BAD_IMAGES)
@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("inline", [True, False])
@pytest.mark.parametrize("as_bytes", [True, False])
def test_a_bad_image_fails_its_row_whatever_the_flags(
    image: Any, error: str, raw: bool, inline: bool, as_bytes: bool
) -> None:
    task = task_for(
        [[{"images": [image]}]],
        add_raw_output=raw,
        inline_raw_images=inline,
        images_as_bytes=as_bytes,
    )
    [row] = task.process_batch([{"prompt": "p"}])
    assert row["image"] is None
    assert row[META][ERROR].startswith(error)
    # Any sink can write the row, a lone surrogate included.
    line = msgspec.json.encode(row)
    assert json.loads(line)["prompt"] == "p"


# --- the garbage collector is left as it was found -------------------------------------


def test_a_build_leaves_a_disabled_collector_disabled() -> None:
    task = task_for([[{"images": [b64(b"a")]}]])
    gc.disable()
    try:
        task.process_batch([{"prompt": "p"}])
        assert not gc.isenabled()
    finally:
        gc.enable()
    task = task_for([[{"images": [b64(b"a")]}]])
    task.process_batch([{"prompt": "p"}])
    assert gc.isenabled()


def test_nested_builds_in_threads_leave_the_collector_on() -> None:
    started, release = threading.Event(), threading.Event()

    def slow_answer(prompts: list[str], n: int) -> Any:
        return [[{"images": [b64(b"a")]}] for _ in prompts]

    class Waiting(ImageGeneration):
        def format_output(self, output: dict[str, Any], input: Any = None) -> Any:
            started.set()
            release.wait(10)
            return {"image": output["images"][0]}

    waiting = Waiting(image_generation_model=BatchScriptedModel(slow_answer))
    thread = threading.Thread(target=waiting.process_batch, args=([{"prompt": "a"}],))
    thread.start()
    assert started.wait(10)
    task_for(slow_answer).process_batch([{"prompt": "b"}])  # a second build ends first
    release.set()
    thread.join(10)
    assert gc.isenabled()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_collector_switched_by_another_thread_during_builds_stays_switched(
    enabled: bool,
) -> None:
    seen: list[bool] = []

    def switch() -> None:
        (gc.disable if enabled else gc.enable)()

    class Switching(ImageGeneration):
        def format_output(self, output: dict[str, Any], input: Any = None) -> Any:
            seen.append(gc.isenabled())
            other = threading.Thread(target=switch)
            other.start()
            other.join(10)
            return {"image": output["images"][0]}

    task = Switching(image_generation_model=BatchScriptedModel([[{"images": [b64(b"a")]}]]))
    after = []
    try:
        for _ in range(5):
            (gc.enable if enabled else gc.disable)()
            [row] = task.process_batch([{"prompt": "p"}])
            after.append(gc.isenabled())
            assert row["image"] == b64(b"a")
    finally:
        gc.enable()
    assert after == [not enabled] * 5
    assert seen == [enabled] * 5


@pytest.mark.parametrize("group", [False, True])
def test_the_containers_of_built_rows_are_left_out_of_the_collector(group: bool) -> None:
    answers = [[{"images": [b64(b"a")]}], [{"images": [7]}]]  # an image, a failure
    task = task_for(answers, add_raw_output=True, group_generations=group)
    rows = task.process_batch([{"prompt": p, META: {"upstream": 1}} for p in "ab"])
    metas = [meta for row in rows for meta in (row[META] if group else [row[META]])]
    built = [*rows, *metas, *(m[RAW] for m in metas), *(m[RAW]["images"] for m in metas)]
    if group:
        built += [c for row in rows for c in (row["image"], row[META])]
    assert [type(c).__name__ for c in built if gc.is_tracked(c)] == []
    assert [(m["upstream"], ERROR in m) for m in metas] == [(1, False), (1, True)]


def test_a_retried_failure_does_not_keep_its_old_error() -> None:
    import pyarrow as pa

    old = {"error_image_generation_0": "old failure", "statistics_image_generation_0": "old"}
    task = task_for([[{"images": [b64(PNG)]}]])
    [row] = task.process_batch([{"prompt": "a", META: {**old, "source": "web"}}])
    assert row[META] == {
        "source": "web",
        "raw_output_image_generation_0": {"images": ["sha256:" + sha(PNG)]},
        "raw_input_image_generation_0": "a",
    }
    task = task_for([[{"images": [b64(PNG)]}]])
    kind = pa.struct([("error_image_generation_0", pa.string()), ("source", pa.string())])
    table = pa.table({"prompt": ["a"], META: pa.array([{**old, "source": "web"}], kind)})
    [meta] = task.process_arrow(table).column(META).to_pylist()
    assert (meta["source"], meta["error_image_generation_0"]) == ("web", None)
