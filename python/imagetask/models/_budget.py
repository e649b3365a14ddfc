"""A run's spending limit (`max_cost`): each request reserves the most it can cost before
it is sent, and the reservation becomes what the answer cost once it comes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["CostBudget", "RequestCost", "Verdict"]

T = TypeVar("T")

Verdict = Literal["reserved", "wait", "refused"]
"""What a reservation met: room for it; no room until the requests under way are
answered (they may cost less than they reserved); no room whatever they cost."""


@dataclass(frozen=True)
class RequestCost(Generic[T]):
    """What one request costs: `most`, known before it is sent (`None`: it cannot be
    bounded), and `actual`, from its answer (`None`: not known, then `most` is counted)."""

    most: float | None
    actual: Callable[[T], float | None]


class CostBudget:
    """`limit` US dollars for a run, shared by every request of its model (whatever
    thread or event loop sends them).

    `spent` starts at what the run's earlier sessions recorded. A request is sent only
    once `reserve` found room for the most it can cost beside what was spent and what
    the requests under way reserved; `settle` then replaces its reservation with what it
    cost. So the spending never passes `limit`, however many requests are in flight.
    """

    def __init__(self, limit: float, spent: float = 0.0) -> None:
        self.limit = limit
        self.spent = spent
        self._reserved = 0.0
        self._under_way = 0
        self._lock = threading.Lock()

    def count_spent(self, usd: float) -> None:
        """Counts `usd` spent before (the run's earlier sessions)."""
        with self._lock:
            self.spent += usd

    def reserve(self, most: float) -> Verdict:
        """Reserves `most` for a request when there is room for it (see `Verdict`)."""
        with self._lock:
            if self.spent + self._reserved + most <= self.limit:
                self._reserved += most
                self._under_way += 1
                return "reserved"
            return "wait" if self._under_way else "refused"

    def settle(self, most: float, cost: float) -> None:
        """A request that reserved `most` was answered, or failed: it cost `cost`."""
        with self._lock:
            self._reserved = max(self._reserved - most, 0.0)
            self._under_way -= 1
            self.spent += cost
