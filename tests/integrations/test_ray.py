"""Ray Data: `generate` on a real local cluster (started once per test session), with a
worker process that dies mid-batch; rows checked against process_batch."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

from imagetask import ImageEditing, ImageGeneration
from imagetask.integrations.ray import TaskActor, generate
from imagetask.models import PlaceholderImageGeneration
from imagetask.models._openai_images import OpenAIImageGeneration
from tests.support.engine_models import SCRIPT_CLASSES, KillOnceModel, LoggedModel, log_lines
from tests.support.servers import image_server

META = "distilabel_metadata"
PROMPTS = [f"a picture number {i}" for i in range(24)]


@pytest.fixture(scope="session")
def cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs; the backends of engine_models travel by value, as
    those of a user's script do."""
    ray.cloudpickle.register_pickle_by_value(sys.modules["tests.support.engine_models"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    yield
    ray.shutdown()


def inputs(blocks: int = 4) -> ray.data.Dataset:
    table = pa.table({"prompt": PROMPTS, "k": list(range(len(PROMPTS)))})
    size = len(PROMPTS) // blocks
    return ray.data.from_arrow([table.slice(i * size, size) for i in range(blocks)])


def placeholder_images(rows: list[dict[str, Any]], num_generations: int) -> Counter[Any]:
    """(row, image) of process_batch's rows with the plain placeholder backend."""
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="8x8"),
        num_generations=num_generations,
    )
    return Counter(
        (row["k"], base64.b64decode(row["image"]))
        for row in task.process_batch([{"prompt": row["prompt"], "k": row["k"]} for row in rows])
    )


def image_bytes(images: pa.ChunkedArray) -> list[bytes | None]:
    """The bytes of each `Image` struct of an image column."""
    return [image and image["bytes"] for image in images.to_pylist()]


def test_actors_load_once_and_give_process_batchs_images(cluster: None, tmp_path: Path) -> None:
    log = tmp_path / "log"
    model = LoggedModel(log=str(log), size="8x8")
    task = ImageGeneration(image_generation_model=model, num_generations=2, input_batch_size=3)
    rows = generate(inputs(), task, concurrency=2, num_cpus=0.5).take_all()

    assert len(rows) == 48
    got = Counter((row["k"], row["image"]["bytes"]) for row in rows)
    expected = placeholder_images([{"prompt": p, "k": k} for k, p in enumerate(PROMPTS)], 2)
    assert got == expected and set(got.values()) == {1}
    assert {row["model_name"] for row in rows} == {"placeholder"}
    assert {row[META]["raw_input_image_generation_0"] for row in rows} == set(PROMPTS)
    records = log_lines(log)
    sent = Counter(record[2] for record in records if record[0] == "generate")
    assert sent == Counter(PROMPTS)
    loads = Counter(pid for event, pid, *_ in records if event == "load")
    workers = {pid for event, pid, *_ in records if event == "generate"}
    assert workers <= set(loads) and set(loads.values()) == {1}
    assert len(loads) <= 2
    # Ray shuts the actors down once the dataset is consumed: each unloads its task,
    # once, unless Ray ends its process without a teardown (as it may under load).
    deadline = time.monotonic() + 60
    while not all(ended(pid, unloaded(log)) for pid in loads) and time.monotonic() < deadline:
        time.sleep(0.2)
    unloads = unloaded(log)
    assert all(ended(pid, unloads) for pid in loads)
    assert set(unloads) <= set(loads) and set(unloads.values()) <= {1}


def test_an_actor_unloads_its_task_at_teardown(tmp_path: Path) -> None:
    log = tmp_path / "log"
    task = ImageGeneration(image_generation_model=LoggedModel(log=str(log), size="8x8"))
    actor = TaskActor(task)
    table = actor(pa.table({"prompt": PROMPTS[:2]}))
    assert table.num_rows == 2
    assert unloaded(log) == Counter()
    del actor
    assert unloaded(log) == Counter({str(os.getpid()): 1})


def unloaded(log: Path) -> Counter[str]:
    return Counter(pid for event, pid, *_ in log_lines(log) if event == "unload")


def ended(pid: str, unloads: Counter[str]) -> bool:
    """Whether the actor of `pid` unloaded its task or its process is gone."""
    if pid in unloads:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    return False


def test_an_openai_task_used_here_runs_in_actors_with_clients_of_their_own(
    cluster: None,
) -> None:
    key = "sk-ray-secret-0123456789"
    with image_server(key=key) as server:
        backend = OpenAIImageGeneration(
            model="gpt-image-1", base_url=f"{server.url}/v1", api_key=key, max_concurrency=2
        )
        task = ImageGeneration(image_generation_model=backend, input_batch_size=6)
        [before] = task.process_batch([{"prompt": "used here first"}])
        rows = generate(inputs(2), task, concurrency=1, num_cpus=0.5).take_all()
        task.unload()

        served = server.served
        assert sorted(row["image"]["bytes"] for row in rows) == sorted(served.images[1:])
        assert base64.b64decode(before["image"]) == served.images[0]
        assert sorted(body["prompt"] for body in served.requests[1:]) == sorted(PROMPTS)
        assert served.auth == [f"Bearer {key}"] * 25
        assert served.peak <= 2  # the backend's max_concurrency, inside the one actor


