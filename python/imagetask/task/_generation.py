"""`ImageGeneration`: the text-to-image task."""

from __future__ import annotations

import base64
from collections.abc import Generator
from pathlib import Path
from typing import Any

from imagetask.build._artifacts import ArtifactTarget, artifact_target, write_artifacts
from imagetask.config import RuntimeParameter
from imagetask.errors import ConfigError
from imagetask.outcome import Failure, Row
from imagetask.task._task import ImageTask, native_hook

__all__ = ["IMAGE_FORMATS", "ImageGeneration"]

IMAGE_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
"""The formats `image_format` accepts (Pillow's names)."""


class ImageGeneration(ImageTask):
    """Generates images from the `prompt` column.

    Output columns: `image` (base64 text, or bytes with `images_as_bytes`; an `Image`
    struct in Arrow output; left out with `inline_images=False`), `image_path`
    (only with `save_artifacts`) and `model_name`. Every row is built by the native
    extension unless a subclass overrides `format_input` or `format_output`.

    Parameters
    ----------
    save_artifacts:
        Write each image to `<output_dir>/artifacts/<name>/images/<sha256>.<ext>` and set
        `image_path` to that path, relative to `output_dir`, once the file is on disk.
        Identical images are stored once; the file holds the model's bytes as they are.
    inline_images:
        `False`: rows keep the image only as its artifact file (`image_path`), without the
        `image` column, so that each image is stored once; needs `save_artifacts`. The
        images are then written as the model gave them, never encoded as base64 text.
    image_format:
        `None` (default): artifacts keep the model's format. One of `IMAGE_FORMATS`:
        artifacts in another format are converted (Pillow, the `images` extra); an
        image that cannot be converted fails its row only.
    output_dir:
        The folder artifacts are written under (`run` sets it to its output folder).

    Examples
    --------
    >>> task = ImageGeneration(image_generation_model=model, num_generations=2)
    >>> rows = task.process_batch([{"prompt": "a red bicycle"}])
    >>> len(rows)
    2
    """

    save_artifacts: bool = False
    inline_images: bool = True
    image_format: str | None = None
    output_dir: RuntimeParameter[str] = "."

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.inline_images and not self.save_artifacts:
            raise ConfigError(
                "ImageGeneration: inline_images=False keeps each image only as its artifact "
                "file: it needs save_artifacts=True"
            )
        if self.image_format is None:
            return
        image_format = self.image_format.upper()
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(
                f"{type(self).__name__}: bad field `image_format` = {self.image_format!r}: "
                f"expected one of {sorted(IMAGE_FORMATS)}"
            )
        self.image_format = image_format

    @property
    def inputs(self) -> list[str]:
        return ["prompt"]

    @property
    def outputs(self) -> list[str]:
        return ["image", "image_path", "model_name"]

    @property
    def output_columns(self) -> list[str]:
        image = self.image_output
        if not self.save_artifacts:
            return [image]
        return [image, "image_path"] if self.inline_images else ["image_path"]

    @property
    def built_outputs(self) -> list[str]:
        # The artifacts are written from the image column, which `complete_rows` then
        # drops when the images are not inlined.
        written = self.output_columns
        image = self.image_output
        return written if image in written else [image, *written]

    @property
    def builds_images_as_received(self) -> bool:
        return not self.inline_images

    @native_hook
    def complete_rows(self, rows: list[Row]) -> list[Failure]:
        """Writes the artifacts of a batch's rows (with `save_artifacts`)."""
        target = self.artifact_target()
        if target is None:
            return []
        return write_artifacts(
            rows,
            target=target,
            schema=self.output_schema,
            image_format=self.image_format,
            num_generations=self.num_generations,
            keep_images=self.inline_images,
        )

    def artifact_target(self) -> ArtifactTarget | None:
        if not self.save_artifacts:
            return None
        return artifact_target(
            task_name=self.name,
            model_name=self.image_generation_model.model_name,
            output_dir=Path(self.output_dir),
            image_format=self.image_format,
        )

    @property
    def builds_columns_natively(self) -> bool:
        return self.image_format is None

    @property
    def takes_stored_images(self) -> bool:
        hooks = ("format_input", "format_output", "complete_rows")
        return self.builds_columns_natively and not any(self._hook(hook) for hook in hooks)

    @native_hook
    def format_input(self, input: Row) -> str:
        prompt: str = input["prompt"]
        return prompt

    @native_hook
    def format_output(self, output: dict[str, Any], input: Row | None = None) -> Row:
        images = output.get("images") or [None]
        image = images[0]
        if isinstance(image, bytes) and not self.images_as_bytes:
            image = base64.b64encode(image).decode("ascii")
        elif isinstance(image, str) and self.images_as_bytes:
            image = base64.b64decode(image + "=" * (-len(image) % 4))
        return {"image": image, "model_name": self.image_generation_model.model_name}

    def process(self, inputs: list[Row]) -> Generator[list[Row], None, None]:
        yield self.process_batch(inputs)
