"""The columnar path: `process_arrow` against `process_batch`, exact tables, inputs from
pyarrow and Polars, and the slow path for overridden hooks."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetask import (
    ConfigError,
    ImageGeneration,
    InputRowError,
    ReadError,
    _core,
)
from imagetask.build._batch import Failure
from imagetask.build._columnar import dict_rows
from imagetask.models import PlaceholderImageGeneration
from tests.support.answers import entries
from tests.support.models import BatchScriptedModel, task_for
from tests.support.payloads import b64

META = "distilabel_metadata"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
NAME = "image_generation_0"
OURS = {f"raw_output_{NAME}", f"raw_input_{NAME}"}


def comparable(rows: list[dict[str, Any]], task: ImageGeneration) -> list[dict[str, Any]]:
    """Rows with the documented differences of the Arrow layout taken out: images as
    padded base64, raw outputs and statistics as JSON values (bytes as base64), null
    metadata fields left out."""
    raw, stats = f"raw_output_{task.name}", f"statistics_{task.name}"
    keep = {raw, f"raw_input_{task.name}"}

    def meta(value: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, item in value.items():
            if key in (raw, stats) and item is not None:
                item = json.loads(pl_json(item))
            if item is not None or key in keep:
                out[key] = item
        return out

    def image(value: Any) -> Any:
        if isinstance(value, str):  # canonical padded base64
            return base64.b64encode(base64.b64decode(value + "=" * (-len(value) % 4))).decode()
        return value

    picture = task.output_mappings.get("image", "image")
    out = []
    for row in rows:
        row = dict(row)
        row[picture] = (
            [image(i) for i in row[picture]] if task.group_generations else image(row[picture])
        )
        column = task.metadata_column
        row[column] = (
            [meta(m) for m in row[column]] if task.group_generations else meta(row[column])
        )
        out.append(row)
    return out


def pl_json(value: Any) -> str:

    return _core.json_text(value)


# --- tables and answers ---------------------------------------------------------------


@st.composite
def tasks(draw: st.DrawFn) -> ImageGeneration:
    return ImageGeneration(
        image_generation_model=BatchScriptedModel([], name=draw(st.sampled_from(["m", "ünï"]))),
        num_generations=draw(st.integers(1, 3)),
        group_generations=draw(st.booleans()),
        add_raw_output=draw(st.booleans()),
        add_raw_input=draw(st.booleans()),
        images_as_bytes=draw(st.booleans()),
        inline_raw_images=draw(st.booleans()),
        input_mappings=draw(st.sampled_from([{}, {"prompt": "text"}])),
        output_mappings=draw(st.sampled_from([{}, {"image": "picture"}])),
        on_invalid_row="fail",
    )


@st.composite
def tables(draw: st.DrawFn, task: ImageGeneration) -> pa.Table:
    rows = draw(st.integers(0, 6))
    prompt = task.input_mappings.get("prompt", "prompt")
    columns: dict[str, pa.Array] = {
        prompt: pa.array(
            draw(st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=rows, max_size=rows)),
            pa.string(),
        ),
        "id": pa.array(range(rows), pa.int64()),
    }
    if draw(st.booleans()):
        upstream = [
            draw(
                st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {
                            "source": st.one_of(st.none(), st.text(max_size=4)),
                            "n": st.integers(0, 9),
                        }
                    ),
                )
            )
            for _ in range(rows)
        ]
        kind = pa.struct([("source", pa.string()), ("n", pa.int64())])
        columns[META] = pa.array(upstream, kind)
    if draw(st.booleans()):
        columns["image"] = pa.array([b"old"] * rows, pa.binary())  # replaced by the output
    if draw(st.booleans()):
        columns["nested"] = pa.array([{"tags": ["a", "b"], "w": 1.5}] * rows)
    return pa.table(columns)


@st.composite
def cases(draw: st.DrawFn) -> tuple[ImageGeneration, pa.Table, Any, str]:
    task = draw(tasks())
    table = draw(tables(task))
    prompt = task.input_mappings.get("prompt", "prompt")
    valid = sum(value is not None for value in table.column(prompt).to_pylist())
    answers: Any = [draw(entries(task.num_generations)) for _ in range(valid)]
    whole = draw(st.sampled_from(["as-is"] * 8 + ["raise", "none", "short"]))
    if whole == "raise":
        answers = RuntimeError("backend down")
    elif whole == "none":
        answers = None
    elif whole == "short" and answers:
        answers = answers[:-1]
    source = draw(st.sampled_from(["pyarrow", "polars", "record-batch", "chunked"]))
    return task, table, answers, source


def as_input(table: pa.Table, source: str) -> Any:
    if source == "polars":
        return pl.from_arrow(table)
    if source == "record-batch":
        return table.combine_chunks().to_batches()[0] if table.num_rows else table
    if source == "chunked":  # a chunk a row, and an empty one
        return pa.concat_tables(
            [table.slice(0, 0), *(table.slice(i, 1) for i in range(len(table)))]
        )
    return table


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(cases())
def test_process_arrow_carries_what_process_batch_gives(
    case: tuple[ImageGeneration, pa.Table, Any, str],
) -> None:
    task, table, answers, source = case
    model = task.image_generation_model
    assert isinstance(model, BatchScriptedModel)
    model.answers = answers
    expected = task.process_batch(table.to_pylist())
    out = task.process_arrow(as_input(table, source))
    assert comparable(dict_rows(task, out), task) == comparable(expected, task)
    assert out.num_rows == table.num_rows * (1 if task.group_generations else task.num_generations)


class Formatted(ImageGeneration):
    """The same task with a hook of its own (doing what the native one does): the slow
    path."""

    def format_output(self, output: dict[str, Any], input: dict[str, Any] | None = None) -> Any:
        return ImageGeneration.format_output(self, output, input)


@PROPERTY
@given(cases())
def test_the_slow_path_builds_the_same_table(
    case: tuple[ImageGeneration, pa.Table, Any, str],
) -> None:
    task, table, answers, source = case
    fields = {name: getattr(task, name) for name in task.__fields__}
    slow = Formatted(**fields)
    assert isinstance(task.image_generation_model, BatchScriptedModel)
    task.image_generation_model.answers = answers
    fast = task.process_arrow(as_input(table, source))
    assert slow.process_arrow(as_input(table, source)).equals(fast)


# --- exact tables ---------------------------------------------------------------------


def placeholder_task(**fields: Any) -> ImageGeneration:
    return ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"), **fields)


def test_the_table_has_the_documented_schema() -> None:
    table = pa.table({"prompt": ["a", "b"], "id": [1, 2]})
    out = placeholder_task(num_generations=2).process_arrow(table)
    assert out.schema == pa.schema(
        [
            ("prompt", pa.string()),
            ("id", pa.int64()),
            ("image", IMAGE),
            ("model_name", pa.string()),
            (
                META,
                pa.struct(
                    [
                        (f"raw_output_{NAME}", pa.string()),
                        (f"raw_input_{NAME}", pa.string()),
                        (f"statistics_{NAME}", pa.string()),
                        (f"error_{NAME}", pa.string()),
                    ]
                ),
            ),
        ]
    )
    assert out.column("prompt").to_pylist() == ["a", "a", "b", "b"]
    assert [image["path"] for image in out.column("image").to_pylist()] == [None] * 4
    images = [image["bytes"] for image in out.column("image").to_pylist()]
    assert len(set(images)) == 4 and all(image.startswith(b"\x89PNG") for image in images)
    meta = out.column(META).to_pylist()[0]
    assert json.loads(meta[f"raw_output_{NAME}"]) == {
        "images": ["sha256:" + hashlib.sha256(images[0]).hexdigest()],
        "seed": 0,
    }
    assert json.loads(meta[f"statistics_{NAME}"]) == {"image_bytes": len(images[0])}
    assert meta[f"raw_input_{NAME}"] == "a" and meta[f"error_{NAME}"] is None


def test_the_schema_is_the_same_for_failures() -> None:
    table = pa.table({"prompt": ["a"]})
    task = ImageGeneration(image_generation_model=BatchScriptedModel(RuntimeError("down")))
    failed = task.process_arrow(table)
    ok = placeholder_task().process_arrow(table)
    assert failed.schema == ok.schema
    [meta] = failed.column(META).to_pylist()
    assert meta[f"error_{NAME}"] == "the model raised RuntimeError: down"
    assert failed.column("image").to_pylist() == [None]


def test_input_columns_pass_through_without_copying() -> None:
    table = pa.table({"prompt": ["a", "b"], "payload": [b"x" * 64, b"y" * 64]})
    out = placeholder_task().process_arrow(table)
    before = table.column("payload").chunk(0).buffers()[2].address
    assert out.column("payload").chunk(0).buffers()[2].address == before


def test_an_input_column_named_like_an_output_the_task_does_not_write_passes_through() -> None:
    task = placeholder_task()  # no save_artifacts: image_path is not written
    table = pa.table({"prompt": ["a"], "image_path": ["mine"]})
    out = task.process_arrow(table)
    assert out.column("image_path").to_pylist() == ["mine"]
    assert task.process_batch(table.to_pylist())[0]["image_path"] == "mine"


def test_grouped_generations_are_lists() -> None:
    out = placeholder_task(num_generations=3, group_generations=True).process_arrow(
        pa.table({"prompt": ["a", "b"]})
    )
    assert out.schema.field("image").type == pa.list_(IMAGE)
    assert [len(images) for images in out.column("image").to_pylist()] == [3, 3]
    assert out.column("model_name").to_pylist() == ["placeholder", "placeholder"]
    assert [len(m) for m in out.column(META).to_pylist()] == [3, 3]


def test_upstream_metadata_is_merged() -> None:
    kind = pa.struct([("source", pa.string())])
    table = pa.table({"prompt": ["a", "b"], META: pa.array([{"source": "web"}, None], kind)})
    out = placeholder_task().process_arrow(table)
    meta = out.column(META).to_pylist()
    assert [m["source"] for m in meta] == ["web", None]
    assert out.schema.field(META).type.field(0).name == "source"


def test_a_null_prompt_raises_naming_its_row() -> None:
    with pytest.raises(InputRowError) as info:
        placeholder_task().process_arrow(pa.table({"prompt": ["a", None]}))
    assert info.value.row == 1
    assert str(info.value) == (
        "row 1 of the batch has no text prompt: its column 'prompt' holds a NoneType"
    )


def test_a_missing_prompt_column_raises_like_process_batch() -> None:
    with pytest.raises(InputRowError) as info:
        placeholder_task().process_arrow(pa.table({"text": ["a"]}))
    assert str(info.value) == (
        "row 0 of the batch lacks the input column 'prompt' (its columns: 'text')"
    )


def test_polars_and_record_batches_are_read() -> None:
    frame = pl.DataFrame({"prompt": ["a", "b"], "id": [1, 2]})
    from_polars = placeholder_task().process_arrow(frame)
    from_batch = placeholder_task().process_arrow(pa.table(frame).to_batches()[0])
    assert from_polars.column("image").equals(from_batch.column("image"))
    assert from_polars.column("id").to_pylist() == [1, 2]


def test_something_that_is_not_arrow_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="exporting the Arrow PyCapsule interface"):
        placeholder_task().process_arrow([{"prompt": "a"}])


def test_artifacts_are_written_natively(tmp_path: Path) -> None:
    task = placeholder_task(save_artifacts=True, output_dir=str(tmp_path), num_generations=2)
    out = task.process_arrow(pa.table({"prompt": ["a", "a"]}))
    paths = out.column("image_path").to_pylist()
    images = [image["bytes"] for image in out.column("image").to_pylist()]
    assert [image["path"] for image in out.column("image").to_pylist()] == paths
    for path, image in zip(paths, images, strict=True):
        assert (tmp_path / path).read_bytes() == image
        assert path.endswith(hashlib.sha256(image).hexdigest() + ".png")
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "a"}])
    assert [row["image_path"] for row in rows] == paths


def test_images_are_bytes_whatever_images_as_bytes_says() -> None:
    answers = [[{"images": [b64(b"GIF89a")]}]]
    task = ImageGeneration(image_generation_model=BatchScriptedModel(answers))
    out = task.process_arrow(pa.table({"prompt": ["a"]}))
    assert out.column("image").to_pylist() == [{"bytes": b"GIF89a", "path": None}]
    assert dict_rows(task, out)[0]["image"] == base64.b64encode(b"GIF89a").decode()


class Audited(ImageGeneration):
    """Fails, after the build, every generation whose prompt says so."""

    def complete_rows(self, rows: list[dict[str, Any]]) -> list[Failure]:
        failures = []
        for index, row in enumerate(rows):
            if "reject" in row["prompt"]:
                row["image"] = None
                row[META][f"error_{NAME}"] = "rejected by review"
                failures.append(Failure(index, 0, "rejected by review"))
        return failures


def test_an_overridden_complete_rows_is_honoured() -> None:
    task = Audited(image_generation_model=PlaceholderImageGeneration(size="4x4"), name=NAME)
    table = pa.table({"prompt": ["keep", "reject me"]})
    out = task.process_arrow(table)
    assert out.column("image").null_count == 1
    assert out.column(META).to_pylist()[1][f"error_{NAME}"] == "rejected by review"
    assert comparable(dict_rows(task, out), task) == comparable(
        task.process_batch(table.to_pylist()), task
    )


def test_polars_fixed_size_lists_of_strings_repeat_with_their_rows() -> None:
    frame = pl.DataFrame(
        {
            "prompt": ["a", "b"],
            "pair": pl.Series([["x", "y"], ["z", "w"]], dtype=pl.Array(pl.String, 2)),
        }
    )
    out = placeholder_task(num_generations=2).process_arrow(frame)
    assert out.column("pair").to_pylist() == [["x", "y"], ["x", "y"], ["z", "w"], ["z", "w"]]


def test_a_hugging_face_dataset_gives_its_selected_rows() -> None:
    import datasets

    selected = datasets.Dataset.from_dict({"prompt": ["a", "b", "c"]}).select([2, 0])
    out = placeholder_task().process_arrow(selected)
    assert out.column("prompt").to_pylist() == ["c", "a"]


def test_duplicate_column_names_are_an_error_naming_them() -> None:
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["prompt", "prompt"])
    with pytest.raises(ValueError, match=r"^the table has several columns named 'prompt'$"):
        placeholder_task().process_arrow(table)


def test_list_views_repeat_with_their_rows() -> None:
    # Offsets out of order and a slice: each row's own values, repeated, its type kept.
    values = pa.array(["x", "y", "z"], pa.string_view())
    views = pa.ListViewArray.from_arrays(
        pa.array([2, 0, 1], pa.int32()), pa.array([1, 2, 0], pa.int32()), values
    )
    large = pa.LargeListViewArray.from_arrays(
        pa.array([1, 0, 0], pa.int64()), pa.array([2, 1, 3], pa.int64()), pa.array([1, 2, 3])
    )
    table = pa.table({"prompt": ["a", "b", "c"], "views": views, "large": large}).slice(1)
    out = placeholder_task(num_generations=2).process_arrow(table)
    assert out.column("views").type == views.type
    assert out.column("views").to_pylist() == [["x", "y"], ["x", "y"], [], []]
    assert out.column("large").type == large.type
    assert out.column("large").to_pylist() == [[1], [1], [1, 2, 3], [1, 2, 3]]


def test_run_end_encoded_columns_repeat_with_their_rows() -> None:
    kind = pa.run_end_encoded(pa.int16(), pa.string())
    encoded = pa.RunEndEncodedArray.from_arrays(
        pa.array([2, 3], pa.int16()), pa.array(["x", None]), kind
    )
    meta = pa.StructArray.from_arrays([pa.array(["web", "book", "web"])], names=["source"])
    table = pa.table({"prompt": ["a", "b", "c"], "run": encoded, META: meta})
    out = placeholder_task(num_generations=2).process_arrow(table)
    assert out.column("run").type == kind
    assert out.column("run").to_pylist() == ["x", "x", "x", "x", None, None]
    assert [m["source"] for m in out.column(META).to_pylist()] == ["web"] * 2 + ["book"] * 2 + [
        "web"
    ] * 2


def test_a_column_pyarrow_cannot_take_rows_of_repeats_with_its_rows() -> None:
    encoded = pa.RunEndEncodedArray.from_arrays(pa.array([1, 3], pa.int32()), pa.array(["x", "y"]))
    nested = pa.ListArray.from_arrays(pa.array([0, 1, 3], pa.int32()), encoded)
    model = BatchScriptedModel([[{"images": [b64(b"A")] * 2}]] * 2)
    task = ImageGeneration(image_generation_model=model, num_generations=2)
    out = task.process_arrow(pa.table({"prompt": ["a", "b"], "nested": nested}))
    out.validate(full=True)
    assert out.column("nested").type == nested.type
    assert out.column("nested").to_pylist() == [["x"], ["x"], ["y", "y"], ["y", "y"]]


def test_run_ends_that_cannot_count_the_repeated_rows_are_refused_before_the_model() -> None:
    encoded = pa.RunEndEncodedArray.from_arrays(pa.array([20_000], pa.int16()), pa.array(["x"]))
    model = BatchScriptedModel([])
    task = ImageGeneration(image_generation_model=model, num_generations=2)
    table = pa.table({"prompt": ["a"] * 20_000, "run": encoded})
    with pytest.raises(ConfigError, match=r"^process_arrow cannot repeat the column 'run': its "):
        task.process_arrow(table)
    assert model.calls == []


@pytest.mark.parametrize("where", ["struct", "list", "metadata", "chunks", "runs in runs"])
def test_run_ends_nested_in_a_column_are_checked_before_the_model(where: str) -> None:
    def runs(length: int) -> pa.Array:
        return pa.RunEndEncodedArray.from_arrays(
            pa.array(range(1, length + 1), pa.int16()), pa.array(range(length))
        )

    def table(rows: int) -> tuple[str, pa.Table]:
        struct = pa.StructArray.from_arrays([runs(rows)], names=["r"])
        half = pa.StructArray.from_arrays([runs(rows // 2)], names=["r"])
        nested: dict[str, tuple[str, Any]] = {
            "struct": ("s", struct),
            "list": (
                "l",
                pa.ListArray.from_arrays(pa.array(range(rows + 1), pa.int32()), runs(rows)),
            ),
            "metadata": (META, struct),
            # Each chunk fits alone; the column is repeated whole.
            "chunks": ("c", pa.chunked_array([half, half])),
            "runs in runs": (
                "o",
                pa.RunEndEncodedArray.from_arrays(pa.array(range(1, rows + 1), pa.int32()), struct),
            ),
        }
        name, column = nested[where]
        return name, pa.table({"prompt": ["a"] * rows, name: column})

    refused = BatchScriptedModel([])
    task = ImageGeneration(image_generation_model=refused, num_generations=2)
    name, too_long = table(20_000)
    with pytest.raises(ConfigError, match=rf"^process_arrow cannot repeat the column '{name}': "):
        task.process_arrow(too_long)
    assert refused.calls == []
    answers = BatchScriptedModel(lambda p, n: [[{"images": [b64(b"A")] * n}]] * len(p))
    fits = ImageGeneration(image_generation_model=answers, num_generations=2)
    name, table_that_fits = table(16_000)
    out = fits.process_arrow(table_that_fits)
    out.validate(full=True)
    assert out.num_rows == 32_000
    if name != META:
        assert out.column(name).to_pylist()[::2] == table_that_fits.column(name).to_pylist()


class Exclaimed(ImageGeneration):
    """Sends each prompt with a "!" (a hook: the slow path)."""

    def format_input(self, input: dict[str, Any]) -> str:
        return f"{input['prompt']}!"


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize(("kind", "sent"), [(ImageGeneration, 3 + 4), (Exclaimed, 4 + 5)])
def test_prompts_too_long_to_repeat_are_refused_before_the_model(
    monkeypatch: pytest.MonkeyPatch, group: bool, kind: type[ImageGeneration], sent: int
) -> None:
    from imagetask.build import _columnar as columnar

    assert columnar.MAX_STRING_BYTES == 2**31 - 1
    table = pa.table({"prompt": ["abc", "dég"]})  # 3 + 4 bytes, sent 5 times over

    def task(answers: Any) -> ImageGeneration:
        model = BatchScriptedModel(answers)
        return kind(image_generation_model=model, num_generations=5, group_generations=group)

    monkeypatch.setattr(columnar, "MAX_STRING_BYTES", sent * 5 - 1)
    refused = task([])
    with pytest.raises(ConfigError) as info:
        refused.process_arrow(table)
    assert str(info.value).startswith(
        f"process_arrow: the raw inputs (the prompts of 'prompt') repeated for "
        f"num_generations=5 make {sent * 5} bytes in one batch, more than the {sent * 5 - 1} "
    )
    assert refused.image_generation_model.calls == []
    monkeypatch.setattr(columnar, "MAX_STRING_BYTES", sent * 5)
    fits = task([[{"images": [b64(b"A")] * 5}]] * 2)
    assert fits.process_arrow(table).num_rows == (2 if group else 10)


def test_an_input_column_too_long_to_repeat_is_refused_before_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imagetask.build import _columnar as columnar

    monkeypatch.setattr(columnar, "MAX_STRING_BYTES", 100)
    model = BatchScriptedModel([])
    task = ImageGeneration(image_generation_model=model, num_generations=2, add_raw_input=False)
    table = pa.table({"prompt": ["a"], "notes": pa.array([b"x" * 51], pa.binary())})
    with pytest.raises(ConfigError, match=r"the column 'notes' .* 102 bytes"):
        task.process_arrow(table)
    assert model.calls == []
    # 100 bytes fit, though the table's buffers (offsets included) pass 50 bytes.
    fits = pa.table({"prompt": ["a"], "notes": pa.array([b"x" * 50], pa.binary())})
    assert fits.nbytes * 2 > 100
    model = BatchScriptedModel([[{"images": [b64(b"A")] * 2}]])
    task = ImageGeneration(image_generation_model=model, num_generations=2, add_raw_input=False)
    out = task.process_arrow(fits)
    assert out.column("notes").to_pylist() == [b"x" * 50] * 2
    assert [image["bytes"] for image in out.column("image").to_pylist()] == [b"A", b"A"]


def test_invalid_arrow_data_is_an_error_not_a_crash() -> None:
    import numpy as np
    import pyarrow as pa

    task = task_for([])
    offsets = pa.py_buffer(np.array([0, 5, 2], np.int32).tobytes())
    backwards = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"abcdefgh")])
    with pytest.raises(ValueError, match=r"the Arrow data is not valid: .*Offset invariant"):
        task.process_arrow(pa.table({"prompt": backwards}))
    not_utf8 = pa.array([b"ok", b"bad\xff\xfe"]).view(pa.string())
    with pytest.raises(ValueError, match=r"the Arrow data is not valid: .*Invalid UTF8"):
        task.process_arrow(pa.table({"prompt": not_utf8}))


def test_every_batch_of_a_schema_carries_the_features_and_a_pickled_task_builds_again() -> None:
    import pickle

    task = placeholder_task(num_generations=2, group_generations=True)
    first = task.process_arrow(pa.table({"prompt": ["a"]}))
    second = task.process_arrow(pa.table({"prompt": ["b", "c"]}))
    third = task.process_arrow(pa.table({"prompt": ["b", "c"]}))
    features = json.loads(first.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "List", "feature": {"_type": "Image"}}
    assert second.schema.metadata == first.schema.metadata
    assert third.equals(second, check_metadata=True)
    other = task.process_arrow(pa.table({"prompt": ["d"], "score": [1.5]}))
    assert json.loads(other.schema.metadata[b"huggingface"])["info"]["features"]["score"] == {
        "dtype": "float64",
        "_type": "Value",
    }
    copy = pickle.loads(pickle.dumps(task))
    again = copy.process_arrow(pa.table({"prompt": ["b", "c"]}))
    assert again.equals(second, check_metadata=True)


def test_each_batch_is_read_with_its_own_schema_as_schemas_change() -> None:
    def kind(meta: str) -> pa.DataType:
        return pa.struct([pa.field("c", pa.int64(), metadata={"m": meta})])

    task = placeholder_task()
    tables = [
        pa.table({"prompt": ["a", "b"], "x": [1, 2]}),
        pa.table({"prompt": ["c"], "x": ["one"]}),
        pa.table(
            {"prompt": pa.array(["d"], pa.large_string()), "x": pa.array([{"c": 1}], kind("1"))}
        ),
        pa.table(
            {"prompt": pa.array(["e"], pa.large_string()), "x": pa.array([{"c": 2}], kind("2"))}
        ),
        pa.table({"prompt": ["f", "g"], "x": [3, 4]}),
    ]
    for table in tables:
        out = task.process_arrow(table)
        # Nested fields keep their metadata: that of this batch, not of an equal schema.
        assert out.schema.field("x").type.equals(table.schema.field("x").type, check_metadata=True)
        assert out.column("x").to_pylist() == table.column("x").to_pylist()
        assert out.column("prompt").to_pylist() == table.column("prompt").to_pylist()


def test_a_table_of_slices_and_chunks_is_read_as_its_rows() -> None:
    task = placeholder_task()
    whole = pa.table({"prompt": ["a", "bb", "ccc", "dddd"], "id": [1, 2, 3, 4]})
    [batch] = whole.to_batches()
    chunked = pa.Table.from_batches([batch.slice(0, 1), batch.slice(1, 0), batch.slice(1)])
    assert chunked.column("prompt").num_chunks == 3
    for table in (whole.slice(1, 2), chunked):
        out = task.process_arrow(table)
        raw = [meta[f"raw_input_{NAME}"] for meta in out.column(META).to_pylist()]
        assert raw == table.column("prompt").to_pylist()
        assert out.column("id").to_pylist() == table.column("id").to_pylist()


def test_the_model_is_given_each_prompt_as_its_column_holds_it() -> None:
    model = BatchScriptedModel(lambda inputs, n: [[{"images": [b64(b"x")]}] for _ in inputs])
    task = ImageGeneration(image_generation_model=model)
    [plain] = pa.table({"prompt": ["a cat", "", "x" * 300]}).to_batches()
    [mixed] = pa.table({"prompt": ["dég", "a dog", "🐕", ""]}).to_batches()
    # The slice's own text is ASCII; the bytes before it in the buffer are not.
    chunks = [plain, mixed, mixed.slice(1, 1), mixed.slice(3)]
    table = pa.Table.from_batches(chunks)
    task.process_arrow(table)
    [call] = model.calls
    assert call.prompts == ["a cat", "", "x" * 300, "dég", "a dog", "🐕", "", "a dog", ""]
    assert {type(prompt) for prompt in call.prompts} == {str}


@pytest.mark.parametrize(
    "payload", ["YQ===", "YWJjZA===", "Y", "=", "Y=Q=", "YQ==YQ==", "YW Jj", "!!!!", "é"]
)
def test_a_refused_payload_fails_with_the_dict_paths_error(payload: str) -> None:
    task = task_for(lambda inputs, n: [[{"images": [payload]}] for _ in inputs])
    [row] = task.process_batch([{"prompt": "a"}])
    error = f"error_{NAME}"
    expected = row[META][error]
    assert expected.startswith("image 0 of the model's answer is not valid base64")
    out = task.process_arrow(pa.table({"prompt": ["a"]}))
    assert out.column(META).to_pylist()[0][error] == expected


def test_the_python_code_of_the_answers_runs_answer_after_answer() -> None:
    calls: list[str] = []

    class Noted:
        def __init__(self, name: str) -> None:
            self.name = name

        def __str__(self) -> str:
            calls.append(self.name)
            return self.name

    def answers(inputs: list[str], n: int) -> Any:
        return [
            [{"images": [None, Noted(f"payload {i}")], "error": Noted(f"error {i}")}]
            for i in range(len(inputs))
        ]

    task = task_for(answers, num_generations=2)
    task.process_arrow(pa.table({"prompt": ["a", "b", "c"]}))
    answered = [int(name.split()[-1]) for name in calls]
    assert set(answered) == {0, 1, 2}
    assert answered == sorted(answered)


def test_names_holding_a_nul_come_back_whole_in_every_batch() -> None:
    task = placeholder_task()
    tables = [task.process_arrow(pa.table({"prompt": [f"p{i}"], "a\x00b": [i]})) for i in range(3)]
    for i, table in enumerate(tables):
        assert table.column_names == ["prompt", "a\x00b", "image", "model_name", META]
        assert table.column("a\x00b").to_pylist() == [i]
        assert table.schema.metadata == tables[0].schema.metadata
    features = json.loads(tables[0].schema.metadata[b"huggingface"])["info"]["features"]
    assert features["a\x00b"] == {"dtype": "int64", "_type": "Value"}


def test_a_nul_named_null_field_below_a_list_comes_back_whole_for_each_generation() -> None:
    task = placeholder_task(num_generations=2)
    kind = pa.struct([pa.field("x\x00", pa.list_(pa.struct([pa.field("\x00", pa.null())])))])
    upstream = pa.array([{"x\x00": [None, {"\x00": None}]}], kind)
    table = task.process_arrow(pa.table({"prompt": ["a"], META: upstream}))
    table.validate(full=True)
    assert [row["x\x00"] for row in table.column(META).to_pylist()] == [[None, {"\x00": None}]] * 2


class TextImages(ImageGeneration):
    """A hook that writes each row's prompt as its image, and a score of its own."""

    @property
    def outputs(self) -> list[str]:
        return [*super().outputs, "score"]

    @property
    def output_columns(self) -> list[str]:
        return [*super().output_columns, "score"]

    def format_output(self, output: dict[str, Any], input: dict[str, Any] | None = None) -> Any:
        assert input is not None
        return {"image": input["prompt"], "score": len(input["prompt"])}


