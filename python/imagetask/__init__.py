"""imagetask: turn rows of data into image datasets.

An `ImageTask` formats each input row into a prompt, calls an image generation backend
and builds one output row per generated image with its metadata; the per-row work runs
in the native extension `imagetask._core`.
"""

from imagetask import _core  # noqa: F401  (loaded first: a missing or stale build fails here)
from imagetask.config import RuntimeParameter, Secret, Url
from imagetask.errors import (
    ConfigError,
    ImageTaskError,
    InputRowError,
    MissingExtraError,
    ReadError,
    RequestError,
    RequestRefused,
    RunError,
    RunInterrupted,
    RunStopped,
    SinkError,
)
from imagetask.io import Reader
from imagetask.models import (
    AsyncImageGenerationModel,
    ImageGenerationModel,
    ImageModel,
)
from imagetask.outcome import RunSummary
from imagetask.task import ImageEditing, ImageGeneration, ImageTask

__all__ = [
    "AsyncImageGenerationModel",
    "ConfigError",
    "ImageEditing",
    "ImageGeneration",
    "ImageGenerationModel",
    "ImageModel",
    "ImageTask",
    "ImageTaskError",
    "InputRowError",
    "MissingExtraError",
    "ReadError",
    "Reader",
    "RequestError",
    "RequestRefused",
    "RunError",
    "RunInterrupted",
    "RunStopped",
    "RunSummary",
    "RuntimeParameter",
    "Secret",
    "SinkError",
    "Url",
]
