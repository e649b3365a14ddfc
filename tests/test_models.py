"""Backends: the async base class, concurrency, event loops (SPEC §1, §6.10)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from conftest import b64

from imagetask import AsyncImageGenerationModel, ImageGeneration


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
    from imagetask import ConfigError

    with pytest.raises(ConfigError, match=r"bad field `max_concurrency` = 0: Expected `int` >= 1"):
        SlowModel(max_concurrency=0)
