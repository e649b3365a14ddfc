"""What a batch and a run produce: the leaf types the rest of the package passes around.

This module imports nothing of imagetask's, so any module can use its types without an
import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["BatchOutput", "Ending", "Failure", "Row", "RunSummary"]

Row = dict[str, Any]
"""A row, input or output: column name -> value."""


class Failure(NamedTuple):
    """A generation that has no image: its row's index in the batch, the generation's
    index and the error recorded in the row's metadata."""

    row: int
    generation: int
    error: str


@dataclass(frozen=True)
class BatchOutput:
    """The output rows of a batch and the generations among them that failed."""

    rows: list[Row]
    failures: list[Failure]


Ending = Literal["complete", "limit", "refused", "failures"]
"""How a run ended: the whole input done; stopped at its `limit`; stopped by a request
the model refused; stopped by failures in a row."""


@dataclass(frozen=True)
class RunSummary:
    """What a run did, as recorded in `run.json`; `data` is the output file, `images` the
    generations that made an image, `failed` those that did not, `ended` how it ended."""

    output: str
    data: str
    rows_in: int
    rows_out: int
    failed: int
    seconds: float
    resumed_from: int
    complete: bool
    images: int = 0
    ended: Ending = "complete"
