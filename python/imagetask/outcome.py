"""What a batch and a run produce: the leaf types the rest of the package passes around.

This module imports nothing of imagetask's, so any module can use its types without an
import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["BatchOutput", "Cost", "Ending", "Failure", "Row", "RunSummary"]

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


@dataclass(frozen=True)
class Cost:
    """An estimated cost in US dollars, of the `images` images whose backend priced them
    (their statistics' `cost_usd`)."""

    usd: float = 0.0
    images: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.usd + other.usd, self.images + other.images)

    def describe(self, images: int) -> str:
        """The cost as a reader sees it, of a run that made `images` images: `$0.1234`,
        saying how many it covers when some were not priced, or `unknown`."""
        if not self.images:
            return "unknown"
        text = f"${self.usd:,.4f}"
        if self.images < images:
            text += f" (for the {self.images:,} of {images:,} images priced)"
        return text


Ending = Literal["complete", "limit", "refused", "failures", "budget"]
"""How a run ended: the whole input done; stopped at its `limit`; stopped by a request
the model refused; stopped by failures in a row; stopped before a request would pass
its `max_cost`."""


@dataclass(frozen=True)
class RunSummary:
    """What a run did, as recorded in `run.json`; `data` is the output file, `images` the
    generations that made an image, `failed` those that did not, `ended` how it ended.
    `cost_usd` is the run's estimated cost in US dollars, summed over its sessions from
    the images' `cost_usd` (`None`: unknown, no image was priced), and `priced_images`
    how many images it covers."""

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
    cost_usd: float | None = None
    priced_images: int = 0

    def cost_text(self) -> str:
        """The estimated cost as a reader sees it (see `Cost.describe`)."""
        return Cost(self.cost_usd or 0.0, self.priced_images).describe(self.images)
