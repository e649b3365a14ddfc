"""Backends: the async base class, concurrency, event loops (SPEC §1, §6.10)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from imagetask import (
    AsyncImageGenerationModel,
    ConfigError,
    ImageGeneration,
)
from imagetask.errors import RequestRefused
from tests.support.payloads import b64


class SlowModel(AsyncImageGenerationModel):
    """Each request sleeps, records how many are in flight, and fails for 'boom'."""

    delay: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = 0
        self.peak = 0
        self.calls: dict[str, int] = {}

    @property
    def model_name(self) -> str:
        return "slow"

    async def agenerate(
        self, input: str, num_generations: int = 1, **kwargs: Any
    ) -> list[dict[str, Any]]:
        self.calls[input] = self.calls.get(input, 0) + 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if input == "boom":
                raise ConnectionError("server went away")
            return [{"images": [b64(f"{input}{k}".encode()) for k in range(num_generations)]}]
        finally:
            self.in_flight -= 1


def test_concurrency_is_capped_and_answers_keep_input_order() -> None:
    model = SlowModel(max_concurrency=3)
    prompts = [f"p{i}" for i in range(20)]
    answers = model.generate(prompts, num_generations=2)
    assert model.peak == 3
    assert answers == [
        [{"images": [b64(f"{p}0".encode()), b64(f"{p}1".encode())]}] for p in prompts
    ]
    model.unload()


def test_a_failing_request_fails_only_its_rows_after_its_retries() -> None:
    model = SlowModel(max_retries=2, retry_backoff=0.001)
    task = ImageGeneration(image_generation_model=model)
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "boom"}, {"prompt": "c"}])
    assert [row["image"] for row in rows] == [b64(b"a0"), None, b64(b"c0")]
    assert rows[1]["distilabel_metadata"]["error_image_generation_0"] == (
        "the model raised RequestError: request failed after 3 attempts: "
        "ConnectionError: server went away"
    )
    assert model.calls == {"a": 1, "boom": 3, "c": 1}
    task.unload()


def test_generate_works_inside_a_running_event_loop() -> None:
    model = SlowModel()

    async def main() -> Any:
        return model.generate(["x"])

    assert asyncio.run(main()) == [[{"images": [b64(b"x0")]}]]
    model.unload()


def test_generate_works_from_several_threads() -> None:
    model = SlowModel(max_concurrency=2)
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        results[i] = model.generate([f"t{i}"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: [[{"images": [b64(f"t{i}0".encode())]}]] for i in range(4)}
    model.unload()


def test_max_concurrency_is_validated() -> None:

    with pytest.raises(ConfigError, match=r"bad field `max_concurrency` = 0: Expected `int` >= 1"):
        SlowModel(max_concurrency=0)


class LoopBlocking(AsyncImageGenerationModel):
    """'block' holds the event loop itself before its request (as making a client does)
    until released; 'refused' is refused in a way no retry changes."""

    _calls_requests = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    @property
    def model_name(self) -> str:
        return "loop-blocking"

    def _refused(self, exc: BaseException) -> bool:
        return isinstance(exc, PermissionError)

    async def agenerate(
        self, input: str, num_generations: int = 1, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if input == "block":
            self.entered.set()
            assert self.release.wait(60)

        async def request() -> list[dict[str, Any]]:
            if input == "refused":
                raise PermissionError("401 wrong key")
            return [{"images": [b64(input.encode())]}]

        return await self._call(request)


def test_inputs_handed_to_the_model_use_request_slots_before_their_requests_begin() -> None:
    model = LoopBlocking(max_concurrency=8)
    answers: list[Any] = []
    prompts = ["block", "b", "c"]
    call = threading.Thread(target=lambda: answers.extend(model.generate_batch(prompts)))
    call.start()
    try:
        assert model.entered.wait(60)
        # The loop is held before any request began: a run must not see the slots of
        # 'block', 'b' and 'c' as free (it would start batch after batch meanwhile).
        assert model.idle_slots() == 8 - 3
    finally:
        model.release.set()
        call.join(60)
    assert answers == [[{"images": [b64(p.encode())]}] for p in prompts]
    assert model.idle_slots() == 8
    model.unload()


def test_a_refused_request_leaves_no_slot_to_start_more() -> None:
    model = LoopBlocking(max_concurrency=8, max_retries=3)
    [answer] = model.generate_batch(["refused"])
    assert type(answer) is RequestRefused
    assert model.idle_slots() == 0
    model.unload()


INTERRUPTING_ASYNC_MODEL = """
import sys
from imagetask import AsyncImageGenerationModel, ImageGeneration
from imagetask.testing import ScriptedModel

PNG = ScriptedModel().generate(["x"], 1)[0][0]["images"][0]


class Stopping(AsyncImageGenerationModel):
    @property
    def model_name(self):
        return "stopping"

    async def agenerate(self, input, num_generations=1, **kwargs):
        if input == "stop":
            raise {kind}
        return [{{"images": [PNG]}}]


task = ImageGeneration(image_generation_model=Stopping())
try:
    task.process_batch([{{"prompt": "go"}}, {{"prompt": "stop"}}])
except {name} as exc:
    print("raised", type(exc).__name__)
print("next batch", len(task.process_batch([{{"prompt": "go"}}])))
task.unload()
"""


@pytest.mark.parametrize(
    ("kind", "name"),
    [("SystemExit(2)", "SystemExit"), ("KeyboardInterrupt()", "KeyboardInterrupt")],
)
def test_an_async_model_that_is_interrupted_does_not_hang_the_caller(kind: str, name: str) -> None:
    import subprocess
    import sys

    script = INTERRUPTING_ASYNC_MODEL.format(kind=kind, name=name)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout == f"raised {name}\nnext batch 1\n", done.stderr
