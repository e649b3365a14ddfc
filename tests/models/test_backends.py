"""The built-in backends against loopback servers speaking the real wire formats."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagetask import (
    ConfigError,
    ImageGeneration,
    MissingExtraError,
    RequestError,
)
from imagetask.errors import RequestRefused
from imagetask.models import (
    InferenceEndpointsImageGeneration,
    OpenAIImageGeneration,
    PlaceholderImageGeneration,
)
from imagetask.models._requests import refused
from tests.support.servers import Fault, ImageServer, image_server, wait_until

KEY = "sk-test-very-secret-0123456789"
META = "distilabel_metadata"
ERROR = "error_image_generation_0"
RAW = "raw_output_image_generation_0"
STATS = "statistics_image_generation_0"


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server(key=KEY) as running:
        yield running


def openai_task(server: ImageServer, **model: Any) -> ImageGeneration:
    task_fields = {
        name: model.pop(name)
        for name in ("num_generations", "images_as_bytes", "input_batch_size")
        if name in model
    }
    model.setdefault("model", "gpt-image-1")
    model.setdefault("retry_backoff", 0.001)
    backend = OpenAIImageGeneration(base_url=f"{server.url}/v1", api_key=KEY, **model)
    return ImageGeneration(image_generation_model=backend, **task_fields)


def decoded(rows: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(row["image"]) for row in rows]


def jsonl_rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]


# --- placeholder -----------------------------------------------------------------------


def test_placeholder_makes_real_pngs_of_the_requested_size() -> None:
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="40x24"), num_generations=3
    )
    rows = task.process_batch([{"prompt": "a red bicycle"}, {"prompt": "a blue boat"}])
    assert len(rows) == 6
    images = decoded(rows)
    for image in images:
        picture = Image.open(io.BytesIO(image))
        assert (picture.format, picture.size, picture.mode) == ("PNG", (40, 24), "RGB")
        picture.load()
    assert len(set(images)) == 6
    assert rows[0][META][RAW] == {
        "images": ["sha256:" + hashlib.sha256(images[0]).hexdigest()],
        "seed": 0,
    }
    assert rows[0][META][STATS] == {"image_bytes": len(images[0])}
    assert rows[0]["model_name"] == "placeholder"


def test_a_cycle_built_through_the_placeholders_answers_is_collected() -> None:
    import gc
    import weakref

    class Marker:
        pass

    answers = PlaceholderImageGeneration(size="4x4").generate(["p", "q"], 2)
    marker = Marker()
    gone = weakref.ref(marker)
    part = answers[1][1]
    part["images"].append([part, marker])  # as a hook might: the answer inside its images
    del answers, part, marker
    gc.collect()
    assert gone() is None


def test_placeholder_is_identical_across_runs_and_depends_on_the_seed() -> None:
    def images(**fields: Any) -> list[bytes]:
        model = PlaceholderImageGeneration(size="8x8", **fields)
        return [part["images"][0] for answer in model.generate(["p", "q"], 2) for part in answer]

    assert images() == images()
    assert images(seed=1) == images(seed=1)
    assert not set(images()) & set(images(seed=1))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": "0x8"}, "PlaceholderImageGeneration: bad `size`: size '0x8' is not WIDTHxHEIGHT"),
        ({"size": "9000x8"}, "larger than 8192 pixels on a side"),
        ({"seed": -1}, "bad `seed` = -1: expected an int in [0, 2**64)"),
        ({"generation_kwargs": {"steps": 4}}, "unknown generation kwargs ['steps']"),
    ],
)
def test_placeholder_rejects_bad_settings(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PlaceholderImageGeneration(**fields)
    assert message in str(caught.value)


# --- OpenAI: wire format ---------------------------------------------------------------


def test_openai_sends_only_the_parameters_set(server: ImageServer) -> None:
    task = openai_task(server, generation_kwargs={"size": "16x16", "quality": "low"})
    rows = task.process_batch([{"prompt": "a cat"}])
    assert server.served.requests == [
        {"model": "gpt-image-1", "prompt": "a cat", "size": "16x16", "quality": "low"}
    ]
    assert server.served.auth == [f"Bearer {KEY}"]
    assert decoded(rows) == server.served.images
    assert Image.open(io.BytesIO(decoded(rows)[0])).size == (16, 16)
    task.unload()


def test_openai_splits_generations_into_requests_of_at_most_n(server: ImageServer) -> None:
    task = openai_task(server, images_per_request=2, num_generations=5)
    rows = task.process_batch([{"prompt": "a cat"}])
    assert sorted(request.get("n", 1) for request in server.served.requests) == [1, 2, 2]
    assert len(rows) == 5
    assert Counter(decoded(rows)) == Counter(server.served.images)
    task.unload()


def test_dall_e_3_asks_one_image_per_request(server: ImageServer) -> None:
    task = openai_task(server, model="dall-e-3", num_generations=3)
    rows = task.process_batch([{"prompt": "a cat"}])
    assert [request.get("n") for request in server.served.requests] == [None, None, None]
    assert all(row["image"] is not None for row in rows) and len(rows) == 3
    task.unload()


def test_openai_url_answers_are_downloaded(server: ImageServer) -> None:
    task = openai_task(
        server,
        generation_kwargs={"response_format": "url"},
        num_generations=2,
        images_as_bytes=True,
    )
    rows = task.process_batch([{"prompt": "a cat"}, {"prompt": "a dog"}])
    assert Counter(row["image"] for row in rows) == Counter(server.served.images)
    assert len(rows) == 4
    task.unload()


def test_openai_raw_output_and_statistics(server: ImageServer) -> None:
    task = openai_task(server, generation_kwargs={"seed": 42}, num_generations=2)
    rows = task.process_batch([{"prompt": "two red cats"}])
    for row, image in zip(rows, decoded(rows), strict=True):
        meta = row[META]
        assert meta[RAW] == {
            "images": ["sha256:" + hashlib.sha256(image).hexdigest()],
            "revised_prompt": "revised: two red cats",
            "seed": 42,
        }
        stats = dict(meta[STATS])
        assert stats.pop("latency_s") > 0
        assert stats == {
            "image_bytes": len(image),
            "images_in_request": 2,
            "input_tokens": 3,
            "output_tokens": 200,
            "total_tokens": 203,
            "cost_usd": (3 * 5.00 + 200 * 40.00) / 1_000_000 / 2,  # gpt-image-1's prices
        }
    task.unload()


@pytest.mark.parametrize(
    ("usage", "revised_prompt", "statistics", "raw"),
    [
        ("n/a", ["a", "list"], {}, {}),
        (None, None, {}, {}),
        ([3, 200], 7, {}, {}),
        (
            {"input_tokens": "3", "output_tokens": 200, "input_tokens_details": [1]},
            {"text": "a cat"},
            {"output_tokens": 200, "cost_usd": 200 * 40.00 / 1_000_000},
            {},
        ),
        (
            {"total_tokens": 5, "input_tokens_details": {"text_tokens": 3, "image_tokens": 0}},
            "a tabby cat",
            {"total_tokens": 5, "input_tokens_details": {"text_tokens": 3, "image_tokens": 0}},
            {"revised_prompt": "a tabby cat"},
        ),
    ],
)
def test_an_odd_usage_or_revised_prompt_does_not_fail_the_image(
    server: ImageServer, usage: Any, revised_prompt: Any, statistics: Any, raw: Any
) -> None:
    server.answer_fields = {"usage": usage}
    server.image_fields = {"revised_prompt": revised_prompt}
    task = openai_task(server)
    [row] = task.process_batch([{"prompt": "a cat"}])
    [image] = decoded([row])
    assert image == server.served.images[0]
    assert row[META][RAW] == {"images": ["sha256:" + hashlib.sha256(image).hexdigest()], **raw}
    stats = dict(row[META][STATS])
    del stats["latency_s"]
    assert stats == {"image_bytes": len(image), "images_in_request": 1, **statistics}
    task.unload()


# --- OpenAI: distilabel's generate and agenerate ---------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            {"response_format": "png"},
            "OpenAIImageGeneration: response_format='png': expected 'url' or 'b64_json'",
        ),
        ({"num_generations": 0}, "OpenAIImageGeneration: num_generations=0: expected >= 1"),
        ({"num_generations": "2"}, "OpenAIImageGeneration: num_generations='2': expected an int"),
    ],
)
def test_openai_generate_and_agenerate_check_their_arguments_before_any_request(
    server: ImageServer, call: dict[str, Any], message: str
) -> None:
    model = openai_task(server).image_generation_model
    assert isinstance(model, OpenAIImageGeneration)
    with pytest.raises(ValueError) as direct:
        model.generate(["a cat", "a dog"], **call)
    with pytest.raises(ValueError) as awaited:
        asyncio.run(model.agenerate("a cat", **call))
    for caught in (direct, awaited):
        assert type(caught.value) is ConfigError and str(caught.value) == message
    assert server.served.requests == []
    model.unload()


def test_a_bad_response_format_is_an_error_at_load_and_fails_a_batchs_rows(
    server: ImageServer,
) -> None:
    task = openai_task(server, generation_kwargs={"response_format": "png"})
    message = "OpenAIImageGeneration: response_format='png': expected 'url' or 'b64_json'"
    with pytest.raises(ConfigError) as caught:
        task.load()
    assert str(caught.value) == message
    rows = task.process_batch([{"prompt": "a cat"}, {"prompt": "a dog"}])
    assert [row[META][ERROR] for row in rows] == [f"the model raised ConfigError: {message}"] * 2
    assert server.served.requests == []
    task.unload()


def test_a_direct_generate_raises_the_request_error_and_the_task_keeps_its_rows(
    server: ImageServer,
) -> None:
    server.always_fail = {"bad"}
    task = openai_task(server, max_retries=0)
    model = task.image_generation_model
    with pytest.raises(RequestError) as caught:
        model.generate(["ok", "bad", "ok too"])
    assert str(caught.value).startswith("request failed after 1 attempt: InternalServerError")
    [answer] = model.generate(["ok"])
    assert [len(part["images"]) for part in answer] == [1]
    rows = task.process_batch([{"prompt": "ok"}, {"prompt": "bad"}, {"prompt": "ok too"}])
    assert [row["image"] is None for row in rows] == [False, True, False]
    assert rows[1][META][ERROR] == f"the model raised RequestError: {caught.value}"
    task.unload()


# --- OpenAI: concurrency, retries, failures --------------------------------------------


def test_the_concurrency_cap_holds_across_the_batch() -> None:
    with image_server(key=KEY, latency=0.05) as server:
        task = openai_task(server, max_concurrency=3, images_per_request=1, num_generations=2)
        rows = task.process_batch([{"prompt": f"p{i}"} for i in range(8)])
        assert server.served.peak == 3
        assert len(server.served.requests) == 16
        assert all(row["image"] is not None for row in rows)
        task.unload()


def test_retries_recover_with_no_lost_or_duplicated_image(server: ImageServer) -> None:
    server.faults = {
        "p1": [Fault(status=429), Fault(status=500)],
        "p2": [Fault(status=503), Fault(status=502), Fault(status=429)],
        # Slower than the timeout, then an error: the abandoned request serves no image.
        "p3": [Fault(delay=2.0, status=500)],
    }
    task = openai_task(server, timeout=0.8, num_generations=2)
    rows = task.process_batch([{"prompt": f"p{i}"} for i in range(5)])
    assert len(rows) == 10
    assert all(ERROR not in row[META] for row in rows)
    assert Counter(decoded(rows)) == Counter(server.served.images)
    assert len(set(server.served.images)) == 10
    assert [row["prompt"] for row in rows] == [f"p{i}" for i in range(5) for _ in range(2)]
    counts = Counter(request["prompt"] for request in server.served.requests)
    assert counts == {"p0": 1, "p1": 3, "p2": 4, "p3": 2, "p4": 1}
    task.unload()


def test_retry_after_is_honoured(server: ImageServer) -> None:
    server.faults = {"p": [Fault(status=429, headers={"Retry-After": "0.4"})]}
    task = openai_task(server)
    task.process_batch([{"prompt": "p"}])
    first, second = server.served.times["p"]
    assert second - first >= 0.4
    task.unload()


def test_a_permanently_failing_prompt_fails_only_its_rows(server: ImageServer) -> None:
    server.always_fail = {"bad"}
    task = openai_task(server, max_retries=2, num_generations=2)
    rows = task.process_batch([{"prompt": "ok1"}, {"prompt": "bad"}, {"prompt": "ok2"}])
    assert [row["image"] is None for row in rows] == [False, False, True, True, False, False]
    error = rows[2][META][ERROR]
    assert error.startswith(
        "the model raised RequestError: request failed after 3 attempts: InternalServerError:"
    )
    assert "injected 500" in error
    assert rows[3][META][ERROR] == error
    assert Counter(request["prompt"] for request in server.served.requests)["bad"] == 3
    task.unload()


def test_a_failed_request_fails_only_its_own_images(server: ImageServer) -> None:
    server.faults = {"p": [Fault(status=400)]}
    task = openai_task(server, images_per_request=1, num_generations=2)
    rows = task.process_batch([{"prompt": "p"}])
    failed = [k for k, row in enumerate(rows) if row["image"] is None]
    assert len(failed) == 1 and len(rows) == 2
    assert rows[failed[0]][META][ERROR] == (
        f"image {failed[0]} of the model's answer is missing: request failed after 1 attempt: "
        "BadRequestError: Error code: 400 - injected 400"
    )
    task.unload()


def test_a_wrong_key_is_not_retried(server: ImageServer) -> None:
    backend = OpenAIImageGeneration(
        model="gpt-image-1", base_url=f"{server.url}/v1", api_key="sk-wrong-key-abc"
    )
    rows = ImageGeneration(image_generation_model=backend).process_batch([{"prompt": "p"}])
    assert "AuthenticationError: Error code: 401" in rows[0][META][ERROR]
    assert len(server.served.requests) == 1
    backend.unload()


def test_a_run_that_ends_leaves_the_requests_of_a_run_sharing_its_backend(
    server: ImageServer, tmp_path: Path
) -> None:
    held = threading.Event()
    server.faults = {f"b{i}": [Fault(hold=held)] for i in range(3)}
    task = openai_task(server)
    later: list[Any] = []
    rows = [{"prompt": f"b{i}"} for i in range(3)]
    thread = threading.Thread(target=lambda: later.append(task.run(rows, tmp_path / "b")))
    thread.start()
    wait_until(lambda: all(f"b{i}" in server.served.times for i in range(3)))
    first = task.run([{"prompt": f"a{i}"} for i in range(2)], tmp_path / "a")
    held.set()  # the second run's requests are answered only after the first run ended
    thread.join()
    [second] = later
    assert (first.rows_out, first.failed, second.rows_out, second.failed) == (2, 0, 3, 0)
    assert second.complete
    written = jsonl_rows(tmp_path / "b")
    assert [row["prompt"] for row in written] == ["b0", "b1", "b2"]
    assert all(row["image"] is not None and ERROR not in row[META] for row in written)
    assert Counter(decoded(written + jsonl_rows(tmp_path / "a"))) == Counter(server.served.images)


def test_a_request_in_its_retry_chain_does_not_hold_the_other_batches_back(
    server: ImageServer, tmp_path: Path
) -> None:
    # p0 fails, then its retry is held until every other prompt was requested (or 10 s):
    # the batches after p0's are sent while p0 is still in its retry chain.
    held = threading.Event()
    server.faults = {"p0": [Fault(status=500), Fault(status=500, hold=held)]}
    prompts = [f"p{i}" for i in range(12)]
    requested: list[set[str]] = []

    def release() -> None:
        deadline = time.monotonic() + 10
        while set(server.served.times) != set(prompts) and time.monotonic() < deadline:
            time.sleep(0.005)
        requested.append(set(server.served.times))
        held.set()

    watcher = threading.Thread(target=release)
    watcher.start()
    task = openai_task(server, max_retries=1, input_batch_size=2)
    summary = task.run([{"prompt": prompt} for prompt in prompts], tmp_path)
    watcher.join()
    assert requested == [set(prompts)]  # all requested before p0's last attempt ended
    assert (summary.rows_in, summary.rows_out, summary.failed) == (12, 12, 1)
    rows = jsonl_rows(tmp_path)
    assert [row["prompt"] for row in rows] == prompts
    assert [row["image"] is None for row in rows] == [True] + [False] * 11
    assert rows[0][META][ERROR].startswith(
        "the model raised RequestError: request failed after 2 attempts: InternalServerError"
    )
    assert Counter(request["prompt"] for request in server.served.requests) == {
        "p0": 2,
        **{prompt: 1 for prompt in prompts[1:]},
    }


# --- refusals no retry changes --------------------------------------------------------


@pytest.mark.parametrize("refusal", ["wrong key", "forbidden", "unknown model"])
def test_an_openai_refusal_is_request_refused_without_retry(
    server: ImageServer, refusal: str
) -> None:
    server.echo_key = True  # the answer quotes the key: the error must not
    model = "gpt-image-1"
    if refusal == "wrong key":
        server.key = "sk-the-key-the-server-wants"
    elif refusal == "forbidden":
        server.faults = {prompt: [Fault(status=403)] for prompt in ("p0", "p1")}
    else:
        server.models, model = {"gpt-image-1"}, "gpt-image-9"
    task = openai_task(server, model=model, max_retries=3, num_generations=2)
    batch = task.prepare([{"prompt": "p0"}, {"prompt": "p1"}])
    batch.generate()
    error = batch.refusal()
    assert type(error) is RequestRefused
    assert str(error).startswith("request failed after 1 attempt: ")
    assert KEY not in str(error) and "Bearer **********" in str(error)
    assert sorted(request["prompt"] for request in server.served.requests) == ["p0", "p1"]
    rows = batch.finish().rows
    assert [row["image"] for row in rows] == [None] * 4
    assert all(row[META][ERROR] == f"the model raised RequestRefused: {error}" for row in rows[:2])
    task.unload()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_hugging_face_refusal_is_request_refused_without_retry(
    server: ImageServer, status: int
) -> None:
    server.faults = {"p": [Fault(status=status)] * 4}
    task = hf_task(server, api_key="hf_secret_token", max_retries=3)
    batch = task.prepare([{"prompt": "p"}])
    batch.generate()
    error = batch.refusal()
    assert type(error) is RequestRefused
    assert "hf_secret_token" not in str(error)
    assert len(server.served.requests) == 1
    task.unload()


def test_errors_that_are_no_refusal_stay_request_errors(server: ImageServer) -> None:
    # A 404 that names no model, and a 403 downloading a `url` image (an expired link).
    server.faults = {"missing": [Fault(status=404)]}
    task = openai_task(server, max_retries=1, generation_kwargs={"response_format": "url"})
    batch = task.prepare([{"prompt": "missing"}])
    batch.generate()
    server.forbidden_files = True
    expired = task.prepare([{"prompt": "expired"}])
    expired.generate()
    assert batch.refusal() is None and expired.refusal() is None
    for answers in (batch.answers, expired.answers):
        assert isinstance(answers, list) and type(answers[0]) is RequestError
    assert str(batch.answers[0]).startswith("request failed after 1 attempt: NotFoundError")
    task.unload()


class Answered(Exception):
    """An HTTP error as a client raises it: a status, and the error object's code."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code


