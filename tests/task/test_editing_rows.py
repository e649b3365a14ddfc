"""Exact output rows of ImageEditing: the dict path, the Arrow path and its errors (SPEC §9)."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image

from imagetask import ConfigError, ImageEditing, InputRowError
from imagetask.build._schema import OutputSchema
from imagetask.columnar import dict_rows
from imagetask.models import EditInput
from imagetask.testing import ScriptedModel
from tests.support.payloads import b64, ref

NAME = "image_editing_0"
META = "distilabel_metadata"


def png(color: str, size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


RED, GREEN, MASK = png("red"), png("green"), png("white")


def edited(input: EditInput, k: int) -> bytes:
    """The image `EditModel` makes: the prompt, the sources' digests and the generation."""
    sources = ",".join(ref(image.data) for image in input.images)
    mask = ref(input.mask.data) if input.mask is not None else "-"
    return f"{input.prompt}|{sources}|{mask}#{k}".encode()


class EditModel:
    """An editing backend that echoes what it was sent (and records its calls)."""

    model_name = "editor"

    def __init__(self, refuse: InputRowError | None = None) -> None:
        self.calls: list[list[EditInput]] = []
        self.refuse = refuse

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def edit(self, inputs: list[EditInput], num_generations: int = 1, **kwargs: Any) -> list[Any]:
        self.calls.append(list(inputs))
        if self.refuse is not None:
            raise self.refuse
        return [
            [{"images": [b64(edited(input, k))]} for k in range(num_generations)]
            for input in inputs
        ]


def raw_input(prompt: str, *images: bytes, mask: bytes | None = None) -> str:
    record: dict[str, Any] = {"prompt": prompt, "images": [ref(image) for image in images]}
    if mask is not None:
        record["mask"] = ref(mask)
    return json.dumps(record)


def test_each_generation_is_a_row_that_repeats_its_source() -> None:
    model = EditModel()
    task = ImageEditing(image_generation_model=model, num_generations=2)
    rows = task.process_batch([{"image": RED, "prompt": "make it blue"}])
    (sent,) = model.calls[0]
    assert sent == EditInput("make it blue", (sent.images[0],))
    assert sent.images[0].data == RED
    assert rows == [
        {
            "image": RED,
            "prompt": "make it blue",
            "edited_image": b64(edited(sent, k)),
            "model_name": "editor",
            META: {
                f"raw_output_{NAME}": {"images": [ref(edited(sent, k))]},
                f"raw_input_{NAME}": raw_input("make it blue", RED),
            },
        }
        for k in range(2)
    ]


def test_grouped_rows_with_a_mask_several_images_and_mappings() -> None:
    model = EditModel()
    task = ImageEditing(
        image_generation_model=model,
        num_generations=2,
        group_generations=True,
        use_mask=True,
        add_raw_output=False,
        input_mappings={"image": "photos", "prompt": "instruction", "mask": "where"},
        output_mappings={"edited_image": "result"},
    )
    (row,) = task.process_batch(
        [{"photos": [RED, {"bytes": GREEN, "path": None}], "instruction": "swap", "where": MASK}]
    )
    (sent,) = model.calls[0]
    assert [image.data for image in sent.images] == [RED, GREEN]
    assert sent.mask is not None and sent.mask.data == MASK
    assert row == {
        "photos": [RED, {"bytes": GREEN, "path": None}],
        "instruction": "swap",
        "where": MASK,
        "result": [b64(edited(sent, 0)), b64(edited(sent, 1))],
        "model_name": "editor",
        META: [{f"raw_input_{NAME}": raw_input("swap", RED, GREEN, mask=MASK)}] * 2,
    }
    assert task.output_schema.image == "result"


def test_a_model_that_does_not_edit_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError) as error:
        ImageEditing(image_generation_model=ScriptedModel())
    assert str(error.value) == (
        "ImageEditing: bad field `image_generation_model` = ScriptedModel: expected an image "
        "editing model (an object with model_name, load, unload and edit)"
    )


def test_an_output_named_as_the_source_column_is_refused() -> None:
    with pytest.raises(
        ConfigError, match="output `edited_image` and input `image` are both named 'image'"
    ):
        ImageEditing(image_generation_model=EditModel(), output_mappings={"edited_image": "image"})


