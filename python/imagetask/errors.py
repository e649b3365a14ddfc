"""The exceptions raised by imagetask."""

from __future__ import annotations

__all__ = ["ConfigError", "ImageTaskError", "InputRowError"]


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
        super().__init__(message)
        self.row = row
        self.column = column