@pytest.mark.parametrize(
    ("error", "model", "expected"),
    [
        (Answered(401, "bad key"), "m", True),
        (Answered(403, "no access"), "m", True),
        (Answered(404, "gone", code="model_not_found"), "m", True),
        (Answered(404, "The model `flux` does not exist"), "flux", True),
        (Answered(404, "Not Found for url: https://h/models/acme/flux-1."), "acme/flux-1", True),
        (Answered(404, "The model `flux-dev` does not exist"), "flux", False),
        (Answered(404, "no route /v1/images"), "v1", False),
        (Answered(404, "no file 3.png"), "m", False),
        (Answered(400, "The model `flux` does not exist"), "flux", False),
        (Answered(429, "slow down"), "m", False),
        (TimeoutError(), "m", False),
    ],
)
def test_what_is_a_refusal(error: Exception, model: str, expected: bool) -> None:
    assert refused(error, model) is expected


# --- OpenAI: secrets, event loops, extras ----------------------------------------------


def test_the_key_never_leaks(
    server: ImageServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.always_fail = {"bad"}
    server.key = None
    original = server.RequestHandlerClass.error

    def echoing(handler: Any, status: int, message: str, headers: Any = None) -> None:
        original(handler, status, f"{message} (got {handler.headers['Authorization']})", headers)

    monkeypatch.setattr(server.RequestHandlerClass, "error", echoing)
    task = openai_task(server, max_retries=0)
    with caplog.at_level(logging.DEBUG):
        rows = task.process_batch([{"prompt": "bad"}])
        text = "\n".join(
            [repr(task), repr(task.image_generation_model), json.dumps(task.dump()), caplog.text]
        )
    error = rows[0][META][ERROR]
    assert "got Bearer **********" in error
    assert KEY not in text + error
    assert "**********" in repr(task.image_generation_model)
    task.unload()


def test_the_key_comes_from_the_environment(
    server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    backend = OpenAIImageGeneration(model="gpt-image-1", base_url=f"{server.url}/v1")
    rows = ImageGeneration(image_generation_model=backend).process_batch([{"prompt": "p"}])
    assert rows[0]["image"] is not None
    assert server.served.auth == [f"Bearer {KEY}"]
    assert KEY not in json.dumps(backend.dump()) + repr(backend)
    backend.unload()


def test_no_key_for_openai_is_a_clear_error_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    task = ImageGeneration(image_generation_model=OpenAIImageGeneration(model="gpt-image-1"))
    with pytest.raises(ConfigError, match="no API key: pass `api_key` or set OPENAI_API_KEY"):
        task.load()


def test_openai_works_inside_a_running_event_loop(server: ImageServer) -> None:
    task = openai_task(server, num_generations=2)

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        synchronous = task.process_batch([{"prompt": "a"}])
        asynchronous = await task.agenerate([{"prompt": "b"}, {"prompt": "c"}])
        await task.aunload()
        return synchronous, asynchronous

    synchronous, asynchronous = asyncio.run(main())
    assert len(synchronous) == 2 and len(asynchronous) == 4
    assert Counter(decoded(synchronous + asynchronous)) == Counter(server.served.images)


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(MissingExtraError) as caught:
        OpenAIImageGeneration(model="gpt-image-1")
    assert str(caught.value).startswith(
        "OpenAIImageGeneration needs the `openai` package, which is not installed: "
        "pip install '.[openai]' in the imagetask source folder"
    )


def test_openai_model_round_trips_without_its_key() -> None:
    task = ImageGeneration(
        image_generation_model=OpenAIImageGeneration(
            model="dall-e-3", api_key=KEY, max_concurrency=4, generation_kwargs={"size": "1x1"}
        )
    )
    dumped = json.loads(json.dumps(task.dump()))
    assert "api_key" not in dumped["image_generation_model"]
    again = ImageGeneration.from_dict(dumped)
    model = again.image_generation_model
    assert isinstance(model, OpenAIImageGeneration)
    assert (model.model, model.max_concurrency, model.api_key) == ("dall-e-3", 4, None)
    assert model.generation_kwargs == {"size": "1x1"}


# --- Hugging Face ----------------------------------------------------------------------


def hf_task(server: ImageServer, **model: Any) -> ImageGeneration:
    num_generations = model.pop("num_generations", 1)
    model.setdefault("retry_backoff", 0.001)
    backend = InferenceEndpointsImageGeneration(base_url=f"{server.url}/hf", **model)
    return ImageGeneration(
        image_generation_model=backend, num_generations=num_generations, images_as_bytes=True
    )


def test_hf_one_request_per_image_with_distinct_seeds(server: ImageServer) -> None:
    task = hf_task(
        server,
        seed=100,
        api_key="hf_secret_token",
        num_generations=3,
        generation_kwargs={"width": 12, "height": 10},
    )
    rows = task.process_batch([{"prompt": "a cat"}])
    seeds = sorted(request["parameters"]["seed"] for request in server.served.requests)
    assert seeds == [100, 101, 102]
    assert [row[META][RAW]["seed"] for row in rows] == [100, 101, 102]
    assert sorted(server.served.requests, key=lambda r: r["parameters"]["seed"]) == [
        {"inputs": "a cat", "parameters": {"width": 12, "height": 10, "seed": seed}}
        for seed in seeds
    ]
    assert set(server.served.auth) == {"Bearer hf_secret_token"}
    assert Counter(row["image"] for row in rows) == Counter(server.served.images)
    assert Image.open(io.BytesIO(rows[0]["image"])).size == (12, 10)
    stats = rows[0][META][STATS]
    assert stats["image_bytes"] == len(rows[0]["image"]) and stats["latency_s"] > 0
    task.unload()


def test_hf_retries_and_fails_per_image(server: ImageServer) -> None:
    server.faults = {"flaky": [Fault(status=503, headers={"Retry-After": "0"})]}
    server.always_fail = {"bad"}
    task = hf_task(server, seed=1, max_retries=1, num_generations=2)
    rows = task.process_batch([{"prompt": "flaky"}, {"prompt": "bad"}])
    assert [row["image"] is None for row in rows] == [False, False, True, True]
    assert rows[2][META][ERROR].startswith(
        "the model raised RequestError: request failed after 2 attempts: HfHubHTTPError:"
    )
    assert Counter(row["image"] for row in rows[:2]) == Counter(server.served.images)
    task.unload()


def test_hf_needs_exactly_one_of_model_id_and_base_url() -> None:
    with pytest.raises(ConfigError, match="pass exactly one of `model_id` and `base_url`"):
        InferenceEndpointsImageGeneration()
    with pytest.raises(ConfigError, match="pass exactly one of `model_id` and `base_url`"):
        InferenceEndpointsImageGeneration(model_id="a/b", base_url="http://x")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("backend", "error"),
    [
        (
            lambda url: OpenAIImageGeneration(model="m", base_url=f"{url}/v1", api_key=KEY),
            "APIConnectionError: Connection error.",
        ),
        (lambda url: InferenceEndpointsImageGeneration(base_url=f"{url}/hf"), "ConnectError: "),
    ],
)
def test_a_refused_connection_is_retried(backend: Any, error: str) -> None:
    model = backend(f"http://127.0.0.1:{closed_port()}")
    model.set_runtime_parameters({"max_retries": 2, "retry_backoff": 0.001})
    [row] = ImageGeneration(image_generation_model=model).process_batch([{"prompt": "p"}])
    assert row[META][ERROR].startswith(
        f"the model raised RequestError: request failed after 3 attempts: {error}"
    )
    model.unload()


def test_an_empty_openai_b64_json_is_a_failure_row() -> None:
    with image_server() as server:
        server.empty_images = True
        backend = OpenAIImageGeneration(
            model="gpt-image-1", base_url=f"{server.url}/v1", api_key="k", retry_backoff=0.001
        )
        [row] = ImageGeneration(image_generation_model=backend).process_batch([{"prompt": "p"}])
        backend.unload()
    assert row["image"] is None
    assert row[META][ERROR] == "image 0 of the model's answer is empty"


# --- secrets --------------------------------------------------------------------------

SECRET = "sk-live-0123456789abcdef"


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc.__context__)


