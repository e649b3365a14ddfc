"""An editing batch: a `Batch` whose rows are sent to the model as `EditInput`s.

The task reads each row's images before any request (`read` below: an unreadable image
is an `InputRowError` naming the row and the column, or that row's failure with
`on_invalid_row="fail"`). The native row builder still checks the rows and builds the
output rows; what it records as a row's raw input is `EditRecord.raw_input`: the prompt and
`sha256:` references of the images, never the images themselves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagetask.build._batch import Batch
from imagetask.errors import InputRowError
from imagetask.models import EditInput
from imagetask.outcome import Failure, Row

if TYPE_CHECKING:
    from imagetask._core import RowBuilder
    from imagetask.build._input_images import InputImage
    from imagetask.build._schema import OutputSchema
    from imagetask.models import ImageModel

__all__ = ["EditBatch", "EditColumns", "EditRecord"]


@dataclass(frozen=True)
class EditColumns:
    """The dataset columns an editing task reads (after `input_mappings`)."""

    prompt: str
    image: str
    mask: str | None

    @property
    def by_input(self) -> dict[str, str]:
        """Each task input read (`prompt`, `image`, and `mask` when read) -> its column."""
        named = {"prompt": self.prompt, "image": self.image}
        if self.mask is not None:
            named["mask"] = self.mask
        return named


@dataclass(frozen=True)
class EditRecord:
    """One row's edit: what is sent, and the images it was read from."""

    prompt: str
    images: tuple[InputImage, ...]
    mask: InputImage | None = None

    @property
    def input(self) -> EditInput:
        """The edit as a model takes it."""
        return EditInput(
            prompt=self.prompt,
            images=tuple(image.source for image in self.images),
            mask=self.mask.source if self.mask is not None else None,
        )

    @property
    def raw_input(self) -> str:
        """What the metadata records as the row's input: JSON of the prompt and the
        `sha256:` references of the images (and of the mask) sent."""
        record: dict[str, Any] = {
            "prompt": self.prompt,
            "images": [image.reference for image in self.images],
        }
        if self.mask is not None:
            record["mask"] = self.mask.reference
        return json.dumps(record, ensure_ascii=False)


_Read = Callable[[Row, int], EditRecord]


class EditBatch(Batch):
    """One batch of an editing task's rows (see the module's docstring).

    `read` turns a row (by the task's input names) and its index into its `EditRecord`;
    `raise_invalid`: whether an unreadable row raises (`on_invalid_row="raise"`) rather
    than failing alone; `columns` names the dataset columns, which the errors of the
    model about an input's `image` or `mask` are re-worded with.
    """

    def __init__(
        self,
        rows: list[Row],
        *,
        model: ImageModel,
        n: int,
        schema: OutputSchema,
        builder: RowBuilder,
        read: _Read,
        columns: EditColumns,
        raise_invalid: bool,
        format_output: Callable[..., Row] | None,
        complete_rows: Callable[[list[Row]], list[Failure]],
    ) -> None:
        self.columns = columns
        readings = [
            self._read_row(read, row, index, raise_invalid) for index, row in enumerate(rows)
        ]
        self.records: list[EditRecord] = []
        self.rows_sent: list[int] = []
        pending = iter(enumerate(zip(rows, readings, strict=True)))

        def recorded(view: Row) -> str:
            # The builder calls this for the rows it finds valid, in order: the first
            # read row ahead whose cells are those of `view` is the one.
            for index, (row, reading) in pending:
                if reading is None or not _same_cells(row, view, columns):
                    continue
                if isinstance(reading, InputRowError):
                    raise reading
                self.records.append(reading)
                self.rows_sent.append(index)
                return reading.raw_input
            raise InputRowError(
                "a row's cells changed while the batch was read (its mapping gives other "
                "values each time)",
                len(self.rows_sent),
            )

        super().__init__(
            rows,
            model=model,
            n=n,
            schema=schema,
            builder=builder,
            format_input=recorded,
            format_output=format_output,
            complete_rows=complete_rows,
        )

    def _read_row(
        self, read: _Read, row: Any, index: int, raise_invalid: bool
    ) -> EditRecord | InputRowError | None:
        """The row's edit, or why it cannot be read; `None` for a row the builder will
        refuse itself (not a mapping, a column missing)."""
        named = self.columns.by_input
        if not isinstance(row, Mapping) or any(column not in row for column in named.values()):
            return None
        view = {name: row[column] for name, column in named.items()}
        try:
            return read(view, index)
        except InputRowError as exc:
            if raise_invalid:
                raise
            return exc

    def _edit_inputs(self) -> list[EditInput]:
        return [record.input for record in self.records]

    def generate(self) -> None:
        """Asks the model to edit the images of every valid row (in the calling thread)."""
        if not self.records:
            return
        edit = self.model.edit  # type: ignore[attr-defined]
        self._ask(lambda: edit(self._edit_inputs(), self.n, **self._kwargs(self.model)))

    async def agenerate(self) -> None:
        """`generate` on the running event loop (an async model's requests run on it)."""
        aedit_batch = getattr(self.model, "aedit_batch", None)
        if not self.records:
            return
        if not callable(aedit_batch):
            await asyncio.to_thread(self.generate)
            return
        inputs = self._edit_inputs()
        await self._aask(lambda: aedit_batch(inputs, self.n, **self._kwargs(self.model)))

    def _failed(self, error: Exception) -> None:
        """A model's refusal of an input image is the row's error, raised; any other
        error fails every row."""
        if isinstance(error, InputRowError):
            raise self._renamed(error) from None
        super()._failed(error)

    def _renamed(self, error: InputRowError) -> InputRowError:
        """A model's refusal of its input `error.row` (column `image` or `mask`), said of
        the batch's row and the dataset's column."""
        row = self.rows_sent[error.row] if 0 <= error.row < len(self.rows_sent) else error.row
        column = self.columns.by_input.get(error.column or "")
        why = str(error).removeprefix(f"row {error.row} of the batch: ")
        where = f"row {row} of the batch" + (f", column '{column}'" if column else "")
        return InputRowError(f"{where}: {why}", row, column or error.column)


def _same_cells(row: Mapping[str, Any], view: Row, columns: EditColumns) -> bool:
    """Whether the builder's `view` of a row (by the task's names) holds `row`'s cells."""
    return _same(view.get("prompt"), row[columns.prompt]) and _same(
        view.get("image"), row[columns.image]
    )


def _same(cell: Any, other: Any) -> bool:
    return cell is other or bool(cell == other)
