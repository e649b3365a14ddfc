"""Optional dependencies, imported when first needed, with the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from imagetask.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Imports `module`, or raises `MissingExtraError` naming `imagetask[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{needed_by} needs the `{module.split('.')[0]}` package, which is not installed: "
            f"pip install 'imagetask[{extra}]' ({exc})"
        ) from None