@pytest.fixture
def keyed_server() -> Iterator[ImageServer]:
    with image_server(key=SECRET) as running:
        yield running


def test_a_request_error_chains_nothing_that_holds_the_key(keyed_server: ImageServer) -> None:
    keyed_server.always_fail = {"p"}
    keyed_server.echo_key = True
    backend = OpenAIImageGeneration(
        model="gpt-image-1",
        base_url=f"{keyed_server.url}/v1",
        api_key=SECRET,
        max_retries=0,
        retry_backoff=0.001,
    )
    with pytest.raises(RequestError) as caught:
        backend.generate(["p"], 1)
    backend.unload()
    error = caught.value
    assert error.__context__ is None and error.__cause__ is None
    assert SECRET not in _all_text(error)
    assert "Authorization: Bearer **********" in str(error)


def test_an_unparsable_retry_after_is_retried_and_masked(keyed_server: ImageServer) -> None:
    keyed_server.faults = {"p": [Fault(status=429, headers={"Retry-After": "soon, maybe"})]}
    backend = OpenAIImageGeneration(
        model="gpt-image-1", base_url=f"{keyed_server.url}/v1", api_key=SECRET, retry_backoff=0.001
    )
    [row] = ImageGeneration(image_generation_model=backend).process_batch([{"prompt": "p"}])
    backend.unload()
    assert row["image"] is not None
    assert keyed_server.served.statuses == [429, 200]


def test_credentials_in_a_base_url_are_never_shown() -> None:
    from imagetask.models import InferenceEndpointsImageGeneration

    url = "http://user:PASSWORD9@127.0.0.1:9/v1?key=QKEY"
    openai = OpenAIImageGeneration(model="m", api_key="k", base_url=url, max_retries=0)
    task = ImageGeneration(image_generation_model=openai)
    hf = InferenceEndpointsImageGeneration(base_url=url, max_retries=0)
    with pytest.raises(RequestError) as caught:
        openai.generate(["p"], 1)
    openai.unload()
    error = caught.value
    shown = [repr(openai), json.dumps(task.dump()), hf.model_name, repr(hf), str(error)]
    for text in shown:
        assert "PASSWORD9" not in text and "QKEY" not in text, text
    assert hf.model_name == "http://user:**********@127.0.0.1:9/v1?**********"
