"""`FailureStreak`: the generations that failed in a row, across a run's batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagetask.outcome import Failure

__all__ = ["FailureStreak"]


class FailureStreak:
    """Counts the generations that failed in a row, in the order of the run's input;
    `limit` of them (0: no limit) stop the run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def add(self, failures: list[Failure], rows: int, n: int) -> Failure | None:
        """Counts the failures of a batch of `rows` input rows, `n` generations each;
        returns the failure at which the count reached the limit, if it did."""
        last = -1
        for failure in sorted(failures):
            index = failure.row * n + failure.generation
            if index == last:
                continue
            self.count = self.count + 1 if index == last + 1 else 1
            last = index
            if self.limit and self.count >= self.limit:
                return failure
        if last != rows * n - 1:
            self.count = 0
        return None
