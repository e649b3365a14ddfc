"""Image generation and editing backends: the base classes and the built-in backends.

`PlaceholderImageGeneration` needs nothing beyond imagetask itself; the HTTP backends need
their extra (`imagetask[openai]`, `imagetask[hf]`), imported when they are first used.
"""

from imagetask.config import publish
from imagetask.errors import RequestError
from imagetask.models._base import (
    Answer,
    AsyncImageEditingModel,
    AsyncImageGenerationModel,
    EditInput,
    ImageEditingModel,
    ImageFile,
    ImageGenerationModel,
    ImageModel,
    SourceImage,
)
from imagetask.models._hf_inference import InferenceEndpointsImageGeneration
from imagetask.models._openai_images import OpenAIImageGeneration
from imagetask.models._placeholder import PlaceholderImageGeneration
from imagetask.models.openai_batch import OpenAIBatchImageGeneration

__all__ = [
    "Answer",
    "AsyncImageEditingModel",
    "AsyncImageGenerationModel",
    "EditInput",
    "ImageEditingModel",
    "ImageFile",
    "ImageGenerationModel",
    "ImageModel",
    "InferenceEndpointsImageGeneration",
    "OpenAIBatchImageGeneration",
    "OpenAIImageGeneration",
    "PlaceholderImageGeneration",
    "RequestError",
    "SourceImage",
]

publish(
    __name__,
    AsyncImageEditingModel,
    AsyncImageGenerationModel,
    ImageGenerationModel,
    InferenceEndpointsImageGeneration,
    OpenAIBatchImageGeneration,
    OpenAIImageGeneration,
    PlaceholderImageGeneration,
)