def test_a_hooks_cells_are_read_as_the_dict_rows_hold_them() -> None:
    prompts = ["YR", "YWJj", "YQ=", "not base64!", "é", ""]
    task = TextImages(image_generation_model=PlaceholderImageGeneration())
    out = task.process_arrow(pa.table({"prompt": prompts}))
    images = [cell["bytes"] for cell in out.column("image").to_pylist()]
    assert images == [b"a", b"abc", b"a", b"not base64!", "é".encode(), b""]
    assert out.column("score").type == pa.int64()
    assert out.column("score").to_pylist() == [2, 4, 3, 11, 1, 0]
    assert out.column("model_name").to_pylist() == ["placeholder"] * 6


class StructImages(ImageGeneration):
    """A hook that writes each row's image as an `Image` struct dict chosen by its prompt."""

    def format_output(self, output: dict[str, Any], input: dict[str, Any] | None = None) -> Any:
        assert input is not None
        return {"image": STRUCTS[input["prompt"]]}


STRUCTS: dict[str, Any] = {
    "both": {"bytes": b"GIF89a", "path": "a.gif"},
    "bytes": {"bytes": "YWJj"},
    "path": {"path": "b.png", "bytes": None},
    "empty": {},
    "none": None,
    "plain": b"xy",
    "extra": {"bytes": b"x", "size": 3},
}


