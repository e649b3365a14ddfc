"""The kit's backends: `ScriptedModel` answers what it is told, `ReplayModel` answers with
the images and raw outputs of a finished run."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from imagetask import ConfigError, ImageGeneration, ImageModel, ReadError
from imagetask.config import load_object
from imagetask.models import PlaceholderImageGeneration
from imagetask.testing import Call, ReplayModel, ScriptedModel
from tests.support.payloads import b64

PNG = b"\x89PNG\r\n\x1a\n"
META = "distilabel_metadata"


def test_scripted_model_by_default_gives_a_small_png_per_prompt_and_generation() -> None:
    model = ScriptedModel()
    assert isinstance(model, ImageModel)
    answers = model.generate(["a", "b", "a"], num_generations=2, size="8x8")
    assert [[len(part["images"]) for part in answer] for answer in answers] == [[1, 1]] * 3
    images = [[part["images"][0] for part in answer] for answer in answers]
    assert all(image.startswith(PNG) for answer in images for image in answer)
    assert len({*images[0], *images[1]}) == 4
    assert images[2] == images[0]
    assert model.calls == [Call(["a", "b", "a"], 2, {"size": "8x8"})]


def test_scripted_model_returns_a_sequence_as_it_is_and_raises_an_exception() -> None:
    listed = [[{"images": [b64(b"x")]}]]
    assert ScriptedModel(listed).generate(["a", "b"]) is listed
    with pytest.raises(TimeoutError, match="slow"):
        ScriptedModel(TimeoutError("slow")).generate(["a"])


def test_scripted_model_calls_a_callable_per_prompt() -> None:
    def answer(prompt: str, n: int) -> Any:
        if prompt == "bad":
            return RuntimeError("no")
        return [{"images": [b64(f"{prompt}#{k}".encode()) for k in range(n)]}]

    task = ImageGeneration(image_generation_model=ScriptedModel(answer), num_generations=2)
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "bad"}])
    assert [row["image"] for row in rows] == [b64(b"a#0"), b64(b"a#1"), None, None]
    assert rows[2][META]["error_image_generation_0"] == "the model raised RuntimeError: no"


def test_scripted_model_rejects_what_it_cannot_answer_with() -> None:
    with pytest.raises(ConfigError, match=r"^ScriptedModel: bad `answers`: a int, expected"):
        ScriptedModel(3)  # type: ignore[arg-type]


def test_scripted_model_runs_a_whole_dataset(tmp_path: Path) -> None:
    task = ImageGeneration(image_generation_model=ScriptedModel(model_name="fake"))
    summary = task.run([{"prompt": f"p{i}"} for i in range(5)], tmp_path / "out")
    assert (summary.rows_out, summary.failed) == (5, 0)
    dumped = json.loads((tmp_path / "out" / "run.json").read_text())["task"]
    assert dumped["image_generation_model"] == {
        "model_name": "fake",
        "type_info": {"module": "imagetask.testing.models", "name": "ScriptedModel"},
    }
    # A plain-object backend loads when it is allowed (a dump is data, not code).
    loaded = load_object(dumped["image_generation_model"], allow=[ScriptedModel])
    assert isinstance(loaded, ScriptedModel) and loaded.model_name == "fake"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def placeholder_run(folder: Path, rows: list[dict[str, Any]], **fields: Any) -> Path:
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="4x4"), num_generations=2, **fields
    )
    fmt = "parquet" if fields.get("images_as_bytes") else "jsonl"
    task.run(rows, folder, format=fmt)
    return folder


ROWS = [{"prompt": "a red bicycle", "id": 1}, {"prompt": "a blue kite", "id": 2}]


def test_replay_formats_a_run_again_with_its_images_and_raw_outputs(tmp_path: Path) -> None:
    out = placeholder_run(tmp_path / "run", ROWS)
    original = read_jsonl(out / "data.jsonl")
    replay = ReplayModel.from_run(out)
    assert replay.model_name == "placeholder"
    assert replay.rows == ROWS
    task = ImageGeneration(
        image_generation_model=replay,
        num_generations=2,
        output_mappings={"image": "picture"},
    )
    rows = task.process_batch(replay.rows)
    assert [row["picture"] for row in rows] == [row["image"] for row in original]
    assert [row[META] for row in rows] == [row[META] for row in original]
    assert [row["model_name"] for row in rows] == ["placeholder"] * 4


def test_replay_reads_parquet_and_grouped_runs(tmp_path: Path) -> None:
    out = placeholder_run(tmp_path / "run", ROWS, images_as_bytes=True, group_generations=True)
    replay = ReplayModel.from_run(out)
    assert replay.rows == ROWS
    answer = replay.generate(["a blue kite"], 2)[0]
    assert isinstance(answer, list)
    expected = PlaceholderImageGeneration(size="4x4").generate(["a blue kite"], 2)[0]
    assert [part["images"] for part in answer] == [part["images"] for part in expected]
    assert [part["statistics"] for part in answer] == [part["statistics"] for part in expected]
    assert [part["seed"] for part in answer] == [0, 0]


def test_replay_of_a_parquet_run_answers_what_the_jsonl_run_answers(tmp_path: Path) -> None:
    def replayed(out: Path) -> list[Any]:
        answers: list[Any] = list(ReplayModel.from_run(out).generate(["a red bicycle"], 2))
        for part in answers[0]:
            image = part["images"][0]
            part["images"] = [base64.b64decode(image) if isinstance(image, str) else image]
        return answers

    jsonl = placeholder_run(tmp_path / "jsonl", ROWS)
    parquet = placeholder_run(tmp_path / "parquet", ROWS, images_as_bytes=True)
    assert ReplayModel.from_run(parquet).rows == ROWS
    assert replayed(parquet) == replayed(jsonl)
    assert [part["seed"] for part in replayed(parquet)[0]] == [0, 0]


def test_replay_fails_again_what_failed_and_what_the_run_never_saw(tmp_path: Path) -> None:
    def answer(prompt: str, n: int) -> Any:
        return RuntimeError("quota") if prompt == "x" else [{"images": [b64(b"ok")] * n}]

    task = ImageGeneration(image_generation_model=ScriptedModel(answer))
    task.run([{"prompt": "x"}, {"prompt": "y"}], tmp_path / "run")
    replay = ReplayModel.from_run(tmp_path / "run")
    again = ImageGeneration(image_generation_model=replay)
    rows = again.process_batch([{"prompt": "x"}, {"prompt": "y"}, {"prompt": "z"}])
    errors = [row[META].get("error_image_generation_0") for row in rows]
    assert errors == [
        "image 0 of the model's answer is missing: the model raised RuntimeError: quota",
        None,
        f"the model raised RequestError: the prompt 'z' is not in the run replayed from "
        f"{tmp_path / 'run'}",
    ]
    assert rows[1]["image"] == b64(b"ok")


def test_replay_gives_a_repeated_prompt_its_recorded_answers_in_turn(tmp_path: Path) -> None:
    counter = itertools.count()

    def answer(prompt: str, n: int) -> Any:
        return [{"images": [b64(f"{prompt}{next(counter)}".encode())]}]

    task = ImageGeneration(image_generation_model=ScriptedModel(answer))
    task.run([{"prompt": "a"}, {"prompt": "a"}], tmp_path / "run")
    replay = ReplayModel.from_run(tmp_path / "run")
    answers: list[Any] = list(replay.generate(["a", "a", "a"]))
    images = [answer[0]["images"][0] for answer in answers]
    assert [base64.b64decode(image) for image in images] == [b"a0", b"a1", b"a0"]


def test_replay_without_raw_input_finds_an_image_generation_prompt_by_its_column(
    tmp_path: Path,
) -> None:
    out = placeholder_run(
        tmp_path / "run",
        [{"caption": "a"}],
        add_raw_input=False,
        input_mappings={"prompt": "caption"},
    )
    replay = ReplayModel.from_run(out)
    assert replay.rows == [{"caption": "a"}]
    answer: Any = replay.generate(["a"], 2)[0]
    assert [part["images"][0][:5] for part in answer] == ["iVBOR", "iVBOR"]


def test_replay_of_a_run_written_before_the_package_moved_finds_its_prompts(
    tmp_path: Path,
) -> None:
    out = placeholder_run(tmp_path / "run", [{"prompt": "a"}], add_raw_input=False)
    record = json.loads((out / "run.json").read_text())
    assert record["task"]["type_info"] == {"module": "imagetask.task", "name": "ImageGeneration"}
    record["task"]["type_info"]["module"] = "imagetask.generation"
    (out / "run.json").write_text(json.dumps(record))
    answer: Any = ReplayModel.from_run(out).generate(["a"], 2)[0]
    assert [part["images"][0][:5] for part in answer] == ["iVBOR", "iVBOR"]


class Shouted(ImageGeneration):
    def format_input(self, input: dict[str, Any]) -> str:
        return input["prompt"].upper()


def test_replay_without_raw_input_of_another_task_cannot_match_prompts(tmp_path: Path) -> None:
    task = Shouted(image_generation_model=ScriptedModel(), add_raw_input=False)
    task.run([{"prompt": "a"}], tmp_path / "run")
    with pytest.raises(
        ReadError,
        match=r"line 1: the run recorded no raw input \(add_raw_input=False\) and its task is not "
        r"ImageGeneration, so its images cannot be matched to prompts$",
    ):
        ReplayModel.from_run(tmp_path / "run")


def test_replay_round_trips_as_a_dump_and_reruns_a_dataset(tmp_path: Path) -> None:
    out = placeholder_run(tmp_path / "run", ROWS)
    replay = ReplayModel.from_run(out)
    loaded = load_object(replay.dump())
    assert isinstance(loaded, ReplayModel) and loaded.output_dir == str(out)
    task = ImageGeneration(image_generation_model=loaded, num_generations=2, metadata_column="m")
    summary = task.run(replay.rows, tmp_path / "again")
    assert (summary.rows_out, summary.failed) == (4, 0)
    again = read_jsonl(tmp_path / "again" / "data.jsonl")
    assert [row["image"] for row in again] == [
        row["image"] for row in read_jsonl(out / "data.jsonl")
    ]


def test_replay_of_a_folder_without_a_finished_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match=r"holds no finished run \(no run.json\)"):
        ReplayModel.from_run(tmp_path)


def test_replay_names_the_line_it_cannot_read(tmp_path: Path) -> None:
    out = placeholder_run(tmp_path / "run", ROWS)
    data = out / "data.jsonl"
    data.write_text(data.read_text() + "{not json\n")
    with pytest.raises(ReadError, match=rf"^{data} line 5: invalid JSON"):
        ReplayModel.from_run(out)


@pytest.mark.parametrize(
    ("change", "fault"),
    [
        (
            {"task": {"name": "t", "output_mappings": "x"}},
            "the task's `output_mappings` is 'x', not an object of column names: not written "
            "by imagetask",
        ),
        (
            {"task": {"name": "t", "num_generations": "two"}},
            "the task's `num_generations` is 'two', not a count of at least 1: not written by "
            "imagetask",
        ),
        (
            {"data": "../elsewhere.jsonl"},
            "`data` is '../elsewhere.jsonl', not one of data.jsonl, "
            "data.parquet, data/: not a run summary",
        ),
        (
            {"data": "/etc/hosts"},
            "`data` is '/etc/hosts', not one of data.jsonl, data.parquet, data/: not a run summary",
        ),
        ({"task": {"output_mappings": {}}}, "not a run summary (no task name)"),
    ],
)
def test_replay_of_a_malformed_run_json_is_a_read_error_naming_it(
    tmp_path: Path, change: dict[str, Any], fault: str
) -> None:
    out = placeholder_run(tmp_path / "run", ROWS)
    record = out / "run.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), **change}))
    with pytest.raises(ReadError) as caught:
        ReplayModel.from_run(out)
    assert str(caught.value) == f"{record}: {fault}"


def test_replay_of_a_deep_run_json_or_data_line_is_a_read_error(tmp_path: Path) -> None:
    out = placeholder_run(tmp_path / "run", ROWS)
    record = out / "run.json"
    kept = record.read_text()
    record.write_text('{"task": {"name": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    with pytest.raises(ReadError) as caught:
        ReplayModel.from_run(out)
    assert str(caught.value) == f"{record}: nested too deeply: not written by imagetask"
    record.write_text(kept)
    data = out / "data.jsonl"
    with data.open("a") as file:
        file.write('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(ReadError) as caught:
        ReplayModel.from_run(out)
    assert str(caught.value) == f"{data} line 5: JSON nested too deeply"


def test_replay_of_a_corrupt_parquet_shard_names_it(tmp_path: Path) -> None:
    out = placeholder_run(tmp_path / "run", ROWS, images_as_bytes=True)
    (shard,) = (out / "data").glob("*.parquet")
    shard.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    with pytest.raises(ReadError) as caught:
        ReplayModel.from_run(out)
    assert str(caught.value).startswith(f"{shard}: not a readable Parquet file: ")


def test_replay_of_a_run_without_inlined_images_reads_its_artifact_files(tmp_path: Path) -> None:
    inlined = placeholder_run(tmp_path / "inlined", ROWS, save_artifacts=True)
    paths_only = placeholder_run(tmp_path / "paths", ROWS, save_artifacts=True, inline_images=False)
    assert all("image" not in row for row in read_jsonl(paths_only / "data.jsonl"))
    replay = ReplayModel.from_run(paths_only)
    assert replay.rows == ROWS
    answers = replay.generate(["a red bicycle", "a blue kite"], 2)
    expected = ReplayModel.from_run(inlined).generate(["a red bicycle", "a blue kite"], 2)
    decoded = [
        [{**part, "images": [base64.b64decode(part["images"][0])]} for part in answer]
        for answer in expected
    ]
    assert answers == decoded
