"""Task fields, validation, runtime parameters and dump/load (SPEC §2, §6.9)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from conftest import EchoModel

from imagetask import ConfigError, ImageGeneration, ImageGenerationModel, Secret


def test_defaults_match_distilabel() -> None:
    task = ImageGeneration(image_generation_model=EchoModel())
    assert task.name == "image_generation_0"
    assert (task.input_batch_size, task.num_generations, task.group_generations) == (50, 1, False)
    assert (task.add_raw_output, task.add_raw_input) == (True, True)
    assert (task.input_mappings, task.output_mappings) == ({}, {})
    assert (task.save_artifacts, task.image_format, task.output_dir) == (False, None, ".")
    assert task.llm is task.image_generation_model
    assert task.inputs == ["prompt"] and task.outputs == ["image", "image_path", "model_name"]


def test_auto_name_is_snake_case_of_the_class() -> None:
    class HDImageGeneration(ImageGeneration):
        pass

    assert HDImageGeneration(image_generation_model=EchoModel()).name == "hd_image_generation_0"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"num_generations": 0},
            "ImageGeneration: bad field `num_generations` = 0: Expected `int` >= 1",
        ),
        (
            {"num_generations": -2},
            "ImageGeneration: bad field `num_generations` = -2: Expected `int` >= 1",
        ),
        (
            {"input_batch_size": 0},
            "ImageGeneration: bad field `input_batch_size` = 0: Expected `int` >= 1",
        ),
        (
            {"num_generations": "2"},
            "ImageGeneration: bad field `num_generations` = '2': Expected `int`, got `str`",
        ),
        (
            {"group_generations": 1},
            "ImageGeneration: bad field `group_generations` = 1: Expected `bool`, got `int`",
        ),
        (
            {"colour": "red"},
            "ImageGeneration: bad field `colour`: Object contains unknown field `colour`",
        ),
        (
            {"image_format": "jpg"},
            "ImageGeneration: bad field `image_format` = 'jpg': expected one of "
            "['BMP', 'GIF', 'JPEG', 'PNG', 'TIFF', 'WEBP']",
        ),
        (
            {"name": "has space"},
            "ImageGeneration: bad field `name` = 'has space': must be 1 to 100 characters among "
            "A-Z a-z 0-9 _ - (it names metadata keys and the artifacts folder)",
        ),
        (
            {"input_mappings": {"text": "prompt"}},
            "ImageGeneration: bad field `input_mappings`: 'text' is not "
            "one of the task's inputs ['prompt']",
        ),
        (
            {"output_mappings": {"picture": "x"}},
            "ImageGeneration: bad field `output_mappings`: 'picture' is not "
            "one of the task's outputs ['image', 'image_path', 'model_name']",
        ),
        (
            {"on_invalid_row": "skip"},
            "ImageGeneration: bad field `on_invalid_row` = 'skip': Invalid enum value 'skip'",
        ),
    ],
)
def test_bad_fields_name_the_field_and_value(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), **fields)
    assert str(info.value) == message


def test_missing_model_and_wrong_model() -> None:
    with pytest.raises(ConfigError, match="Object missing required field `image_generation_model`"):
        ImageGeneration()
    with pytest.raises(
        ConfigError,
        match=r"bad field `image_generation_model` = str: expected an image generation model",
    ):
        ImageGeneration(image_generation_model="dall-e-3")


def test_passing_llm_says_to_pass_image_generation_model() -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(llm=EchoModel())
    assert str(info.value) == (
        "ImageGeneration does not take `llm`: pass the image model as `image_generation_model`"
    )


def test_image_format_is_normalised() -> None:
    assert (
        ImageGeneration(image_generation_model=EchoModel(), image_format="png").image_format
        == "PNG"
    )


def test_runtime_parameters() -> None:
    task = ImageGeneration(image_generation_model=EchoModel())
    assert task.runtime_parameters_names == {
        "image_generation_model": {"generation_kwargs": True},
        "input_batch_size": True,
        "num_generations": True,
        "add_raw_output": True,
        "add_raw_input": True,
        "output_dir": True,
    }
    task.set_runtime_parameters(
        {
            "num_generations": 3,
            "add_raw_input": False,
            "image_generation_model": {"generation_kwargs": {"seed": 1}},
        }
    )
    assert (task.num_generations, task.add_raw_input) == (3, False)
    assert task.image_generation_model.generation_kwargs == {"seed": 1}
    assert len(task.process_batch([{"prompt": "x"}])) == 3
    with pytest.raises(ConfigError, match=r"bad field `num_generations` = 0: Expected `int` >= 1"):
        task.set_runtime_parameters({"num_generations": 0})
    assert task.num_generations == 3
    with pytest.raises(ConfigError, match="`group_generations` is not a runtime parameter"):
        task.set_runtime_parameters({"group_generations": True})


class KeyedModel(ImageGenerationModel):
    model: str = "m"
    api_key: Secret[str | None] = None

    @property
    def model_name(self) -> str:
        return self.model

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        return []


def test_dump_round_trips_through_json_without_secrets() -> None:
    task = ImageGeneration(
        image_generation_model=KeyedModel(model="x", api_key="sk-very-secret"),
        num_generations=2,
        output_mappings={"image": "picture"},
    )
    data = task.dump()
    text = msgspec.json.encode(data).decode()
    assert "sk-very-secret" not in text and "sk-very-secret" not in repr(task)
    assert "llm" not in data
    assert data["type_info"] == {"module": "imagetask.task", "name": "ImageGeneration"}
    loaded = ImageGeneration.from_dict(msgspec.json.decode(text))
    assert loaded.dump() == data
    assert isinstance(loaded.image_generation_model, KeyedModel)
    assert loaded.image_generation_model.model_name == "x"
    assert loaded.image_generation_model.api_key is None


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        KeyedModel(api_key=12345678)
    assert "12345678" not in str(info.value)
    assert str(info.value) == "KeyedModel: bad field `api_key`: Expected `str | null`, got `int`"
