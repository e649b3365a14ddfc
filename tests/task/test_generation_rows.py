"""Exact output rows of ImageGeneration for every flag combination (SPEC §3, §4)."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest

from imagetask import ImageGeneration
from imagetask.testing import ScriptedModel
from tests.support.models import EchoModel
from tests.support.payloads import b64, ref

NAME = "image_generation_0"
META = "distilabel_metadata"


def test_default_row_equals_distilabel_except_the_image_reference() -> None:
    # distilabel 1.5.3's ImageGeneration gives, for this answer:
    # {"prompt": "a cat", "image": IMG, "model_name": "scripted", "distilabel_metadata":
    #  {"raw_output_image_generation_0": {"images": [IMG], "seed": 7},
    #   "raw_input_image_generation_0": "a cat"}}
    img = b64(b"cat-bytes")
    model = ScriptedModel([[{"images": [img], "seed": 7}]])
    task = ImageGeneration(image_generation_model=model)
    (row,) = task.process_batch([{"prompt": "a cat"}])
    assert row == {
        "prompt": "a cat",
        "image": img,
        "model_name": "scripted",
        META: {
            f"raw_output_{NAME}": {"images": [ref(b"cat-bytes")], "seed": 7},
            f"raw_input_{NAME}": "a cat",
        },
    }
    assert list(row) == ["prompt", "image", "model_name", META]


def test_inline_raw_images_matches_distilabel_byte_for_byte() -> None:
    img = b64(b"cat-bytes")
    model = ScriptedModel([[{"images": [img], "seed": 7}]])
    task = ImageGeneration(image_generation_model=model, inline_raw_images=True)
    assert task.process_batch([{"prompt": "a cat"}]) == [
        {
            "prompt": "a cat",
            "image": img,
            "model_name": "scripted",
            META: {
                f"raw_output_{NAME}": {"images": [img], "seed": 7},
                f"raw_input_{NAME}": "a cat",
            },
        }
    ]


def expected_meta(
    prompt: str, k: int, raw_output: bool, raw_input: bool, inline: bool
) -> dict[str, Any]:
    data = f"{prompt}#{k}".encode()
    meta: dict[str, Any] = {}
    if raw_output:
        meta[f"raw_output_{NAME}"] = {"images": [b64(data) if inline else ref(data)]}
    if raw_input:
        meta[f"raw_input_{NAME}"] = prompt
    return meta


@pytest.mark.parametrize(
    ("n", "group", "raw_output", "raw_input", "as_bytes", "inline"),
    list(
        itertools.product(
            [1, 3], [False, True], [False, True], [False, True], [False, True], [False, True]
        )
    ),
)
def test_every_flag_combination(
    n: int, group: bool, raw_output: bool, raw_input: bool, as_bytes: bool, inline: bool
) -> None:
    task = ImageGeneration(
        image_generation_model=EchoModel(),
        num_generations=n,
        group_generations=group,
        add_raw_output=raw_output,
        add_raw_input=raw_input,
        images_as_bytes=as_bytes,
        inline_raw_images=inline,
    )
    inputs = [{"prompt": "p0", "id": 0}, {"prompt": "p1", "id": 1}]
    rows = task.process_batch(inputs)

    def image(prompt: str, k: int) -> Any:
        data = f"{prompt}#{k}".encode()
        return data if as_bytes else b64(data)

    if group:
        assert rows == [
            {
                **r,
                "image": [image(r["prompt"], k) for k in range(n)],
                "model_name": "echo",
                META: [
                    expected_meta(r["prompt"], k, raw_output, raw_input, inline) for k in range(n)
                ],
            }
            for r in inputs
        ]
    else:
        assert rows == [
            {
                **r,
                "image": image(r["prompt"], k),
                "model_name": "echo",
                META: expected_meta(r["prompt"], k, raw_output, raw_input, inline),
            }
            for r in inputs
            for k in range(n)
        ]


def test_one_dict_holding_all_images_keeps_every_image_in_order() -> None:
    imgs = [b64(bytes([i]) * 5) for i in range(4)]
    model = ScriptedModel([[{"images": imgs, "revised_prompt": "rp", "statistics": {"ms": 5}}]])
    task = ImageGeneration(image_generation_model=model, num_generations=4)
    rows = task.process_batch([{"prompt": "x"}])
    assert [row["image"] for row in rows] == imgs
    assert [row[META][f"raw_output_{NAME}"] for row in rows] == [
        {"images": [ref(bytes([i]) * 5)], "revised_prompt": "rp"} for i in range(4)
    ]
    assert all(row[META][f"statistics_{NAME}"] == {"ms": 5} for row in rows)


def test_one_dict_per_generation_is_not_truncated() -> None:
    model = ScriptedModel(
        [[{"images": [b64(b"a")], "seed": 1}, {"images": [b64(b"b")], "seed": 2}]]
    )
    task = ImageGeneration(image_generation_model=model, num_generations=2)
    rows = task.process_batch([{"prompt": "x"}])
    assert [row["image"] for row in rows] == [b64(b"a"), b64(b"b")]
    assert [row[META][f"raw_output_{NAME}"] for row in rows] == [
        {"images": [ref(b"a")], "seed": 1},
        {"images": [ref(b"b")], "seed": 2},
    ]


def test_bytes_payloads_become_base64_text_with_the_same_reference() -> None:
    model = ScriptedModel([[{"images": [b"\x89PNGraw"]}]])
    task = ImageGeneration(image_generation_model=model)
    (row,) = task.process_batch([{"prompt": "x"}])
    assert row["image"] == b64(b"\x89PNGraw")
    assert row[META][f"raw_output_{NAME}"] == {"images": [ref(b"\x89PNGraw")]}


def test_upstream_metadata_is_merged_not_dropped() -> None:
    task = ImageGeneration(image_generation_model=EchoModel())
    (row,) = task.process_batch([{"prompt": "x", META: {"raw_output_previous": "kept"}}])
    assert row[META] == {"raw_output_previous": "kept", **expected_meta("x", 0, True, True, False)}


def test_input_columns_that_collide_with_outputs_are_overwritten_in_place() -> None:
    task = ImageGeneration(image_generation_model=EchoModel())
    (row,) = task.process_batch([{"image": "old", "prompt": "x", "model_name": "old"}])
    assert list(row) == ["image", "prompt", "model_name", META]
    assert row["image"] == b64(b"x#0") and row["model_name"] == "echo"


def test_mappings_and_metadata_column() -> None:
    task = ImageGeneration(
        image_generation_model=EchoModel(),
        input_mappings={"prompt": "text"},
        output_mappings={"image": "picture", "model_name": "generator"},
        metadata_column="meta",
    )
    assert task.process_batch([{"text": "x"}]) == [
        {
            "text": "x",
            "picture": b64(b"x#0"),
            "generator": "echo",
            "meta": expected_meta("x", 0, True, True, False),
        }
    ]


def test_format_input_is_called_once_per_row_and_its_value_is_recorded() -> None:
    calls: list[dict[str, Any]] = []

    class Shouting(ImageGeneration):
        def format_input(self, input: dict[str, Any]) -> str:
            calls.append(input)
            return input["prompt"].upper() + f" #{len(calls)}"

    model = ScriptedModel(lambda prompt, n: [{"images": [b64(prompt.encode())]}])
    task = Shouting(image_generation_model=model, input_mappings={"prompt": "text"})
    rows = task.process_batch([{"text": "a"}, {"text": "b"}])
    assert calls == [{"prompt": "a"}, {"prompt": "b"}]
    assert model.calls[0].prompts == ["A #1", "B #2"]
    assert [row[META]["raw_input_shouting_0"] for row in rows] == ["A #1", "B #2"]
    assert [row["text"] for row in rows] == ["a", "b"]


def test_format_output_override_is_called_per_generation() -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    class Captioned(ImageGeneration):
        def format_output(
            self, output: dict[str, Any], input: dict[str, Any] | None = None
        ) -> dict[str, Any]:
            seen.append((output, input))
            return {"image": output["images"][0][::-1], "unused": 1}

    img_a, img_b = b64(b"aa"), b64(b"bb")
    model = ScriptedModel([[{"images": [img_a, img_b], "seed": 3}]])
    task = Captioned(
        image_generation_model=model, num_generations=2, output_mappings={"image": "pic"}
    )
    rows = task.process_batch([{"prompt": "x"}])
    assert seen == [
        ({"images": [img_a], "seed": 3}, {"prompt": "x"}),
        ({"images": [img_b], "seed": 3}, {"prompt": "x"}),
    ]
    assert [row["pic"] for row in rows] == [img_a[::-1], img_b[::-1]]
    assert all("unused" not in row for row in rows)


def test_process_yields_one_batch_like_distilabel() -> None:
    task = ImageGeneration(image_generation_model=EchoModel())
    batches = list(task.process([{"prompt": "x"}, {"prompt": "y"}]))
    assert len(batches) == 1 and [row["image"] for row in batches[0]] == [b64(b"x#0"), b64(b"y#0")]


def test_generation_kwargs_reach_the_model() -> None:
    class Recording(EchoModel):
        seen: ClassVar[list[dict[str, Any]]] = []

        def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
            Recording.seen.append(kwargs)
            return super().generate(inputs, num_generations)

    task = ImageGeneration(image_generation_model=Recording(generation_kwargs={"size": "64x64"}))
    task.process_batch([{"prompt": "x"}])
    task.set_runtime_parameters({"image_generation_model": {"generation_kwargs": {"size": "8x8"}}})
    task.process_batch([{"prompt": "x"}])
    assert Recording.seen == [{"size": "64x64"}, {"size": "8x8"}]
