"""From a run to a published dataset: the marks file the gallery page exports
(`_marks`), a run narrowed to the images chosen (`_select`, reading a run's images with
`imagetask.io._run_images`), and a finished run's dataset sent to the Hugging Face Hub
(`_publish`)."""

from imagetask.curate._marks import Mark, Marks, read_marks, write_marks
from imagetask.curate._publish import Published, PublishFile, dataset_files, publish
from imagetask.curate._select import Selection, Where, select

__all__ = [
    "Mark",
    "Marks",
    "PublishFile",
    "Published",
    "Selection",
    "Where",
    "dataset_files",
    "publish",
    "read_marks",
    "select",
    "write_marks",
]
