"""A kit for testing and benchmarking tasks: scripted backends, hypothesis strategies and
`check_task`.

`ScriptedModel` and `ReplayModel` need nothing beyond imagetask; the strategies
(`imagetask.testing.strategies`) and `check_task` need the `testing` extra (hypothesis),
imported when they are first used.
"""

from imagetask.testing.check import INVARIANTS, Invariant, check_task
from imagetask.testing.models import Call, ReplayModel, ScriptedAnswers, ScriptedModel

__all__ = [
    "INVARIANTS",
    "Call",
    "Invariant",
    "ReplayModel",
    "ScriptedAnswers",
    "ScriptedModel",
    "check_task",
]
