"""Image generation backends: the base classes and the built-in backends.

`PlaceholderImageGeneration` needs nothing beyond imagetask itself; the HTTP backends need
their extra (`imagetask[openai]`, `imagetask[hf]`), imported when they are first used.
"""

from imagetask.errors import RequestError
from imagetask.models.base import (
    Answer,
    AsyncImageGenerationModel,
    ImageGenerationModel,
    ImageModel,
)
from imagetask.models.hf_inference import InferenceEndpointsImageGeneration
from imagetask.models.openai_batch import OpenAIBatchImageGeneration
from imagetask.models.openai_images import OpenAIImageGeneration
from imagetask.models.placeholder import PlaceholderImageGeneration

__all__ = [
    "Answer",
    "AsyncImageGenerationModel",
    "ImageGenerationModel",
    "ImageModel",
    "InferenceEndpointsImageGeneration",
    "OpenAIBatchImageGeneration",
    "OpenAIImageGeneration",
    "PlaceholderImageGeneration",
    "RequestError",
]