@pytest.mark.parametrize("grouped", [False, True])
def test_write_parquet_output_loads_in_datasets_as_images(
    cluster: None, tmp_path: Path, grouped: bool
) -> None:
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="8x8"),
        num_generations=2,
        group_generations=grouped,
        input_batch_size=5,
    )
    generate(inputs(), task, concurrency=1, num_cpus=0.5).write_parquet(str(tmp_path / "out"))

    loaded = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out"), split="train")
    image = datasets.Image()
    assert loaded.features["image"] == (datasets.List(image) if grouped else image)
    assert loaded.num_rows == (24 if grouped else 48)
    raw = loaded.cast_column(
        "image",
        datasets.List(datasets.Image(decode=False)) if grouped else datasets.Image(decode=False),
    )
    made = Counter(
        (row["k"], image["bytes"])
        for row in raw
        for image in (row["image"] if grouped else [row["image"]])
    )
    expected = placeholder_images([{"prompt": p, "k": k} for k, p in enumerate(PROMPTS)], 2)
    assert made == expected


def test_a_worker_that_dies_mid_batch_is_restarted_and_every_row_written_once(
    cluster: None, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    model = KillOnceModel(log=str(log), marker=str(tmp_path / "killed"), size="8x8")
    task = ImageGeneration(image_generation_model=model, num_generations=2, input_batch_size=4)
    generate(inputs(), task, concurrency=1, num_cpus=0.5).write_parquet(str(tmp_path / "out"))

    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 48
    got = Counter(
        zip(table.column("k").to_pylist(), image_bytes(table.column("image")), strict=True)
    )
    expected = placeholder_images([{"prompt": p, "k": k} for k, p in enumerate(PROMPTS)], 2)
    assert got == expected and set(got.values()) == {1}
    records = log_lines(log)
    killed = [pid for event, pid, *_ in records if event == "killed"]
    assert len(killed) == 1
    sent = Counter(record[2] for record in records if record[0] == "generate")
    assert sent == Counter(PROMPTS)  # the lost batch was sent again, after the restart
    assert {pid for event, pid, *_ in records if event == "generate"} != set(killed)


SCRIPT = """
import sys

import ray
import ray.data

from imagetask import ImageGeneration
from imagetask.integrations.ray import TaskActor, generate
from imagetask.models import PlaceholderImageGeneration


class ScriptModel(PlaceholderImageGeneration):
    @property
    def model_name(self) -> str:
        return "defined in the script"


address, out = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
prompts = ray.data.from_items([{"prompt": f"p{i}", "k": i} for i in range(10)])
task = ImageGeneration(image_generation_model=ScriptModel(size="8x8"), input_batch_size=4)
generate(prompts, task, concurrency=1, num_cpus=0.5).write_parquet(out)
"""


def run_script(code: str, tmp_path: Path) -> None:
    """Runs `code` as a script of its own, connected to the cluster by its address and
    writing its output to `tmp_path / "out"`."""
    script = tmp_path / "script.py"
    script.write_text(code)
    address = ray.get_runtime_context().gcs_address
    done = subprocess.run(
        [sys.executable, str(script), address, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_script_with_its_own_model_class_runs_on_the_cluster_at_its_address(
    cluster: None, tmp_path: Path
) -> None:
    run_script(textwrap.dedent(SCRIPT), tmp_path)

    table = pq.read_table(tmp_path / "out")
    assert set(table.column("model_name").to_pylist()) == {"defined in the script"}
    got = Counter(
        zip(table.column("k").to_pylist(), image_bytes(table.column("image")), strict=True)
    )
    expected = placeholder_images([{"prompt": f"p{i}", "k": i} for i in range(10)], 1)
    assert got == expected


TASK_SCRIPT = """
import sys

import ray
import ray.data

from imagetask.integrations.ray import TaskActor, generate

address, out = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
rows = [{"prompt": "a", "style": "ink"}, {"prompt": "b", "style": "oil"}]
generate(ray.data.from_items(rows), styled_task(), num_cpus=0.5).write_parquet(out)
"""


def test_a_script_with_its_own_task_class_runs_on_the_cluster(
    cluster: None, tmp_path: Path
) -> None:
    run_script(SCRIPT_CLASSES + TASK_SCRIPT, tmp_path)

    rows = sorted(pq.read_table(tmp_path / "out").to_pylist(), key=lambda row: row["prompt"])
    raw_inputs = [row[META]["raw_input_styled_images_0"] for row in rows]
    assert raw_inputs == ["a in ink", "b in oil"]
    [name] = {row["model_name"] for row in rows}  # one actor
    assert re.fullmatch(r"ink in process \d+, secret: token", name)
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="8x8"), images_as_bytes=True
    )
    expected = task.process_batch([{"prompt": prompt} for prompt in raw_inputs])
    assert [row["image"]["bytes"] for row in rows] == [row["image"] for row in expected]


def test_arguments_generate_sets_are_refused(cluster: None) -> None:
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration())
    with pytest.raises(TypeError, match="generate sets `batch_format` of `map_batches` itself"):
        generate(inputs(), task, batch_format="pandas")
    with pytest.raises(TypeError, match=r"takes a ray\.data\.Dataset, got a list"):
        generate([{"prompt": "p"}], task)


def test_an_editing_task_edits_image_structs_in_actors(cluster: None) -> None:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    sources = [f"source {i}".encode() for i in range(6)]
    pictures = [
        PlaceholderImageGeneration(size="6x6").generate([text.decode()])[0][0]["images"][0]
        for text in sources
    ]
    table = pa.table(
        {
            "image": pa.array([{"bytes": data, "path": None} for data in pictures], image),
            "prompt": [f"edit {i}" for i in range(6)],
        }
    )
    task = ImageEditing(
        image_generation_model=PlaceholderImageGeneration(size="8x8"), input_batch_size=2
    )
    rows = generate(ray.data.from_arrow([table.slice(0, 3), table.slice(3)]), task).take_all()

    expected = task.process_batch(table.to_pylist())
    assert sorted((row["prompt"], row["edited_image"]["bytes"]) for row in rows) == sorted(
        (row["prompt"], base64.b64decode(row["edited_image"])) for row in expected
    )
    assert sorted(row["image"]["bytes"] for row in rows) == sorted(pictures)
