"""Tasks and models pickle without their live clients and event loop, which a copy makes
again on first use, in this process or another; the API key travels only as its field."""

from __future__ import annotations

import base64
import copy
import multiprocessing
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor

import msgspec
import pytest
from ray import cloudpickle

from imagetask import (
    ConfigError,
    ImageGeneration,
    InputRowError,
    MissingExtraError,
    ReadError,
    RequestError,
    RunError,
    RunInterrupted,
    RunStopped,
    RunSummary,
    SinkError,
    errors,
)
from imagetask.errors import BudgetReached, ImageTaskError, RequestRefused, UsageError
from imagetask.models import OpenAIImageGeneration, PlaceholderImageGeneration
from tests.support.servers import image_server

KEY = "sk-test-pickled-secret-0123456789"


def openai_task(url: str) -> ImageGeneration:
    backend = OpenAIImageGeneration(
        model="gpt-image-1", base_url=f"{url}/v1", api_key=KEY, retry_backoff=0.001
    )
    return ImageGeneration(image_generation_model=backend, images_as_bytes=True)


def images_of(blob: bytes, prompts: list[str]) -> list[bytes]:
    """Unpickles a task and generates with it (run in a fresh process)."""
    task = pickle.loads(blob)
    try:
        return [row["image"] for row in task.process_batch([{"prompt": p} for p in prompts])]
    finally:
        task.unload()


def test_openai_task_pickles_after_use_and_the_copy_generates_with_its_own_client() -> None:
    with image_server(key=KEY) as server:
        task = openai_task(server.url)
        first = task.process_batch([{"prompt": "before"}])  # the loop and client are live
        blob = pickle.dumps(task)
        restored = pickle.loads(blob)

        rows = restored.process_batch([{"prompt": "a"}, {"prompt": "b"}])
        again = task.process_batch([{"prompt": "original still works"}])
        restored.unload()
        task.unload()

        served = server.served
        prompts = [body["prompt"] for body in served.requests]
        assert [prompts[0], sorted(prompts[1:3]), prompts[3]] == [
            "before",
            ["a", "b"],
            "original still works",
        ]
        assert [first[0]["image"], again[0]["image"]] == [served.images[0], served.images[3]]
        assert sorted(row["image"] for row in rows) == sorted(served.images[1:3])
        assert server.served.auth == [f"Bearer {KEY}"] * 4
    assert restored.image_generation_model.api_key == KEY
    assert blob.count(KEY.encode()) == 1
    assert KEY not in repr(restored) and "**********" in repr(restored.image_generation_model)
    assert KEY not in str(restored.dump())


def test_a_pickled_openai_task_generates_in_a_new_process() -> None:
    with image_server(key=KEY) as server:
        task = openai_task(server.url)
        blob = pickle.dumps(task)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            images = pool.submit(images_of, blob, ["x", "y", "z"]).result()
        assert sorted(images) == sorted(server.served.images)
        assert len(images) == 3 and all(image.startswith(b"\x89PNG") for image in images)
        assert server.served.auth == [f"Bearer {KEY}"] * 3


def test_an_async_model_copies_and_a_placeholder_task_round_trips() -> None:
    model = OpenAIImageGeneration(model="gpt-image-1", api_key=KEY, max_concurrency=3)
    copied = copy.deepcopy(model)
    assert copied.dump() == model.dump() and copied.api_key == KEY

    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="8x8", seed=7), num_generations=2
    )
    restored = pickle.loads(pickle.dumps(task))
    assert restored.dump() == task.dump()
    rows = restored.process_batch([{"prompt": "p"}])
    assert [base64.b64decode(row["image"]) for row in rows] == [
        base64.b64decode(row["image"]) for row in task.process_batch([{"prompt": "p"}])
    ]


class Tagged(PlaceholderImageGeneration):
    """A backend of a user's script: a field whose default is a `msgspec.field`."""

    tags: list[str] = msgspec.field(default_factory=list)


def test_a_class_with_msgspec_field_defaults_pickles_by_value() -> None:
    fields = [msgspec.field(default_factory=list), msgspec.field(default=3), msgspec.field()]
    for field in pickle.loads(pickle.dumps(fields)):
        assert isinstance(field, type(msgspec.field()))
    factory, three, bare = pickle.loads(pickle.dumps(fields))
    assert (factory.default_factory, three.default, bare.default) == (list, 3, msgspec.NODEFAULT)

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        blob = cloudpickle.dumps(Tagged)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    copied = pickle.loads(blob)
    assert copied(tags=["a"]).tags == ["a"] and copied().tags == []


# --- every exception of the library pickles -------------------------------------------

SUMMARY = RunSummary("out", "out/data.jsonl", 3, 6, 1, 1.5, 0, False)


EVERY_ERROR = [
    ImageTaskError("base"),
    ConfigError("config"),
    InputRowError("row 2 of the batch lacks the input column 'prompt'", 2, "prompt"),
    InputRowError("row 0 of the batch is a int, not a mapping", 0),
    ReadError("file.jsonl:3: bad line"),
    SinkError("sink"),
    UsageError("--size: bad"),
    RunError("run"),
    RunStopped("stopped after 50 generations failed in a row"),
    RequestError("request failed after 1 attempt"),
    RequestRefused("the server refused the credentials (401)"),
    BudgetReached("the next request (at most $0.1670) would take the estimated cost past"),
    MissingExtraError("pip install '.[parquet]' in the imagetask source folder"),
    RunInterrupted(SUMMARY),
]


def test_every_exception_class_is_tried() -> None:
    assert {type(error).__name__ for error in EVERY_ERROR} == set(errors.__all__)


@pytest.mark.parametrize("error", EVERY_ERROR)
def test_every_exception_round_trips_through_pickle(error: ImageTaskError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)
    if isinstance(error, InputRowError):
        assert (again.row, again.column) == (error.row, error.column)
    if isinstance(error, RunInterrupted):
        assert again.summary == SUMMARY