def test_a_hooks_image_struct_dicts_become_image_structs() -> None:
    task = StructImages(image_generation_model=PlaceholderImageGeneration())
    prompts = ["both", "bytes", "path", "empty", "none", "plain"]
    out = task.process_arrow(pa.table({"prompt": prompts}))
    assert out.column("image").type == IMAGE
    assert out.column("image").to_pylist() == [
        {"bytes": b"GIF89a", "path": "a.gif"},
        {"bytes": b"abc", "path": None},
        {"bytes": None, "path": "b.png"},
        None,
        None,
        {"bytes": b"xy", "path": None},
    ]
    with pytest.raises(ReadError) as raised:
        task.process_arrow(pa.table({"prompt": ["both", "extra"]}))
    assert str(raised.value) == (
        "output row 1: 'image' holds a dict with the key 'size', not an Image struct "
        "(its keys are 'bytes' and 'path')"
    )


class BadRawInput(ImageGeneration):
    """A hook that records a raw input that is not text."""

    def complete_rows(self, rows: list[dict[str, Any]]) -> list[Failure]:
        rows[1][META][f"raw_input_{self.name}"] = 5
        return []


def test_a_hooks_cell_of_the_wrong_kind_is_a_read_error_naming_its_row_and_key() -> None:
    task = BadRawInput(image_generation_model=PlaceholderImageGeneration(), name=NAME)
    with pytest.raises(ReadError) as raised:
        task.process_arrow(pa.table({"prompt": ["a", "b"]}))
    assert str(raised.value) == (f"output row 1: 'raw_input_{NAME}' holds a int, expected text")
