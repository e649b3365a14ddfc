"""A run's images read back: its rows gathered by input row, each generation's image (its
bytes, from the row or from the artifact file it names) and whether it failed.

An ungrouped run's rows are read `num_generations` at a time as the images of one input
row; a grouped run has one row per input row, its output columns lists of its images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagetask.build._schema import OutputSchema
from imagetask.errors import ReadError
from imagetask.io._run_folder import RunFolder, RunRow, image_payload

__all__ = ["Generation", "InputRows", "RunImages"]


@dataclass
class Generation:
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
        self.image = schema.columns["image"]
        self.path = schema.columns["image_path"]
        self.lists = [*schema.output_columns, schema.metadata]
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

    def generations(self, run_row: RunRow) -> list[Generation]:
        """The generations of a row (one, or one per list item when grouped)."""
        row = run_row.row
        cells = [row.get(self.image), row.get(self.path), row.get(self.schema.metadata)]
        if not self.grouped:
            return [self._generation(run_row, *cells)]
        count = max((len(cell) for cell in cells if isinstance(cell, list)), default=0)
        return [
            self._generation(
                run_row, *(c[k] if isinstance(c, list) and k < len(c) else None for c in cells)
            )
            for k in range(count)
        ]

    def _generation(self, run_row: RunRow, image: Any, path: Any, metadata: Any) -> Generation:
        try:
            payload = image_payload(image)
        except ValueError as exc:
            raise ReadError(f"{run_row.where}: {exc}") from None
        path = path if isinstance(path, str) and path else payload.path
        data = payload.data
        if data is None and path is not None:
            data = self.artifact(path, run_row.where).read_bytes()
        failed = isinstance(metadata, dict) and metadata.get(self.schema.error) is not None
        return Generation(data, path, failed or data is None)

    def artifact(self, path: str, where: str) -> Path:
        """The file `path` (relative to the run folder) names; `ReadError` when it leads
        out of the run folder or is missing."""
        file = Path(os.path.realpath(self.root / path))
        if Path(path).is_absolute() or not file.is_relative_to(self.root):
            raise ReadError(f"{where}: the image path {path!r} leads out of the run folder")
        if not file.is_file():
            raise ReadError(f"{where}: the image file {path!r} is missing")
        return file
