"""What an OpenAI image costs: priced from the dated table, by token from the `usage` the
answers carry (GPT image models) or per image by size and quality (DALL-E), each image's
share recorded in its statistics as `cost_usd`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagetask import ImageGeneration
from imagetask.cli import main
from imagetask.errors import ConfigError, RunStopped
from imagetask.io._jsonl import OutputFormat
from imagetask.io._run_folder import RunFolder
from imagetask.models import (
    InferenceEndpointsImageGeneration,
    OpenAIImageGeneration,
    PlaceholderImageGeneration,
)
from imagetask.models._prices import (
    PRICES_DATE,
    PRICES_SOURCE,
    most_request_cost,
    request_cost,
)
from imagetask.run._record import dataset_card
from tests.support.servers import ImageServer, image_server

KEY = "sk-test-cost-0123456789"
STATS = "statistics_image_generation_0"


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server(key=KEY) as running:
        yield running


def costs(server: ImageServer, model: str, num_generations: int = 1, **kwargs: Any) -> list[Any]:
    backend = OpenAIImageGeneration(
        model=model, base_url=f"{server.url}/v1", api_key=KEY, generation_kwargs=kwargs
    )
    task = ImageGeneration(image_generation_model=backend, num_generations=num_generations)
    rows = task.process_batch([{"prompt": "a small red cat"}])
    task.unload()
    return [row["distilabel_metadata"][STATS].get("cost_usd") for row in rows]


def test_the_price_table_names_its_date_and_source() -> None:
    assert PRICES_DATE == "2025-10-06"
    assert PRICES_SOURCE.startswith("https://platform.openai.com/docs/pricing")


@pytest.mark.parametrize(
    ("model", "usage", "images", "kwargs", "cost"),
    [
        (
            "gpt-image-1",
            {"input_tokens": 10, "output_tokens": 1056},
            1,
            {},
            (10 * 5 + 1056 * 40) / 1e6,
        ),
        (
            "gpt-image-1",
            {
                "input_tokens": 50,
                "output_tokens": 4160,
                "input_tokens_details": {"text_tokens": 20, "image_tokens": 30},
            },
            1,
            {},
            (20 * 5 + 30 * 10 + 4160 * 40) / 1e6,
        ),
        (
            "gpt-image-1-mini",
            {"input_tokens": 10, "output_tokens": 272},
            1,
            {},
            (10 * 2 + 272 * 8) / 1e6,
        ),
        ("gpt-image-1", {"total_tokens": 5}, 1, {}, None),
        ("dall-e-3", {}, 1, {}, 0.040),
        ("dall-e-3", {}, 1, {"size": "1792x1024", "quality": "hd"}, 0.120),
        ("dall-e-3", {}, 1, {"size": "512x512"}, None),
        ("dall-e-2", {}, 3, {"size": "256x256"}, 3 * 0.016),
        ("stable-diffusion", {"input_tokens": 1, "output_tokens": 1}, 1, {}, None),
    ],
)
def test_request_cost(
    model: str, usage: dict[str, Any], images: int, kwargs: dict[str, Any], cost: float | None
) -> None:
    assert request_cost(model, usage, images, kwargs) == cost


@pytest.mark.parametrize(
    ("model", "prompt", "images", "kwargs", "edit", "most"),
    [
        # The listed price of a high-quality square image is above its 4160 tokens.
        ("gpt-image-1", "a cat", 1, {"quality": "high", "size": "1024x1024"}, False, 0.167 + 25e-6),
        ("gpt-image-1", "a cat", 3, {"quality": "low", "size": "1536x1024"}, False, 0.048 + 25e-6),
        # Quality and size auto (or unset): the dearest image, a high portrait one, listed
        # at $0.25 (its 6240 tokens cost $0.2496); "é" is 2 bytes, so at most 2 tokens.
        ("gpt-image-1", "é", 2, {}, False, 2 * 0.25 + 2 * 5 / 1e6),
        ("gpt-image-1-mini", "", 1, {"quality": "medium", "size": "1024x1536"}, False, 0.015),
        ("gpt-image-1-mini", "", 1, {"quality": "auto"}, False, 0.052),
        ("gpt-image-1", "a cat", 1, {"size": "2048x2048"}, False, None),
        ("gpt-image-1", "a cat", 1, {"quality": "ultra"}, False, None),
        ("gpt-image-1", "a cat", 1, {}, True, None),  # image input tokens: known only after
        ("dall-e-3", "a cat", 1, {"quality": "hd"}, False, 0.08),
        ("dall-e-2", "a cat", 4, {"size": "512x512"}, True, 4 * 0.018),
        ("my-local-model", "a cat", 1, {}, False, None),
    ],
)
def test_the_most_a_request_can_cost(
    model: str, prompt: str, images: int, kwargs: dict[str, Any], edit: bool, most: float | None
) -> None:
    found = most_request_cost(model, prompt, images, kwargs, edit=edit)
    assert found == (None if most is None else pytest.approx(most, rel=1e-12))


def test_a_token_priced_image_costs_its_share_of_the_usage(server: ImageServer) -> None:
    # The loopback server answers 1 input token per word and 100 output tokens per image.
    assert (
        costs(server, "gpt-image-1", num_generations=2) == [(4 * 5.00 + 200 * 40.00) / 1e6 / 2] * 2
    )
    server.answer_fields = {
        "usage": {
            "input_tokens": 40,
            "output_tokens": 272,
            "total_tokens": 312,
            "input_tokens_details": {"text_tokens": 4, "image_tokens": 36},
        }
    }
    assert costs(server, "gpt-image-1-mini") == [(4 * 2.00 + 36 * 2.50 + 272 * 8.00) / 1e6]


def test_a_per_image_model_is_priced_by_size_and_quality(server: ImageServer) -> None:
    assert (
        costs(server, "dall-e-3", num_generations=2, size="1024x1792", quality="hd") == [0.12] * 2
    )
    assert costs(server, "dall-e-2", size="512x512") == [0.018]
    assert costs(server, "dall-e-2", size="64x64") == [None]


def test_a_model_not_in_the_table_has_no_cost(server: ImageServer) -> None:
    assert costs(server, "my-local-model") == [None]


# A run's total: summed from its images' cost_usd, checkpointed, carried over on resume.


def word_cost(prompt: str, images: int = 1) -> float:
    """What the loopback server's usage costs on gpt-image-1 (1 input token per word, 100
    output tokens per image)."""
    return (len(prompt.split()) * 5.00 + 100 * images * 40.00) / 1e6


def openai_task(server: ImageServer, model: str = "gpt-image-1", **fields: Any) -> ImageGeneration:
    backend = OpenAIImageGeneration(model=model, base_url=f"{server.url}/v1", api_key=KEY, **fields)
    return ImageGeneration(image_generation_model=backend, num_generations=2, input_batch_size=3)


PROMPTS = [{"prompt": "a red cat " * (i % 3 + 1)} for i in range(10)]


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_run_records_its_estimated_cost(
    server: ImageServer, tmp_path: Path, format: OutputFormat
) -> None:
    out = tmp_path / "out"
    summary = openai_task(server).run(PROMPTS, out, format=format)
    # One request of n=2 per row: each image costs half of it, and the run all of them.
    total = sum(word_cost(row["prompt"], images=2) for row in PROMPTS)
    assert summary.cost_usd == pytest.approx(total, rel=1e-12)
    assert summary.priced_images == 20
    record = json.loads((out / "run.json").read_text())
    assert (record["cost_usd"], record["priced_images"]) == (summary.cost_usd, 20)
    saved = json.loads((out / "checkpoint.json").read_text())
    assert (saved["cost_usd"], saved["priced_images"]) == (summary.cost_usd, 20)
    assert summary.cost_text() == f"${total:,.4f}"
    card = dataset_card(openai_task(server), RunFolder(out).checkpoint(), out)  # type: ignore[arg-type]
    assert f"Estimated cost of the images, from the backend's prices: ${total:,.4f}.\n" in card
    if format == "parquet":
        assert f"from the backend's prices: ${total:,.4f}." in (out / "README.md").read_text()


def test_a_resumed_run_carries_its_cost_over(server: ImageServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = openai_task(server).run(PROMPTS, out, limit=4)
    assert first.cost_usd == pytest.approx(
        sum(word_cost(row["prompt"], 2) for row in PROMPTS[:4]), rel=1e-12
    )
    summary = openai_task(server).run(PROMPTS, out, resume=True)
    assert summary.resumed_from == 4
    assert summary.cost_usd == pytest.approx(
        sum(word_cost(row["prompt"], 2) for row in PROMPTS), rel=1e-12
    )
    assert summary.priced_images == 20


def test_a_checkpoint_without_a_cost_loads_as_unknown(server: ImageServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    openai_task(server).run(PROMPTS, out, limit=4)
    saved = json.loads((out / "checkpoint.json").read_text())
    del saved["cost_usd"], saved["priced_images"]  # as written before costs were recorded
    (out / "checkpoint.json").write_text(json.dumps(saved))
    summary = openai_task(server).run(PROMPTS, out, resume=True)
    rest = sum(word_cost(row["prompt"], 2) for row in PROMPTS[4:])
    assert (summary.cost_usd, summary.priced_images) == (pytest.approx(rest, rel=1e-12), 12)
    assert summary.cost_text() == f"${rest:,.4f} (for the 12 of 20 images priced)"


def test_a_model_without_prices_has_an_unknown_cost(tmp_path: Path) -> None:
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="8x8"))
    out = tmp_path / "out"
    summary = task.run(PROMPTS[:2], out)
    assert (summary.cost_usd, summary.priced_images, summary.cost_text()) == (None, 0, "unknown")
    assert json.loads((out / "run.json").read_text())["cost_usd"] is None
    card = dataset_card(task, RunFolder(out).checkpoint(), out)  # type: ignore[arg-type]
    assert "from the backend's prices: unknown (the backend has no prices).\n" in card


def test_the_final_line_shows_the_cost(
    server: ImageServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in PROMPTS[:3]))
    out = tmp_path / "out"
    args = ["generate", "--model", "openai:gpt-image-1", "--base-url", f"{server.url}/v1"]
    args += [str(tmp_path / "in.jsonl"), "-o", str(out), "--quiet"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", KEY)
        assert main(args) == 0
    total = sum(word_cost(row["prompt"]) for row in PROMPTS[:3])
    assert capsys.readouterr().out.startswith(
        f"imagetask: 3 rows in, 3 rows out (3 images, 0 failed, estimated cost ${total:,.4f}) ->"
    )


# price_per_image: every image made costs that, over the table; the only price elsewhere.


def test_a_price_per_image_overrides_the_table(server: ImageServer) -> None:
    backend = OpenAIImageGeneration(
        model="gpt-image-1", base_url=f"{server.url}/v1", api_key=KEY, price_per_image=0.05
    )
    task = ImageGeneration(image_generation_model=backend, num_generations=3)
    rows = task.process_batch([{"prompt": "a small red cat"}])
    task.unload()
    assert [row["distilabel_metadata"][STATS]["cost_usd"] for row in rows] == [0.05] * 3


def test_a_price_per_image_prices_a_model_the_table_does_not_know(
    server: ImageServer, tmp_path: Path
) -> None:
    task = openai_task(server, model="my-local-model", price_per_image=0.25)
    summary = task.run(PROMPTS[:4], tmp_path / "out")
    assert (summary.cost_usd, summary.priced_images) == (8 * 0.25, 8)


def test_a_hugging_face_model_is_priced_per_image(server: ImageServer, tmp_path: Path) -> None:
    backend = InferenceEndpointsImageGeneration(
        base_url=f"{server.url}/hf", seed=1, price_per_image=0.003
    )
    task = ImageGeneration(image_generation_model=backend, num_generations=2)
    summary = task.run(PROMPTS[:5], tmp_path / "out")
    assert (summary.cost_usd, summary.priced_images) == (pytest.approx(10 * 0.003), 10)
    rows = [json.loads(line) for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert {row["distilabel_metadata"][STATS]["cost_usd"] for row in rows} == {0.003}
    unpriced = InferenceEndpointsImageGeneration(base_url=f"{server.url}/hf", seed=1)
    summary = ImageGeneration(image_generation_model=unpriced).run(PROMPTS[:2], tmp_path / "o2")
    assert (summary.cost_usd, summary.priced_images) == (None, 0)


def test_a_run_resumes_with_another_price_per_image(server: ImageServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    openai_task(server, model="m", price_per_image=0.5).run(PROMPTS, out, limit=3)
    summary = openai_task(server, model="m", price_per_image=0.25).run(PROMPTS, out, resume=True)
    assert summary.cost_usd == 6 * 0.5 + 14 * 0.25


def test_the_price_per_image_flag_reaches_the_model(
    server: ImageServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "a cat"}\n{"prompt": "a dog"}\n')
    out = tmp_path / "out"
    args = ["generate", str(tmp_path / "in.jsonl"), "-o", str(out), "--quiet"]
    args += ["--model", "openai:my-model", "--base-url", f"{server.url}/v1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", KEY)
        assert main([*args, "--price-per-image", "0.125"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["task"]["image_generation_model"]["price_per_image"] == 0.125
    assert (record["cost_usd"], record["priced_images"]) == (0.25, 2)
    assert "estimated cost $0.2500)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("model", "value", "message"),
    [
        (
            "openai:gpt-image-1",
            "-0.5",
            "--price-per-image must be a number of US dollars >= 0, got -0.5",
        ),
        ("hf:a/b", "nan", "--price-per-image must be a number of US dollars >= 0, got nan"),
        (
            "openai:gpt-image-1",
            "inf",
            "--price-per-image must be a number of US dollars >= 0, got inf",
        ),
        ("placeholder", "0.1", "--price-per-image: the placeholder model sends no requests"),
    ],
)
def test_bad_price_per_image_values_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, value: str, message: str
) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "a cat"}\n')
    args = ["generate", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out"), "--model", model]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", KEY)
        assert main([*args, "--price-per-image", value]) == 1
    assert capsys.readouterr().err == f"imagetask: error: {message}\n"
    assert not (tmp_path / "out" / "checkpoint.json").exists()


# max_cost: each request reserves its most before it is sent; none passes the budget.


def budget_task(server: ImageServer, **fields: Any) -> ImageGeneration:
    backend = OpenAIImageGeneration(
        model="my-model", base_url=f"{server.url}/v1", api_key=KEY, max_concurrency=16, **fields
    )
    return ImageGeneration(image_generation_model=backend, input_batch_size=4)


ROWS = [{"prompt": f"prompt {i}"} for i in range(100)]


def test_no_request_passes_the_budget_with_16_in_flight(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with image_server(key=KEY, latency=0.05) as server:
        task = budget_task(server, price_per_image=0.01)
        with pytest.raises(RunStopped) as caught:
            task.run(ROWS, out, batches_in_flight=8, max_cost=0.255)
        # Each request reserves $0.01: the 26th would pass $0.255 whatever is answered.
        assert len(server.served.requests) == 25
        assert server.served.peak > 4
    summary = RunFolder(out).summary().report
    assert summary["ended"] == "budget"
    rows = summary["rows_in"]
    assert rows % 4 == 0 and rows < 25
    assert summary["cost_usd"] == pytest.approx(rows * 0.01) and summary["cost_usd"] <= 0.255
    where = f"input row {rows}"
    assert str(caught.value) == (
        f"{where}: the next request (at most $0.0100) would take the estimated cost past "
        f"max_cost $0.2550 ($0.2500 spent); the run stopped before this batch, after "
        f"{rows} input rows ({rows} images, 0 failed), at an estimated cost of "
        f"${rows * 0.01:.4f}: to go on, run again with resume and a larger max_cost "
        "(--resume --max-cost USD)"
    )


def test_a_resumed_run_counts_what_it_spent_before(server: ImageServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    task = budget_task(server, price_per_image=0.01)
    with pytest.raises(RunStopped):
        task.run(ROWS[:20], out, batches_in_flight=1, max_cost=0.085)
    first = RunFolder(out).summary().report["rows_in"]
    assert first == 8  # one batch at a time: the third met the budget at its 1st request
    server.served.requests.clear()
    with pytest.raises(RunStopped):
        task.run(ROWS[:20], out, resume=True, batches_in_flight=1, max_cost=0.085)
    assert len(server.served.requests) == 0  # $0.08 recorded: no room for $0.01 more
    summary = task.run(ROWS[:20], out, resume=True, max_cost=0.2)
    assert (summary.rows_in, summary.cost_usd, summary.ended) == (
        20,
        pytest.approx(0.2),
        "complete",
    )
    assert len(server.served.requests) == 12


def test_a_token_priced_request_reserves_its_most_and_counts_its_usage(
    server: ImageServer, tmp_path: Path
) -> None:
    backend = OpenAIImageGeneration(
        model="gpt-image-1",
        base_url=f"{server.url}/v1",
        api_key=KEY,
        generation_kwargs={"quality": "low", "size": "256x256"},
    )
    task = ImageGeneration(image_generation_model=backend, input_batch_size=1)
    with pytest.raises(ConfigError, match="has no price to bound its requests' cost with"):
        task.run(ROWS, tmp_path / "o1", max_cost=1.0)
    backend.generation_kwargs = {"quality": "low", "size": "1024x1024"}
    # Each request reserves $0.011 and the prompt's 8 bytes; each costs 2 words and 100
    # output tokens: $0.00401. After k requests, the next fits while
    # k * 0.00401 + 0.01104 <= 0.03, so 5 are sent.
    with pytest.raises(RunStopped):
        task.run(ROWS, tmp_path / "o2", max_cost=0.03)
    assert len(server.served.requests) == 5
    report = RunFolder(tmp_path / "o2").summary().report
    # The budget stops the sixth row's request; of the five rows sent, those answered
    # before the stop are written (how many depends on when their answers came).
    assert report["rows_in"] <= 5
    assert report["cost_usd"] == pytest.approx(report["rows_in"] * 0.00401)


def test_a_model_without_prices_cannot_keep_to_a_budget(tmp_path: Path) -> None:
    placeholder = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="8x8"))
    with pytest.raises(ConfigError, match="PlaceholderImageGeneration does not price its requests"):
        placeholder.run(ROWS, tmp_path / "a", max_cost=1.0)
    hf = InferenceEndpointsImageGeneration(base_url="http://127.0.0.1:9/hf")
    with pytest.raises(ConfigError, match=r"InferenceEndpointsImageGeneration \(.*\) has no price"):
        ImageGeneration(image_generation_model=hf).run(ROWS, tmp_path / "b", max_cost=1.0)
    assert not (tmp_path / "a" / "checkpoint.json").exists()
    assert not (tmp_path / "b" / "checkpoint.json").exists()


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "1", True])
def test_a_bad_max_cost_is_refused(tmp_path: Path, value: Any) -> None:
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="8x8"))
    with pytest.raises(ConfigError) as caught:
        task.run(ROWS, tmp_path, max_cost=value)
    assert str(caught.value) == (
        f"run: max_cost={value!r}: expected None or a number of US dollars >= 0"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-0.5", "--max-cost must be a number of US dollars >= 0, got -0.5"),
        ("nan", "--max-cost must be a number of US dollars >= 0, got nan"),
    ],
)
def test_bad_max_cost_flags_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "a cat"}\n')
    args = ["generate", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out")]
    assert main([*args, "--max-cost", value]) == 1
    assert capsys.readouterr().err == f"imagetask: error: {message}\n"


def test_the_max_cost_flag_stops_the_run_in_one_line(
    server: ImageServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS[:6]))
    out = tmp_path / "out"
    args = ["generate", str(tmp_path / "in.jsonl"), "-o", str(out), "--quiet", "--batch-size", "2"]
    args += ["--model", "openai:m", "--base-url", f"{server.url}/v1", "--price-per-image", "1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", KEY)
        assert main([*args, "--max-cost", "3"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert err.startswith(f"imagetask: error: {tmp_path / 'in.jsonl'} line ")
        assert ": the next request (at most $1.0000) would take the estimated cost past " in err
        assert "(--resume --max-cost USD)\n" in err
        assert main([*args, "--resume", "--max-cost", "6"]) == 0
    assert json.loads((out / "run.json").read_text())["cost_usd"] == 6
