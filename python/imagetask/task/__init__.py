"""Tasks: what turns an input row into prompts and the model's answers into output rows.

`ImageTask` is the base every task derives from; `ImageGeneration` makes images from a
`prompt` column, `TemplateGeneration` from a prompt built from several columns and
`ImageEditing` from source images and an instruction.
"""

from imagetask.config import publish
from imagetask.outcome import Row
from imagetask.task._editing import ImageEditing
from imagetask.task._generation import IMAGE_FORMATS, ImageGeneration
from imagetask.task._task import ImageTask
from imagetask.task._template import TemplateGeneration

__all__ = [
    "IMAGE_FORMATS",
    "ImageEditing",
    "ImageGeneration",
    "ImageTask",
    "Row",
    "TemplateGeneration",
]

publish(__name__, ImageTask, ImageEditing, ImageGeneration, TemplateGeneration)
