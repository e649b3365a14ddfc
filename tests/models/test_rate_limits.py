"""Rate limits: requests and images per minute spaced evenly, and a 429 that holds every
request, on a clock of the test's own and against a loopback server that counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagetask import ImageGeneration
from imagetask.cli import main
from imagetask.io._identity import output_identity
from imagetask.models import OpenAIImageGeneration
from imagetask.models._rate_limit import RateLimits
from imagetask.models._requests import limit_reset, request_window
from tests.support.servers import Fault, image_server, openai_command


class Clock:
    """Time that moves when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_limits_every_request_goes_at_once() -> None:
    limits = RateLimits(None, None, clock=Clock())
    assert [limits.reserve(10) for _ in range(5)] == [0.0] * 5


def test_requests_per_minute_are_spaced_evenly() -> None:
    clock = Clock()
    limits = RateLimits(60, None, clock=clock)
    assert [limits.reserve(1) for _ in range(4)] == [0.0, 1.0, 2.0, 3.0]
    clock.now += 10  # an idle spell is not saved up for a burst
    assert [limits.reserve(1) for _ in range(2)] == [0.0, 1.0]


def test_images_per_minute_count_each_requests_images() -> None:
    clock = Clock()
    limits = RateLimits(None, 120, clock=clock)  # one image every 0.5 s
    assert [limits.reserve(4) for _ in range(3)] == [0.0, 2.0, 4.0]
    assert limits.reserve(0) == 0.0  # a request for no image waits for no image budget


def test_the_tighter_limit_decides() -> None:
    clock = Clock()
    limits = RateLimits(60, 600, clock=clock)
    assert [limits.reserve(1) for _ in range(3)] == [0.0, 1.0, 2.0]  # requests bind
    limits = RateLimits(600, 60, clock=clock)
    assert [limits.reserve(2) for _ in range(3)] == [0.0, 2.0, 4.0]  # images bind


def test_a_pause_holds_what_is_booked_after_it() -> None:
    clock = Clock()
    limits = RateLimits(None, None, clock=clock)
    limits.pause(5)
    assert limits.paused_for() == 5.0
    assert limits.reserve(1) == 5.0
    limits.pause(2)  # a shorter pause does not shorten the longer one
    clock.now += 4
    assert limits.paused_for() == 1.0
    clock.now += 1
    assert (limits.paused_for(), limits.reserve(1)) == (0.0, 0.0)


def test_limits_change_how_images_are_got_not_which_rows_are_written() -> None:
    def identity(**fields: float) -> object:
        model = OpenAIImageGeneration(model="gpt-image-1", api_key="sk-x", **fields)
        return output_identity(ImageGeneration(image_generation_model=model).dump(), None)

    assert identity(requests_per_minute=30, images_per_minute=90) == identity()


def windows(times: list[float], width: float) -> int:
    """The most of `times` in any window of `width` seconds."""
    times = sorted(times)
    return max(sum(1 for other in times if start <= other < start + width) for start in times)


def test_rpm_spaces_the_requests_a_server_receives(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"p{i}\n" for i in range(5)))
    with image_server() as server:
        command = openai_command(source, tmp_path / "out", server, "--rpm", "120")
        status = main([*command, "--api-key-env", "HOME"])
        arrivals = [time for times in server.served.times.values() for time in times]
    assert status == 0
    assert len(arrivals) == 5
    # Two a second, evenly: 5 requests over 2 s, never more than 2 (3 with scheduling
    # jitter at a window's edge) in any second, where 16 in flight would send all at once.
    assert max(arrivals) - min(arrivals) >= 1.9
    assert windows(arrivals, 1.0) <= 3
    model = json.loads((tmp_path / "out" / "run.json").read_text())["task"]
    assert model["image_generation_model"]["requests_per_minute"] == 120


