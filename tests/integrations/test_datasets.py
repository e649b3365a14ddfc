"""Hugging Face `datasets`: `generate` as a real `Dataset.map` over Arrow batches, with
the cache, `num_proc=2` and lazy `IterableDataset`s; rows checked against process_batch."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from imagetask import ImageEditing, ImageGeneration
from imagetask.integrations.datasets import fingerprint, generate
from imagetask.io._identity import KEY_FILE
from imagetask.models import PlaceholderImageGeneration
from imagetask.models._openai_images import OpenAIImageGeneration
from tests.support.engine_models import SCRIPT_CLASSES, EndpointModel, LoggedModel, log_lines
from tests.support.servers import Fault, image_server, wait_until

NAME = "image_generation_0"
META = "distilabel_metadata"
ROWS = [{"prompt": f"a picture number {i}", "k": i} for i in range(11)]


@pytest.fixture(autouse=True)
def no_progress_bars() -> Any:
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def on_disk(tmp_path: Path, rows: list[dict[str, Any]] = ROWS) -> datasets.Dataset:
    """A dataset backed by a cache file, as one loaded from the Hub or from disk is."""
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "input")
    return datasets.load_from_disk(tmp_path / "input")


def task_of(log: Path, **fields: Any) -> ImageGeneration:
    model_fields = {name: fields.pop(name) for name in ("seed", "fail") if name in fields}
    model = LoggedModel(log=str(log), size="8x8", **model_fields)
    fields.setdefault("input_batch_size", 4)
    return ImageGeneration(image_generation_model=model, **fields)


def generated(log: Path) -> list[str]:
    return [record[2] for record in log_lines(log) if record[0] == "generate"]


def plain(dataset: datasets.Dataset) -> list[dict[str, Any]]:
    """The rows with image bytes, not decoded pictures."""
    return list(dataset.cast_column("image", datasets.Image(decode=False)))


def expected_rows(task: ImageGeneration, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """process_batch's rows as the dataset holds them: image bytes in the Image() storage,
    raw output and statistics as JSON text parsed back."""
    out = []
    for row in task.process_batch(rows):
        meta = row[META]
        image = row["image"]
        out.append(
            {
                **row,
                "image": None
                if image is None
                else {"bytes": base64.b64decode(image), "path": None},
                META: {
                    f"raw_output_{NAME}": meta[f"raw_output_{NAME}"],
                    f"raw_input_{NAME}": meta[f"raw_input_{NAME}"],
                    f"statistics_{NAME}": meta.get(f"statistics_{NAME}"),
                    f"error_{NAME}": meta.get(f"error_{NAME}"),
                },
            }
        )
    return out


def parsed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        meta = row[META]
        for key in (f"raw_output_{NAME}", f"statistics_{NAME}"):
            if meta[key] is not None:
                meta[key] = json.loads(meta[key])
    return rows


def test_map_gives_process_batchs_rows_with_the_image_feature(tmp_path: Path) -> None:
    task = task_of(tmp_path / "log", num_generations=2, fail=["a picture number 3"])
    result = generate(on_disk(tmp_path), task)

    assert isinstance(result, datasets.Dataset)
    assert result.features == datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "k": datasets.Value("int64"),
            "image": datasets.Image(),
            "model_name": datasets.Value("string"),
            META: {
                f"raw_output_{NAME}": datasets.Value("string"),
                f"raw_input_{NAME}": datasets.Value("string"),
                f"statistics_{NAME}": datasets.Value("string"),
                f"error_{NAME}": datasets.Value("string"),
            },
        }
    )
    rows = parsed(plain(result))
    assert len(rows) == 22
    assert rows == expected_rows(task, ROWS)
    failed = [row for row in rows if row["image"] is None]
    assert [(row["k"], row[META][f"error_{NAME}"]) for row in failed] == [
        (3, "the model raised ValueError: no image for 'a picture number 3'")
    ] * 2
    assert result[0]["image"].size == (8, 8)  # decoded by datasets as a picture
    # batches of input_batch_size rows, each model call once per row
    assert Counter(generated(tmp_path / "log")) == Counter(
        {row["prompt"]: 2 for row in ROWS}  # this run and process_batch's
    )


def test_grouped_generations_are_lists_of_images(tmp_path: Path) -> None:
    task = task_of(tmp_path / "log", num_generations=3, group_generations=True)
    result = generate(on_disk(tmp_path, ROWS[:5]), task)

    assert result.features["image"] == datasets.List(datasets.Image())
    assert result.num_rows == 5
    stored = result.cast_column("image", datasets.List(datasets.Image(decode=False)))
    expected = task.process_batch(ROWS[:5])
    assert [[image["bytes"] for image in row["image"]] for row in stored] == [
        [base64.b64decode(image) for image in row["image"]] for row in expected
    ]


def test_the_same_task_on_the_same_data_is_a_cache_hit_and_a_changed_one_is_not(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    dataset = on_disk(tmp_path)
    first = generate(dataset, task_of(log))
    assert len(generated(log)) == 11

    again = generate(dataset, task_of(log))  # an equal task, built anew
    assert len(generated(log)) == 11  # the model was not called
    assert again.cache_files == first.cache_files
    assert plain(again) == plain(first)

    reseeded = generate(dataset, task_of(log, seed=1))
    assert len(generated(log)) == 22
    assert reseeded.cache_files != first.cache_files
    assert [row["image"] for row in plain(reseeded)] != [row["image"] for row in plain(first)]

    other_rows = on_disk(tmp_path / "other", ROWS[:3])
    generate(other_rows, task_of(log))
    assert len(generated(log)) == 25


def test_the_fingerprint_holds_the_configuration_but_not_the_key() -> None:
    def task(key: str, model: str = "gpt-image-1") -> ImageGeneration:
        backend = OpenAIImageGeneration(model=model, api_key=key, base_url="http://127.0.0.1:9")
        return ImageGeneration(image_generation_model=backend)

    key = "00" * 32
    same = fingerprint(task("sk-one"), "data", {"batch_size": 50}, key)
    assert fingerprint(task("sk-two"), "data", {"batch_size": 7, "num_proc": 2}, key) == same
    assert fingerprint(task("sk-one", "dall-e-3"), "data", {}, key) != same
    assert fingerprint(task("sk-one"), "other data", {}, key) != same
    assert fingerprint(task("sk-one"), "data", {"remove_columns": ["k"]}, key) != same


def test_endpoints_that_differ_only_in_their_hidden_url_parts_are_cached_apart(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    dataset = on_disk(tmp_path, ROWS[:3])

    def at(base_url: str, api_key: str = "sk-one") -> ImageGeneration:
        model = EndpointModel(log=str(log), size="8x8", base_url=base_url, api_key=api_key)
        return ImageGeneration(image_generation_model=model)

    first = generate(dataset, at("https://images.example/v1?deployment=a"))
    assert len(generated(log)) == 3
    for other in ("https://images.example/v1?deployment=b", "https://me@images.example/v1"):
        again = generate(dataset, at(other))
        assert again.cache_files != first.cache_files
    assert len(generated(log)) == 9
    rotated = generate(dataset, at("https://images.example/v1?deployment=a", "sk-rotated"))
    assert rotated.cache_files == first.cache_files
    assert len(generated(log)) == 9  # a rotated key is a cache hit
    folder = Path(first.cache_files[0]["filename"]).parent
    assert (folder / KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_num_proc_2_runs_pickled_copies_in_two_processes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    dataset = on_disk(tmp_path)
    task = task_of(log, num_generations=2)
    in_process = plain(generate(dataset, task, new_fingerprint="in-process"))
    in_two = plain(generate(dataset, task, num_proc=2, new_fingerprint="two-processes"))

    assert in_two == in_process
    records = log_lines(log)
    here = str(os.getpid())
    workers = {pid for event, pid, *_ in records if event == "generate" and pid != here}
    assert len(workers) == 2
    loads = Counter(pid for event, pid, *_ in records if event == "load")
    assert loads == Counter({here: 1, **dict.fromkeys(workers, 1)})  # once per process


def test_an_iterable_dataset_is_generated_batch_by_batch_as_it_is_read(tmp_path: Path) -> None:
    log = tmp_path / "log"
    dataset = on_disk(tmp_path)
    task = task_of(log, num_generations=2)
    result = generate(dataset.to_iterable_dataset(), task)

    assert isinstance(result, datasets.IterableDataset)
    assert generated(log) == []  # nothing generated before reading
    rows = iter(result)
    first = list(itertools.islice(rows, 9))  # 9 output rows: 5 inputs, the 2nd batch
    assert generated(log) == [row["prompt"] for row in ROWS[:8]]
    rest = list(rows)
    assert generated(log) == [row["prompt"] for row in ROWS]

    stored = generate(dataset, task_of(tmp_path / "log2", num_generations=2))
    assert [row["image"].tobytes() for row in first + rest] == [
        row["image"].tobytes() for row in stored
    ]
    assert [row["k"] for row in first + rest] == [row["k"] for row in ROWS for _ in range(2)]
    assert result.features == stored.features


def test_arguments_generate_sets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="generate sets `batched` of `map` itself"):
        generate(on_disk(tmp_path), task_of(tmp_path / "log"), batched=False)
    with pytest.raises(
        TypeError, match=r"takes a datasets\.Dataset or IterableDataset, got a list"
    ):
        generate(ROWS, task_of(tmp_path / "log"))


class CaptionedGeneration(ImageGeneration):
    """An image and a caption made by its own `format_output` (the slow path), whose
    column type the values decide."""

    @property
    def outputs(self) -> list[str]:
        return ["image", "caption", "model_name"]

    @property
    def output_columns(self) -> list[str]:
        return ["image", "caption"]

    def format_output(
        self, output: dict[str, Any], input: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        assert input is not None
        return {**super().format_output(output, input), "caption": f"for {input['k']}"}


def test_a_task_with_its_own_format_output_still_gets_the_image_feature(tmp_path: Path) -> None:
    model = LoggedModel(log=str(tmp_path / "log"), size="8x8")
    task = CaptionedGeneration(image_generation_model=model, input_batch_size=4)
    result = generate(on_disk(tmp_path), task)

    assert result.features["image"] == datasets.Image()
    assert result.features["caption"] == datasets.Value("string")
    rows = plain(result)
    expected = task.process_batch(ROWS)
    assert [(row["k"], row["caption"], row["image"]["bytes"]) for row in rows] == [
        (row["k"], row["caption"], base64.b64decode(row["image"])) for row in expected
    ]


def test_saved_artifacts_are_in_image_path_from_every_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    task = task_of(tmp_path / "log", save_artifacts=True, output_dir=str(out), num_generations=2)
    result = generate(on_disk(tmp_path), task, num_proc=2)

    assert result.features["image_path"] == datasets.Value("string")
    rows = plain(result)
    assert len(rows) == 22
    for row in rows:
        assert row["image_path"].startswith(f"artifacts/{NAME}/images/")
        assert (out / row["image_path"]).read_bytes() == row["image"]["bytes"]
    assert len(list((out / "artifacts" / NAME / "images").iterdir())) == 22


def test_process_arrow_refuses_an_iterable_dataset_naming_it(tmp_path: Path) -> None:
    task = task_of(tmp_path / "log")
    task.load()
    dataset = datasets.Dataset.from_list(ROWS).to_iterable_dataset()
    with pytest.raises(TypeError) as caught:
        task.process_arrow(dataset)
    assert str(caught.value) == (
        "process_arrow takes an object exporting the Arrow PyCapsule interface "
        "(__arrow_c_stream__ or __arrow_c_array__) or a Hugging Face Dataset, got a "
        "IterableDataset"
    )
    assert task.process_arrow(datasets.Dataset.from_list(ROWS)).num_rows == len(ROWS)


SCRIPT = """
import json
import os
import sys