def test_an_unreadable_image_names_its_row_and_column_before_any_request() -> None:
    model = EditModel()
    task = ImageEditing(image_generation_model=model, input_mappings={"image": "photo"})
    rows = [{"photo": RED, "prompt": "a"}, {"photo": b"not an image", "prompt": "b"}]
    with pytest.raises(InputRowError) as error:
        task.process_batch(rows)
    assert str(error.value) == (
        "row 1 of the batch, column 'photo': holds an unreadable image: in no known image format"
    )
    assert (error.value.row, error.value.column) == (1, "photo")
    assert model.calls == []


def test_a_mask_of_another_size_is_an_input_row_error() -> None:
    task = ImageEditing(image_generation_model=EditModel(), use_mask=True)
    with pytest.raises(InputRowError) as error:
        task.process_batch([{"image": RED, "prompt": "a", "mask": png("white", (2, 2))}])
    assert str(error.value) == (
        "row 0 of the batch, column 'mask': holds a 2x2 mask for a 4x4 image: they must have "
        "the same size"
    )


def test_with_on_invalid_row_fail_an_unreadable_image_fails_its_row_only() -> None:
    model = EditModel()
    task = ImageEditing(image_generation_model=model, on_invalid_row="fail")
    rows = task.process_batch([{"image": "", "prompt": "a"}, {"image": GREEN, "prompt": "b"}])
    (sent,) = model.calls[0]
    assert sent.prompt == "b"
    assert rows[0] == {
        "image": "",
        "prompt": "a",
        "edited_image": None,
        "model_name": "editor",
        META: {
            f"raw_output_{NAME}": None,
            f"raw_input_{NAME}": None,
            f"error_{NAME}": "row 0 of the batch, column 'image': holds an empty path",
        },
    }
    assert rows[1]["edited_image"] == b64(edited(sent, 0))
    assert rows[1][META][f"raw_input_{NAME}"] == raw_input("b", GREEN)


def test_an_unreadable_image_is_one_input_row_error_naming_the_dataset_column() -> None:
    task = ImageEditing(image_generation_model=EditModel(), input_mappings={"image": "photo"})
    with pytest.raises(InputRowError) as error:
        task.process_batch([{"photo": RED, "prompt": "a"}, {"photo": "", "prompt": "b"}])
    assert str(error.value) == "row 1 of the batch, column 'photo': holds an empty path"
    assert (error.value.row, error.value.column) == (1, "photo")


def test_a_backend_refusal_names_the_batch_row_and_the_dataset_column() -> None:
    refusal = InputRowError("row 0 of the batch: Backend takes no mask: none", 0, "mask")
    task = ImageEditing(
        image_generation_model=EditModel(refuse=refusal),
        use_mask=True,
        on_invalid_row="fail",
        input_mappings={"mask": "where"},
    )
    rows = [{"image": RED, "prompt": "a"}, {"image": RED, "prompt": "b", "where": MASK}]
    with pytest.raises(InputRowError) as error:
        task.process_batch(rows)
    assert str(error.value) == "row 1 of the batch, column 'where': Backend takes no mask: none"
    assert (error.value.row, error.value.column) == (1, "where")


def test_the_arrow_path_reads_image_structs_and_gives_the_dict_rows() -> None:
    model = EditModel()
    task = ImageEditing(image_generation_model=model, num_generations=2)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": RED, "path": None}, {"bytes": GREEN, "path": "g.png"}], image
            ),
            "prompt": ["blue", "red"],
        }
    )
    out = task.process_arrow(table)
    assert out.num_rows == 4
    assert out.schema.field("edited_image").type == image
    rows = dict_rows(task, out)
    expected = task.process_batch(table.to_pylist())
    assert rows == expected
    assert [row["edited_image"] for row in rows] == [
        b64(edited(sent, k)) for sent in model.calls[0] for k in range(2)
    ]


def test_the_schema_read_back_from_a_dump_is_the_tasks() -> None:
    task = ImageEditing(
        image_generation_model=EditModel(),
        use_mask=True,
        save_artifacts=True,
        input_mappings={"image": "photo", "mask": "where"},
        output_mappings={"edited_image": "result"},
    )
    schema = OutputSchema.of_dump(task.dump())
    assert schema == task.output_schema
    assert (schema.image, schema.image_path, schema.image_inputs) == (
        "result",
        "image_path",
        ("photo", "where"),
    )