def test_a_429_holds_every_request_for_as_long_as_it_asks() -> None:
    with image_server() as server:
        server.faults["a"] = [Fault(status=429, headers={"Retry-After": "1"})]
        model = OpenAIImageGeneration(
            model="gpt-image-1", api_key="sk-x", base_url=f"{server.url}/v1", max_concurrency=1
        )
        model.load()
        try:
            answers = model.generate_batch(["a", "b"])
        finally:
            model.unload()
        times = dict(server.served.times)
    assert [len(answer) for answer in answers] == [1, 1]  # type: ignore[arg-type]
    [refused, retried] = times["a"]
    [held] = times["b"]
    # "b" waited out the pause "a" was asked for, though a slot was free meanwhile.
    assert held - refused >= 0.95
    assert retried - refused >= 0.95


def test_the_window_the_headers_announce_is_used_up_then_waited_out() -> None:
    clock = Clock()
    limits = RateLimits(None, None, clock=clock)
    limits.observe(2, 1.5)
    limits.observe(3, 1.5)  # an answer to an earlier request: the lowest count holds
    assert [limits.reserve(1) for _ in range(3)] == [0.0, 0.0, 1.5]
    assert limits.reserve(1) == 0.0  # past the window, until an answer says more
    clock.now += 2
    limits.observe(0, 0.5)
    assert limits.reserve(1) == 0.5


@pytest.mark.parametrize(
    ("headers", "window", "reset"),
    [
        ({"x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "6m0s"}, 4, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"}, 0, 0.02),
        ({"X-RateLimit-Remaining-Tokens": "0", "x-ratelimit-reset-tokens": "1m2.5s"}, None, 62.5),
        ({"x-ratelimit-remaining-images": "0", "x-ratelimit-reset-images": "3"}, None, 3.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}, None, None),
        ({}, None, None),
    ],
)
def test_rate_limit_headers_are_read_as_openai_sends_them(
    headers: dict[str, str], window: int | None, reset: float | None
) -> None:
    read = request_window(headers)
    assert (None if read is None else read.left) == window
    assert limit_reset(headers) == reset


def test_a_server_at_its_limit_gets_no_429_storm(tmp_path: Path) -> None:
    prompts = [f"p{i}" for i in range(12)]
    with image_server() as server:
        server.request_window = (4, 1.0)
        model = OpenAIImageGeneration(
            model="gpt-image-1",
            api_key="sk-x",
            base_url=f"{server.url}/v1",
            max_concurrency=2,
            max_retries=0,
        )
        model.load()
        try:
            answers = model.generate_batch(prompts)
        finally:
            model.unload()
        statuses = list(server.served.statuses)
        arrivals = sorted(time for times in server.served.times.values() for time in times)
    # Every image arrives at the first attempt: each window's fourth answer says none is
    # left, and the next request waits for the window's end instead of meeting a 429.
    assert [type(answer).__name__ for answer in answers] == ["list"] * 12
    assert statuses == [200] * 12
    assert arrivals[-1] - arrivals[0] >= 1.9  # three windows of four, not one burst


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpm", "0"], "--rpm must be a positive number per minute, got 0.0"),
        (["--ipm", "nan"], "--ipm must be a positive number per minute, got nan"),
        (["--ipm", "-5"], "--ipm must be a positive number per minute, got -5.0"),
    ],
)
def test_bad_rate_flags_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a\n")
    command = ["generate", str(source), "-o", str(tmp_path / "o"), "--model", "openai:gpt-image-1"]
    status = main([*command, "--api-key-env", "HOME", *args])
    assert status == 1
    assert capsys.readouterr().err == f"imagetask: error: {message}\n"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("placeholder", "--rpm: the placeholder model sends no requests"),
        (
            "openai-batch:gpt-image-1",
            "OpenAIBatchImageGeneration: `requests_per_minute` does not apply: the Batch API "
            "runs a job's requests at OpenAI, at no rate of ours",
        ),
    ],
)
def test_a_model_without_request_rates_refuses_rpm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, message: str
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a\n")
    extra = [] if model == "placeholder" else ["--api-key-env", "HOME"]
    command = ["generate", str(source), "-o", str(tmp_path / "o"), "--model", model]
    status = main([*command, "--rpm", "60", *extra])
    assert status == 1
    assert capsys.readouterr().err == f"imagetask: error: {message}\n"
