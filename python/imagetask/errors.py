"""Every exception imagetask raises, in one hierarchy.

```
ImageTaskError                      base of them all
├── ConfigError (ValueError)        a bad field or value for a task, a model or a run
├── InputRowError (ValueError)      an input row cannot be sent to the model
├── ReadError (ValueError)          an input file or one of its rows cannot be read
├── SinkError (ValueError)          output rows cannot be written in the sink's format
├── UsageError (ValueError)         a command-line value that cannot be used
├── RunError (RuntimeError)         a run cannot start or go on
│   └── RunStopped                  a run stopped early: refused requests, failures in a row
├── RequestError (RuntimeError)     a backend request failed for good
│   └── RequestRefused              refused in a way no retry changes (credentials, model)
└── MissingExtraError (ImportError) an optional dependency is not installed
```

RunInterrupted (KeyboardInterrupt)  a run was stopped (Ctrl-C) after writing its finished batches

`RunInterrupted` is a `KeyboardInterrupt`, outside `ImageTaskError` on purpose: like Ctrl-C
itself, no `except Exception` swallows it.

Every class pickles (its arguments are kept in `args`), so errors cross process
boundaries (multiprocessing, Ray, distilabel) intact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagetask.outcome import RunSummary

__all__ = [
    "BudgetReached",
    "ConfigError",
    "ImageTaskError",
    "InputRowError",
    "MissingExtraError",
    "ReadError",
    "RequestError",
    "RequestRefused",
    "RunError",
    "RunInterrupted",
    "RunStopped",
    "SinkError",
    "UsageError",
]


class ImageTaskError(Exception):
    """Base class of every error raised by imagetask."""


class ConfigError(ImageTaskError, ValueError):
    """A task or model was given a field it does not have, or a bad value for one."""


class InputRowError(ImageTaskError, ValueError):
    """An input row cannot be sent to the model: not a mapping, or a column missing.

    Attributes
    ----------
    row:
        The row's index in its batch.
    column:
        The column at fault, when one is.
    """

    def __init__(self, message: str, row: int, column: str | None = None) -> None:
        super().__init__(message, row, column)
        self.row = row
        self.column = column

    def __str__(self) -> str:
        return str(self.args[0])


class ReadError(ImageTaskError, ValueError):
    """An input file or one of its rows cannot be read; the message names the line."""


class SinkError(ImageTaskError, ValueError):
    """Output rows cannot be written in the sink's format."""


class UsageError(ImageTaskError, ValueError):
    """A command-line value that cannot be used."""


class RunError(ImageTaskError, RuntimeError):
    """A run cannot start or go on; the message says why (and names the input line)."""


class RunStopped(RunError):
    """A run stopped early because going on could not succeed: the model refused a request
    in a way no retry changes, or too many generations failed in a row. What it had done is
    written and recorded (`run.json` says how it ended); `resume` goes on from there."""


class RequestError(ImageTaskError, RuntimeError):
    """A request that failed for good (after its retries, or at once when not transient)."""


class RequestRefused(RequestError):
    """A request the server refused in a way no retry can change: refused credentials
    (401, 403) or a model it does not have. A run stops at the first one instead of
    sending every row's request to the same end."""


class BudgetReached(RequestRefused):
    """A request not sent: the most it can cost would take the run past its `max_cost`.
    The run stops there, as at a refusal; a larger budget lets it go on."""


class MissingExtraError(ImageTaskError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __reduce__(self) -> tuple[Any, ...]:
        # ImportError pickles its `name`/`path` keywords, not `args`.
        return (type(self), self.args)


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C) after its finished batches were written; a
    `KeyboardInterrupt`, so that `except Exception` does not swallow it.

    Attributes
    ----------
    summary:
        What the run had done when it stopped.
    """

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(summary)
        self.summary = summary

    def __str__(self) -> str:
        return (
            f"interrupted after {self.summary.rows_in:,} input rows; "
            "run again with resume (--resume) to continue"
        )
