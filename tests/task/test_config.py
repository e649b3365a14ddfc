"""Task fields, validation, runtime parameters and dump/load (SPEC §2, §6.9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from imagetask import ConfigError, ImageGeneration, ImageGenerationModel, Secret
from tests.support.models import EchoModel
from tests.support.payloads import PNG, b64


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


# --- counts: bounded, never pre-allocated from an unchecked number ---------------------


@pytest.mark.parametrize("count", [10**12, 2**63, 2**64, 10_001])
def test_a_huge_num_generations_is_a_config_error(count: int) -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), num_generations=count)
    assert str(info.value) == (
        f"ImageGeneration: bad field `num_generations` = {count}: Expected `int` <= 10000"
    )


def test_a_huge_num_generations_at_run_time_is_a_config_error() -> None:
    task = ImageGeneration(image_generation_model=EchoModel())
    with pytest.raises(ConfigError, match="`num_generations` = 1000000000000"):
        task.set_runtime_parameters({"num_generations": 10**12})
    assert task.num_generations == 1


# --- names and columns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"output_mappings": {"image": "distilabel_metadata"}},
            "ImageGeneration: `metadata_column` and output `image` are both named "
            "'distilabel_metadata'",
        ),
        (
            {"output_mappings": {"model_name": "image"}},
            "ImageGeneration: output `model_name` and output `image` are both named 'image'",
        ),
        (
            {"metadata_column": "image"},
            "ImageGeneration: `metadata_column` and output `image` are both named 'image'",
        ),
        (
            {"output_mappings": {"image": "prompt"}},
            "ImageGeneration: output `image` and input `prompt` are both named 'prompt'",
        ),
        (
            {"output_mappings": {"image_path": "image"}},
            "ImageGeneration: output `image_path` and output `image` are both named 'image'",
        ),
    ],
)
def test_colliding_output_names_are_a_config_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), **fields)
    assert str(info.value) == (
        message + ": give them distinct names (output_mappings, metadata_column)"
    )


@pytest.mark.parametrize("name", ["x\n", "a" * 101, "", "é", "a/b", "..", "a b"])
def test_bad_names_are_refused_at_construction(name: str) -> None:
    with pytest.raises(ConfigError, match="bad field `name`"):
        ImageGeneration(image_generation_model=EchoModel(), name=name or " ")


def test_a_long_name_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), name="n" * 5000)
    assert len(str(info.value)) < 300


# --- secrets --------------------------------------------------------------------------

SECRET = "sk-live-0123456789abcdef"


def test_an_unknown_field_never_shows_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), api_key=SECRET)
    assert str(info.value) == (
        "ImageGeneration: bad field `api_key`: Object contains unknown field `api_key`"
    )
    assert SECRET not in repr(info.value)


# --- dumps are data -------------------------------------------------------------------


class PlainModel:
    """A backend that is a plain object: the four members, nothing else."""

    model_name = "plain"

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        return [[{"images": [b64(PNG)] * num_generations}] for _ in inputs]


def test_a_run_takes_a_plain_object_backend(tmp_path: Path) -> None:
    task = ImageGeneration(image_generation_model=PlainModel(), num_generations=2)
    summary = task.run([{"prompt": "a"}, {"prompt": "b"}], tmp_path / "out")
    assert (summary.rows_in, summary.rows_out, summary.failed) == (2, 4, 0)
    dumped = json.loads((tmp_path / "out" / "run.json").read_text())["task"]
    assert dumped["image_generation_model"] == {
        "type_info": {"module": __name__, "name": "PlainModel"}
    }
    again = ImageGeneration(image_generation_model=PlainModel(), num_generations=2)
    assert again.run([{"prompt": "a"}, {"prompt": "b"}], tmp_path / "out", resume=True).complete


def test_from_dict_loads_a_plain_backend_only_when_allowed() -> None:
    dumped = ImageGeneration(image_generation_model=PlainModel()).dump()
    with pytest.raises(ConfigError, match="pass it in `allow` to load it"):
        ImageGeneration.from_dict(dumped)
    loaded = ImageGeneration.from_dict(dumped, allow=[PlainModel])
    assert isinstance(loaded.image_generation_model, PlainModel)


@pytest.mark.parametrize(
    "type_info",
    [
        {"module": "os", "name": "system"},
        {"module": "subprocess", "name": "Popen"},
        {"module": "builtins", "name": "eval"},
        {"module": "imagetask.config", "name": "importlib.import_module"},
        {"module": 3, "name": None},
        "os.system",
    ],
)
def test_from_dict_never_calls_what_a_dump_names(type_info: Any) -> None:
    dumped = ImageGeneration(image_generation_model=EchoModel()).dump()
    dumped["image_generation_model"] = {"type_info": type_info, "command": "touch /tmp/pwned"}
    with pytest.raises(ConfigError, match="cannot load `type_info`"):
        ImageGeneration.from_dict(dumped)
    dumped["type_info"] = type_info
    with pytest.raises(ConfigError, match="cannot load `type_info`"):
        ImageGeneration.from_dict(dumped)


def test_from_dict_still_loads_imagetask_and_program_classes() -> None:
    task = ImageGeneration(image_generation_model=EchoModel(label="x"), num_generations=3)
    loaded = ImageGeneration.from_dict(json.loads(json.dumps(task.dump())))
    assert isinstance(loaded.image_generation_model, EchoModel)
    assert loaded.dump() == task.dump()