import datasets

from imagetask.integrations.datasets import generate

if __name__ == "__main__":
    datasets.disable_progress_bars()
    rows = {"prompt": ["a", "b", "c", "d"], "style": ["ink", "oil", "chalk", "clay"]}
    out = generate(datasets.Dataset.from_dict(rows), styled_task(), num_proc=2)
    out = out.cast_column("image", datasets.Image(decode=False))
    meta = out["distilabel_metadata"]
    print(json.dumps({
        "raw_inputs": [m["raw_input_styled_images_0"] for m in meta],
        "model_names": list(out["model_name"]),
        "images": [image["bytes"].hex() for image in out["image"]],
        "pid": os.getpid(),
    }))
"""


def test_a_task_and_a_model_defined_in_a_script_run_in_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_CLASSES + SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    prompts = ["a in ink", "b in oil", "c in chalk", "d in clay"]
    assert out["raw_inputs"] == prompts
    # Two worker processes, two rows each, the secret field known as secret in both.
    names = Counter(out["model_names"])
    pids = {pid for name in names for pid in re.findall(r"process (\d+),", name)}
    assert len(pids) == 2 and str(out["pid"]) not in pids
    assert names == Counter({f"ink in process {pid}, secret: token": 2 for pid in pids})
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="8x8"), images_as_bytes=True
    )
    expected = [row["image"].hex() for row in task.process_batch([{"prompt": p} for p in prompts])]
    assert out["images"] == expected


def test_a_map_that_ends_leaves_the_requests_of_a_run_sharing_its_backend(
    tmp_path: Path,
) -> None:
    with image_server() as server:
        held = threading.Event()
        server.faults = {"b": [Fault(hold=held)]}
        model = OpenAIImageGeneration(model="gpt-image-1", base_url=f"{server.url}/v1", api_key="k")
        task = ImageGeneration(image_generation_model=model)
        runs: list[Any] = []
        thread = threading.Thread(target=lambda: runs.append(task.run([{"prompt": "b"}], tmp_path)))
        thread.start()
        wait_until(lambda: "b" in server.served.times)
        mapped = generate(datasets.Dataset.from_list([{"prompt": "a"}]), task)
        held.set()  # the run's request is answered only after the map has ended
        thread.join()
    assert (runs[0].rows_out, runs[0].failed) == (1, 0)
    [row] = (json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines())
    assert row["image"] is not None and f"error_{NAME}" not in row[META]
    assert mapped[0]["image"] is not None


def test_an_editing_task_edits_an_image_column_and_keeps_it_an_image(tmp_path: Path) -> None:
    def png(color: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (6, 6), color).save(buffer, format="PNG")
        return buffer.getvalue()

    sources = [png("red"), png("green"), png("blue")]
    photos = datasets.Dataset.from_dict(
        {
            "photo": [{"bytes": data, "path": None} for data in sources],
            "instruction": ["one", "two", "three"],
        },
        features=datasets.Features(
            {"photo": datasets.Image(), "instruction": datasets.Value("string")}
        ),
    )
    task = ImageEditing(
        image_generation_model=PlaceholderImageGeneration(size="8x8"),
        num_generations=2,
        group_generations=True,
        input_mappings={"image": "photo", "prompt": "instruction"},
    )
    result = generate(photos, task)

    assert result.features["photo"] == datasets.Image()
    assert result.features["edited_image"] == datasets.List(datasets.Image())
    stored = result.cast_column("photo", datasets.Image(decode=False)).cast_column(
        "edited_image", datasets.List(datasets.Image(decode=False))
    )
    expected = task.process_batch(
        [
            {"photo": data, "instruction": text}
            for data, text in zip(sources, ["one", "two", "three"], strict=True)
        ]
    )
    assert [row["photo"]["bytes"] for row in stored] == sources
    assert [[image["bytes"] for image in row["edited_image"]] for row in stored] == [
        [base64.b64decode(image) for image in row["edited_image"]] for row in expected
    ]
    assert [row[META][0]["raw_input_image_editing_0"] for row in result] == [
        row[META][0]["raw_input_image_editing_0"] for row in expected
    ]
