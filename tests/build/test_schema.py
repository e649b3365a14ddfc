"""OutputSchema: one object per task configuration names every column and metadata key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagetask import (
    ImageGeneration,
    ReadError,
    _core,
)
from imagetask.build._converter import RowConverter
from imagetask.build._schema import OutputSchema, image_type
from imagetask.models import PlaceholderImageGeneration
from tests.support.models import BatchScriptedModel
from tests.support.payloads import PNG, b64, sha

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def task(**fields: object) -> ImageGeneration:
    return ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"), **fields)


def test_the_names_follow_the_mappings() -> None:
    schema = task(
        name="gen",
        save_artifacts=True,
        output_mappings={"image": "picture", "image_path": "file", "model_name": "engine"},
        metadata_column="meta",
    ).output_schema
    assert schema == OutputSchema(
        task_name="gen",
        columns={"image": "picture", "image_path": "file", "model_name": "engine"},
        outputs=("image", "image_path"),
        model_name="engine",
        metadata="meta",
        raw_output="raw_output_gen",
        raw_input="raw_input_gen",
        statistics="statistics_gen",
        error="error_gen",
        image_output="image",
        image="picture",
        image_path="file",
        grouped=False,
        add_raw_output=True,
        add_raw_input=True,
    )
    assert schema.output_columns == ["picture", "file"]
    assert schema.written == {"picture", "file", "engine", "meta"}
    assert schema.metadata_keys == (
        "raw_output_gen",
        "raw_input_gen",
        "statistics_gen",
        "error_gen",
    )


def test_without_artifacts_there_is_no_image_path_column() -> None:
    schema = task().output_schema
    assert (schema.image, schema.image_path, schema.outputs) == ("image", None, ("image",))


def test_the_schema_is_kept_until_a_field_it_depends_on_changes() -> None:
    configured = task()
    first = configured.output_schema
    assert configured.output_schema is first
    configured.set_runtime_parameters({"input_batch_size": 7})
    assert configured.output_schema is first
    configured.set_runtime_parameters({"add_raw_output": False})
    changed = configured.output_schema
    assert changed is not first
    assert changed.metadata_keys == (
        "raw_input_image_generation_0",
        "statistics_image_generation_0",
        "error_image_generation_0",
    )
    configured.output_mappings = {"image": "picture"}
    assert configured.output_schema.image == "picture"


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("artifacts", [False, True])
def test_the_arrow_types_are_those_process_arrow_gives(
    grouped: bool, artifacts: bool, tmp_path: object
) -> None:
    configured = task(
        num_generations=2,
        group_generations=grouped,
        save_artifacts=artifacts,
        output_dir=str(tmp_path),
        add_raw_output=not grouped,
    )
    out = configured.process_arrow(pa.table({"prompt": ["a", "b"]}))
    types = configured.output_schema.arrow_types()
    assert {name: out.schema.field(name).type for name in types} == types
    assert (
        types["image"] == (pa.list_(IMAGE) if grouped else IMAGE) == out.schema.field("image").type
    )
    assert image_type() == IMAGE


def test_the_dump_of_a_run_gives_the_tasks_schema() -> None:
    configured = task(
        name="gen",
        save_artifacts=True,
        group_generations=True,
        add_raw_input=False,
        output_mappings={"image": "picture"},
        metadata_column="meta",
    )
    assert OutputSchema.of_dump(configured.dump()) == configured.output_schema


@pytest.mark.parametrize("grouped", [False, True])
def test_a_process_arrow_table_written_to_parquet_loads_as_images(
    grouped: bool, tmp_path: object
) -> None:
    configured = task(num_generations=2, group_generations=grouped)
    out = configured.process_arrow(pa.table({"prompt": ["a", "b"]}))
    image = datasets.Image()
    assert datasets.Features.from_arrow_schema(out.schema)["image"] == (
        datasets.List(image) if grouped else image
    )
    pq.write_table(out, f"{tmp_path}/out.parquet")
    loaded = datasets.load_dataset("parquet", data_files=f"{tmp_path}/out.parquet", split="train")
    assert loaded.features["image"] == (datasets.List(image) if grouped else image)


def test_the_converter_names_the_row_whose_json_is_not_json() -> None:
    configured = task(name="gen")
    convert = RowConverter(configured.output_schema, images_as_bytes=True)
    row = {"image": {"bytes": b"x", "path": None}, "distilabel_metadata": {"raw_output_gen": "{"}}
    with pytest.raises(ReadError, match=r"^line 3: raw_output_gen is not JSON"):
        convert.row(row, "line 3")


def test_the_converter_round_trips_the_dict_rows() -> None:
    configured = ImageGeneration(
        image_generation_model=BatchScriptedModel([[{"images": ["R0lGODlh"], "n": (1, 2)}]]),
        name="gen",
    )
    [row] = configured.process_batch([{"prompt": "a"}])
    convert = RowConverter(configured.output_schema, images_as_bytes=False)
    stored = convert.arrow_row(row)
    raw = row["distilabel_metadata"]["raw_output_gen"]
    assert raw["n"] == (1, 2)
    assert stored["image"] == b"GIF89a"
    assert stored["distilabel_metadata"]["raw_output_gen"] == (
        '{"images":["' + raw["images"][0] + '"],"n":[1,2]}'
    )
    back = convert.row(stored, "row 0")
    assert back["image"] == "R0lGODlh"
    assert back["distilabel_metadata"]["raw_output_gen"] == {"images": raw["images"], "n": [1, 2]}


META = "distilabel_metadata"
ERROR = "error_image_generation_0"


def write_with(
    rows: list[dict[str, Any]], folder: Path, convert: Any
) -> list[tuple[int, int, str]]:
    """`_core.write_artifacts` of image rows into `folder`, converting with `convert`."""
    return _core.write_artifacts(
        rows,
        image_column="image",
        path_column="image_path",
        metadata_column=META,
        error_key=ERROR,
        folder=folder,
        prefix="images",
        convert=convert,
    )


def test_an_interrupted_converter_propagates(tmp_path: Path) -> None:
    rows = [{"image": b64(PNG), "image_path": None, META: {}}]

    def convert(data: bytes) -> bytes:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_with(rows, tmp_path, convert)


def test_a_converter_that_changes_the_rows_cannot_crash_the_writer(tmp_path: Path) -> None:
    rows = [{"image": b64(PNG), "image_path": None, META: {}} for _ in range(3)]
    original = list(rows)

    def convert(data: bytes) -> bytes:
        rows.clear()
        return data

    failures = write_with(rows, tmp_path, convert)
    assert failures == []
    assert {row["image_path"] for row in original} == {f"images/{sha(PNG)}.png"}
