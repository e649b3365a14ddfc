"""From a run to a published dataset: the marks file the gallery page exports
(`_marks`), a run narrowed to the images chosen (`_select`)."""

from imagetask.curate._marks import Mark, Marks, read_marks, write_marks
from imagetask.curate._select import Selection, Where, select

__all__ = ["Mark", "Marks", "Selection", "Where", "read_marks", "select", "write_marks"]
