"""A static page to browse a run's images, or to compare two runs prompt by prompt."""

from imagetask.gallery._page import build_gallery

__all__ = ["build_gallery"]
