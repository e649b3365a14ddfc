"""Optional dependencies, imported when first needed, with the command that installs them.

imagetask is installed from its source folder (a clone), so an extra is installed from
there too: `pip install '.[arrow]'` (no package index serves `imagetask`).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from imagetask.errors import MissingExtraError

__all__ = ["install_hint", "require"]


def install_hint(extra: str) -> str:
    """The command that installs the optional dependencies of `extra`."""
    return f"pip install '.[{extra}]' in the imagetask source folder"


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Imports `module`, or raises `MissingExtraError` with the `install_hint` of `extra`."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{needed_by} needs the `{module.split('.')[0]}` package, which is not installed: "
            f"{install_hint(extra)} ({exc})"
        ) from None
