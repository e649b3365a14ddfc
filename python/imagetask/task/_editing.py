"""`ImageEditing`: the image-to-image task (an instruction applied to source images)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from imagetask.build._edits import EditBatch, EditColumns, EditRecord
from imagetask.build._input_images import ImageReader
from imagetask.config import RuntimeParameter
from imagetask.errors import ConfigError, InputRowError
from imagetask.models import ImageEditingModel
from imagetask.outcome import Row
from imagetask.task._generation import ImageGeneration
from imagetask.task._task import native_hook

__all__ = ["ImageEditing"]


class ImageEditing(ImageGeneration):
    """Edits the images of the `image` column as the `prompt` column says.

    Input columns: `image` (one image or a list of them, in any form `ImageReader`
    takes: the `Image` struct, bytes, base64, a `data:` URL, a path, a PIL image) and
    `prompt`; with `use_mask`, `mask` too (an image the size of the first image). Output
    columns: `edited_image`, `image_path` (with `save_artifacts`) and `model_name`, as
    `ImageGeneration` writes `image`. The source image stays an input column; the
    recorded raw input is JSON of the prompt and `sha256:` references of the images.
    An image that cannot be read is an `InputRowError` naming the row and the column
    before any request (or that row's failure with `on_invalid_row="fail"`).

    Ungrouped, each of a row's `num_generations` output rows repeats its source image:
    `group_generations=True` keeps one row per source.

    Parameters
    ----------
    image_generation_model:
        An `ImageEditingModel` (a model with `edit`).
    use_mask:
        Read a mask from the `mask` column for every row.
    input_folder:
        The folder relative image paths start from (`run` from the CLI: the input
        file's folder).
    allow_outside_paths:
        Whether image paths may lead outside `input_folder`.

    Examples
    --------
    >>> task = ImageEditing(image_generation_model=model, group_generations=True)
    >>> rows = task.process_batch([{"image": "cat.png", "prompt": "make it a watercolour"}])
    """

    use_mask: bool = False
    input_folder: RuntimeParameter[str] = "."
    allow_outside_paths: bool = False

    image_output = "edited_image"

    def _check_model(self) -> None:
        model = self.image_generation_model
        if not isinstance(model, ImageEditingModel):
            raise ConfigError(
                f"{type(self).__name__}: bad field `image_generation_model` = "
                f"{type(model).__name__}: expected an image editing model (an object with "
                "model_name, load, unload and edit)"
            )

    @property
    def inputs(self) -> list[str]:
        return ["prompt", "image", "mask"] if self.use_mask else ["prompt", "image"]

    @property
    def outputs(self) -> list[str]:
        return ["edited_image", "image_path", "model_name"]

    @property
    def builds_columns_natively(self) -> bool:
        return False

    @property
    def columns(self) -> EditColumns:
        """The dataset columns the task reads."""
        mapped = self.input_mappings
        return EditColumns(
            prompt=mapped.get("prompt", "prompt"),
            image=mapped.get("image", "image"),
            mask=mapped.get("mask", "mask") if self.use_mask else None,
        )

    @property
    def image_inputs(self) -> list[str]:
        columns = self.columns
        return [columns.image] if columns.mask is None else [columns.image, columns.mask]

    def reader(self) -> ImageReader:
        """The reader of the input images."""
        return ImageReader(self.input_folder, allow_outside=self.allow_outside_paths)

    def format_input(  # type: ignore[override]
        self, input: Row, row: int = 0, reader: ImageReader | None = None
    ) -> EditRecord:
        """The prompt and the images of one input row (by the task's input names);
        `row` is its index in the batch, which errors name."""
        reader = reader or self.reader()
        columns = self.columns
        prompt = input["prompt"]
        if not isinstance(prompt, str):
            raise _not_text(row, columns.prompt, prompt)
        images = reader.images(input["image"], row, columns.image)
        mask = None
        if columns.mask is not None:
            mask = reader.mask(input["mask"], images[0], row, columns.mask)
        return EditRecord(prompt=prompt, images=tuple(images), mask=mask)

    @native_hook
    def format_output(self, output: dict[str, Any], input: Row | None = None) -> Row:
        formatted = super().format_output(output, input)
        formatted["edited_image"] = formatted.pop("image")
        return formatted

    def prepare(self, inputs: Iterable[Row]) -> EditBatch:
        """Checks a batch of input rows and reads their images (see `imagetask.build._edits`)."""
        reader = self.reader()
        return EditBatch(
            list(inputs),
            model=self.image_generation_model,
            n=self.num_generations,
            schema=self.output_schema,
            builder=self._builder(),
            read=lambda input, row: self.format_input(input, row, reader),
            columns=self.columns,
            raise_invalid=self.on_invalid_row == "raise",
            format_output=self._hook("format_output"),
            complete_rows=self.complete_rows,
        )


def _not_text(row: int, column: str, value: Any) -> InputRowError:
    return InputRowError(
        f"row {row} of the batch, column '{column}': holds a {type(value).__name__}, "
        "not a text prompt",
        row,
        column,
    )
