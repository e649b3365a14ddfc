"""A run's images read back: its rows gathered by input row, each row's input columns, and
each generation's cells (image, artifact path, metadata, model) or its image (its bytes,
from the row or from the artifact file it names) and whether it failed.

An ungrouped run's rows are read `num_generations` at a time as the images of one input
row; a grouped run has one row per input row, its output columns lists of its images.
The gallery page and `imagetask select` both name an image by its input row, its
generation and the SHA-256 of its bytes, so both read the run through `RunImages`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagetask.build._converter import RowConverter
from imagetask.build._schema import OutputSchema
from imagetask.errors import ReadError
from imagetask.io._run_folder import RunFolder, RunRow, image_payload

__all__ = ["GeneratedImage", "GenerationCells", "InputRows", "RunImages"]


@dataclass(frozen=True)
class GenerationCells:
    """One generation's cells of a row, as the row holds them (`None` where it has none).

    Attributes
    ----------
    image:
        The image cell (bytes, base64 text, a `{bytes, path}` struct, `None`).
    path:
        The artifact path cell.
    metadata:
        The metadata (a dict for a row the task wrote; of a Parquet run, its raw output
        and statistics parsed from their JSON text and its null fields left out, as a
        JSONL run has it).
    model:
        The model name cell.
    """

    image: Any
    path: Any
    metadata: Any
    model: Any


@dataclass
class GeneratedImage:
    """One generation of an input row: its image's bytes and path, and whether it failed."""

    data: bytes | None
    path: str | None
    failed: bool

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 of the image's bytes (`None`: no image)."""
        return None if self.data is None else hashlib.sha256(self.data).hexdigest()


@dataclass
class InputRows:
    """The rows of one input row (one row when grouped, else one per generation)."""

    index: int
    rows: list[RunRow] = field(default_factory=list)


class RunImages:
    """Reads a run's rows as input rows and generations, by the columns its task recorded."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self.root = run.path.resolve()
        schema = OutputSchema.of_dump(run.task)
        self.schema = schema
        self.grouped = schema.grouped
        self.image = schema.columns[schema.image_output]
        self.path = schema.columns["image_path"]
        self.lists = [*schema.output_columns, schema.metadata]
        self.outputs = {*schema.columns.values(), schema.model_name, schema.metadata}
        self.converter = (
            RowConverter(schema, images_as_bytes=True) if run.format == "parquet" else None
        )
        count = run.task.get("num_generations")
        self.per_input = count if type(count) is int and count > 0 else 1

    def inputs(self) -> Iterator[InputRows]:
        """The run's rows gathered by input row, in order."""
        current = InputRows(0)
        for run_row in self.run.rows():
            current.rows.append(run_row)
            if self.grouped or len(current.rows) >= self.per_input:
                yield current
                current = InputRows(current.index + 1)
        if current.rows:
            yield current

    def input_columns(self, row: dict[str, Any]) -> dict[str, Any]:
        """The cells of `row` that are not the task's outputs or its metadata, in order."""
        return {name: value for name, value in row.items() if name not in self.outputs}

    def cells(self, run_row: RunRow) -> list[GenerationCells]:
        """The cells of each generation of a row (one, or one per list item when grouped);
        `ReadError` naming the row for a Parquet metadata JSON field that is not JSON."""
        row = run_row.row
        columns = (self.image, self.path, self.schema.metadata, self.schema.model_name)
        cells = [row.get(column) for column in columns]
        if self.converter is not None:
            converter = self.converter
            cells[2] = (
                [converter.metadata(item, run_row.where) for item in cells[2]]
                if isinstance(cells[2], list)
                else converter.metadata(cells[2], run_row.where)
            )
        if not self.grouped:
            return [GenerationCells(*cells)]
        image, path, metadata, model = cells
        count = max((len(cell) for cell in cells[:3] if isinstance(cell, list)), default=0)

        def item(cell: Any, k: int) -> Any:
            return cell[k] if isinstance(cell, list) and k < len(cell) else None

        return [
            GenerationCells(
                item(image, k),
                item(path, k),
                item(metadata, k),
                item(model, k) if isinstance(model, list) else model,
            )
            for k in range(count)
        ]

    def generations(self, run_row: RunRow) -> list[GeneratedImage]:
        """The generations of a row, each image's bytes read; `ReadError` naming the row
        for an image cell that is not one or an artifact file that is missing."""
        return [self._generation(run_row, cells) for cells in self.cells(run_row)]

    def _generation(self, run_row: RunRow, cells: GenerationCells) -> GeneratedImage:
        try:
            payload = image_payload(cells.image)
        except ValueError as exc:
            raise ReadError(f"{run_row.where}: {exc}") from None
        path = cells.path if isinstance(cells.path, str) and cells.path else payload.path
        data = payload.data
        if data is None and path is not None:
            data = self.artifact(path, run_row.where).read_bytes()
        metadata = cells.metadata
        failed = isinstance(metadata, dict) and metadata.get(self.schema.error) is not None
        return GeneratedImage(data, path, failed or data is None)

    def artifact(self, path: str, where: str) -> Path:
        """The file `path` (relative to the run folder) names; `ReadError` when it leads
        out of the run folder or is missing."""
        file = Path(os.path.realpath(self.root / path))
        if Path(path).is_absolute() or not file.is_relative_to(self.root):
            raise ReadError(f"{where}: the image path {path!r} leads out of the run folder")
        if not file.is_file():
            raise ReadError(f"{where}: the image file {path!r} is missing")
        return file
