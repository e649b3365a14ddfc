"""`--format parquet` output, as a Hugging Face user loads it: `datasets.load_dataset`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imagetask import ImageGeneration, ImageGenerationModel, _core
from imagetask.errors import SinkError
from imagetask.io import _parquet as hf_dataset
from imagetask.io._parquet import ROW_GROUP_BYTES, features
from tests.support.outputs import recorded_table

GENERATIONS = 2


class SometimesFailing(ImageGenerationModel):
    """Real PNGs, one dict per generation; prompts with "fail" get an error instead."""

    @property
    def model_name(self) -> str:
        return "sometimes-failing"

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        pictures = _core.placeholder_images(
            inputs, num_generations=num_generations, seed=3, width=5, height=4
        )
        return [
            RuntimeError(f"no image for {prompt}")
            if "fail" in prompt
            else [{"images": [image], "seed": k} for k, image in enumerate(images)]
            for prompt, images in zip(inputs, pictures, strict=True)
        ]


def make_task(*, input_batch_size: int = 4, **fields: Any) -> ImageGeneration:
    return ImageGeneration(
        image_generation_model=SometimesFailing(),
        images_as_bytes=True,
        num_generations=GENERATIONS,
        input_batch_size=input_batch_size,
        **fields,
    )


def rows(count: int) -> list[dict[str, Any]]:
    return [{"prompt": f"{'fail' if i % 7 == 3 else 'draw'} {i}", "id": i} for i in range(count)]


def load(out: Path, cache: Path) -> datasets.Dataset:
    dataset = datasets.load_dataset(str(out), split="train", cache_dir=str(cache))
    assert isinstance(dataset, datasets.Dataset)
    return dataset


def pixels(data: bytes) -> tuple[Any, ...]:
    with Image.open(io.BytesIO(data)) as picture:
        return picture.mode, picture.size, picture.tobytes()


def test_load_dataset_gives_image_features_that_decode_to_the_generated_pictures(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    summary = make_task(save_artifacts=True).run(rows(40), out, format="parquet", shard_bytes=2_000)
    assert summary.data == str(out / "data")
    # A file of the user's own and the artifacts beside the shards are not data.
    (out / "data.jsonl").write_text('{"prompt": "not a row"}\n')
    expected = make_task().process_batch(rows(40))
    assert len(expected) == 80

    dataset = load(out, tmp_path / "cache")
    assert len(dataset) == 80
    assert dataset.features["image"] == datasets.Image()
    assert dataset["id"] == [row["id"] for row in expected]
    stored = dataset.cast_column("image", datasets.Image(decode=False))
    assert [image and image["bytes"] for image in stored["image"]] == [
        row["image"] for row in expected
    ]
    assert [image and image["path"] for image in stored["image"]] == dataset["image_path"]
    failed = 0
    for row, want in zip(dataset, expected, strict=True):
        metadata = row["distilabel_metadata"]
        if want["image"] is None:
            failed += 1
            assert row["image"] is None
            assert (
                metadata["error_image_generation_0"]
                == want["distilabel_metadata"]["error_image_generation_0"]
            )
            continue
        decoded = row["image"]
        assert (decoded.mode, decoded.size, decoded.tobytes()) == pixels(want["image"])
        assert (out / row["image_path"]).read_bytes() == want["image"]
        # The raw output is JSON text in the columnar layout (imagetask.build._columnar).
        assert (
            json.loads(metadata["raw_output_image_generation_0"])
            == want["distilabel_metadata"]["raw_output_image_generation_0"]
        )
    assert failed == 6 * GENERATIONS  # inputs 3, 10, 17, 24, 31 and 38
    assert failed == summary.failed

    shards = sorted((out / "data").iterdir())
    assert len(shards) > 2
    assert [path.name for path in shards] == [f"train-{i:05d}.parquet" for i in range(len(shards))]
    for shard in shards:
        table = pq.read_table(shard)
        assert table.nbytes <= ROW_GROUP_BYTES
        assert pq.read_metadata(shard).num_row_groups == 1
        schema = pq.read_schema(shard)
        stored_features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
        assert stored_features == features(schema, "image")
    card = (out / "README.md").read_text()
    assert "num_examples: 80" in card
    assert "| 40 | 80 | 68 | 12 | complete |" in card


@pytest.mark.parametrize("rows_per_group", [2.5, 0.5])
def test_row_groups_hold_at_most_row_group_bytes_with_a_larger_row_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_per_group: float
) -> None:
    out = tmp_path / "out"
    reference = tmp_path / "reference"
    make_task().run(rows(30), reference, format="parquet")
    sizes = sorted(_row_sizes(pq.read_table(reference / "data" / "train-00000.parquet")))
    limit = round(rows_per_group * sizes[len(sizes) // 2])
    monkeypatch.setattr(hf_dataset, "ROW_GROUP_BYTES", limit)

    make_task().run(rows(30), out, format="parquet", shard_bytes=4_000)

    ids: list[int] = []
    groups: list[int] = []
    for shard in sorted((out / "data").iterdir()):
        parquet = pq.ParquetFile(shard)
        for index in range(parquet.num_row_groups):
            group = parquet.read_row_group(index)
            assert group.num_rows == 1 or sum(_row_sizes(group)) <= limit
            groups.append(group.num_rows)
            ids.extend(group.column("id").to_pylist())
    assert ids == [i for i in range(30) for _ in range(GENERATIONS)]
    assert len(groups) < 30 * GENERATIONS if rows_per_group > 1 else set(groups) == {1}
    assert len(list((out / "data").iterdir())) > 1
    dataset = load(out, tmp_path / "cache")
    assert dataset["id"] == ids


@pytest.mark.parametrize("gathered", [1, hf_dataset.GATHERED_BYTES])
def test_a_shard_of_many_small_batches_holds_their_rows_in_order_in_one_row_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gathered: int
) -> None:
    # `gathered` 1: each staged batch is read as a table of its own.
    monkeypatch.setattr(hf_dataset, "GATHERED_BYTES", gathered)
    out, whole = tmp_path / "out", tmp_path / "whole"
    make_task(input_batch_size=1).run(rows(40), out, format="parquet")
    make_task(input_batch_size=40).run(rows(40), whole, format="parquet")
    [shard] = sorted((out / "data").iterdir())
    assert pq.read_metadata(shard).num_row_groups == 1
    table = pq.read_table(shard)
    assert table.column("id").to_pylist() == [i for i in range(40) for _ in range(GENERATIONS)]
    assert table.equals(pq.read_table(whole / "data" / "train-00000.parquet"))


def test_staged_batches_are_read_back_into_jemalloc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = pa.jemalloc_memory_pool()
    held: list[tuple[int, int]] = []  # per table read back: its size, jemalloc's bytes
    gathered = hf_dataset.ParquetSink._gathered

    def spied(sink: hf_dataset.ParquetSink, path: Path) -> Iterator[pa.Table]:
        for table in gathered(sink, path):
            held.append((table.get_total_buffer_size(), pool.bytes_allocated()))
            yield table

    monkeypatch.setattr(hf_dataset.ParquetSink, "_gathered", spied)
    make_task().run(rows(40), tmp_path / "out", format="parquet")
    assert held
    assert all(allocated >= size > 0 for size, allocated in held), held


def test_a_pyarrow_without_jemalloc_reads_them_back_into_its_default_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> pa.MemoryPool:
        raise NotImplementedError("built without jemalloc")

    make_task().run(rows(40), tmp_path / "jemalloc", format="parquet")
    monkeypatch.setattr(pa, "jemalloc_memory_pool", missing)
    make_task().run(rows(40), tmp_path / "default", format="parquet")
    shards = [
        pq.read_table(tmp_path / out / "data" / "train-00000.parquet")
        for out in ("jemalloc", "default")
    ]
    assert shards[0].num_rows == 40 * GENERATIONS
    assert shards[0].equals(shards[1])


def _row_sizes(table: pa.Table) -> list[int]:
    """Arrow's size of each row."""
    return [table.slice(index, 1).nbytes for index in range(table.num_rows)]


def test_features_are_what_datasets_infers_with_image_for_the_image_column() -> None:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("text", pa.string()),
            ("big", pa.large_string()),
            ("count", pa.int64()),
            ("small", pa.int8()),
            ("ratio", pa.float64()),
            ("single", pa.float32()),
            ("flag", pa.bool_()),
            ("blob", pa.binary()),
            ("nothing", pa.null()),
            ("tags", pa.list_(pa.string())),
            ("long", pa.large_list(pa.int64())),
            (
                "meta",
                pa.struct([("a", pa.int64()), ("b", pa.list_(pa.struct([("c", pa.string())])))]),
            ),
            ("image", image),
            ("other_images", pa.list_(image)),
        ]
    )
    ours = features(schema, "image")
    inferred = datasets.Features.from_arrow_schema(schema.remove_metadata()).to_dict()
    assert datasets.Features.from_dict(ours)["image"] == datasets.Image()
    grouped = features(pa.schema([("image", pa.list_(image))]), "image")
    assert datasets.Features.from_dict(grouped)["image"] == datasets.List(datasets.Image())
    assert {name: ours[name] for name in inferred if name != "image"} == {
        name: feature for name, feature in inferred.items() if name != "image"
    }


def test_grouped_generations_are_lists_of_images(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_task(group_generations=True).run(rows(6), out, format="parquet")
    dataset = load(out, tmp_path / "cache")
    assert dataset.features["image"] == datasets.List(datasets.Image())
    expected = make_task(group_generations=True).process_batch(rows(6))
    stored = dataset.cast_column("image", datasets.List(datasets.Image(decode=False)))
    assert [
        None if images is None else [image and image["bytes"] for image in images]
        for images in stored["image"]
    ] == [row["image"] for row in expected]


def test_a_resumed_run_loads_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_task().run(rows(9), out, format="parquet", limit=4)
    make_task().run(rows(9), out, format="parquet", resume=True)
    dataset = load(out, tmp_path / "cache")
    assert dataset["id"] == [row["id"] for row in make_task().process_batch(rows(9))]
    assert dataset.features["image"] == datasets.Image()


def test_an_empty_run_is_one_empty_shard_with_the_image_feature(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_task().run([], out, format="parquet")
    shard = out / "data" / "train-00000.parquet"
    assert sorted((out / "data").iterdir()) == [shard]
    # `datasets` refuses to load a split without rows; its features are there for it.
    assert pq.read_metadata(shard).num_rows == 0
    schema = pq.read_schema(shard)
    assert datasets.Features.from_arrow_schema(schema)["image"] == datasets.Image()
    assert "num_examples: 0" in (out / "README.md").read_text()


BIG = 2**53 + 1
"""An int that no float64 holds exactly."""


@pytest.mark.parametrize("shard_bytes", [1, 500_000_000], ids=["shard per batch", "one shard"])
@pytest.mark.parametrize(
    ("column", "later"), [(BIG, 0.5), ([BIG], [0.5])], ids=["int then float", "in lists"]
)
def test_a_big_int_then_a_float_stops_at_that_batch_with_the_rows_before_loadable(
    tmp_path: Path, shard_bytes: int, column: Any, later: Any
) -> None:
    out = tmp_path / "out"
    data = [{**row, "n": column if row["id"] < 4 else later} for row in rows(8)]
    for attempt in range(2):  # a resume with the same input stops at the same batch
        with pytest.raises(SinkError) as caught:
            make_task().run(data, out, format="parquet", shard_bytes=shard_bytes, resume=True)
        message = str(caught.value)
        assert message.startswith(
            "input row 4: the batch from this row cannot be written, so the run stops with "
            f"the rows before it: {out / 'data'}: the batch makes the column 'n' "
        ), message
        assert "\n" not in message
        recorded = recorded_table(out)
        assert recorded.column("id").to_pylist() == [0, 0, 1, 1, 2, 2, 3, 3]
        assert recorded.column("n").to_pylist() == [column] * 8
        # The rows before it load, whatever the shard size.
        assert load(out, tmp_path / f"cache-{attempt}")["n"] == [column] * 8
    # The input fixed, the resume writes the rest, every value exact.
    fixed = [{**row, "n": column} for row in data]
    summary = make_task().run(fixed, out, format="parquet", shard_bytes=shard_bytes, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.rows_out) == (4, 8, 16)
    assert load(out, tmp_path / "cache2")["n"] == [column] * 16


def test_a_float_then_a_big_int_in_a_new_shard_stops_at_that_batch(tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = [{**row, "n": 0.5 if row["id"] < 4 else BIG} for row in rows(8)]
    with pytest.raises(SinkError) as caught:
        make_task().run(data, out, format="parquet", shard_bytes=1)
    assert str(caught.value).startswith(
        "input row 4: the batch from this row cannot be written, so the run stops with the "
        f"rows before it: {out / 'data'}: the batch cannot take the columns' types: "
    )
    assert load(out, tmp_path / "cache")["n"] == [0.5] * 8


def test_ints_then_floats_widen_to_floats_in_every_shard(tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = [{**row, "n": row["id"] if row["id"] < 4 else row["id"] + 0.5} for row in rows(8)]
    make_task().run(data, out, format="parquet", shard_bytes=1)
    assert len(list((out / "data").iterdir())) == 2
    dataset = load(out, tmp_path / "cache")
    assert dataset.features["n"] == datasets.Value("float64")
    assert dataset["n"] == [n for n in [0, 1, 2, 3, 4.5, 5.5, 6.5, 7.5] for _ in range(2)]
