"""`TemplateGeneration`: text-to-image from a prompt built from several input columns."""

from __future__ import annotations

import functools
import string

from imagetask.errors import ConfigError
from imagetask.outcome import Row
from imagetask.task._generation import ImageGeneration

__all__ = ["TemplateGeneration", "template_fields"]


@functools.cache
def template_fields(template: str) -> tuple[str, ...]:
    """The fields of a `str.format` template, in order of first use; a `ValueError` says
    why a template cannot be one (no field, a positional or dotted field, bad syntax)."""
    fields: dict[str, None] = {}
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r} is not a format string: {exc}") from None
    for _, field, spec, _ in parts:
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(
                f"{template!r} has the field {{{field}}}: fields are column names, such as "
                "{subject}"
            )
        if spec and "{" in spec:
            raise ValueError(f"{template!r} has a field inside the format of {{{field}}}")
        fields[field] = None
    if not fields:
        raise ValueError(f"{template!r} has no field: name columns in it, such as {{subject}}")
    return tuple(fields)


class TemplateGeneration(ImageGeneration):
    """`ImageGeneration` whose prompt is `template` filled from the row: the template's
    fields (`"a photo of {subject} in {style}"`) are the task's inputs, each read from the
    column of its name (or its `input_mappings` column). The rows, outputs and artifacts
    are those of `ImageGeneration`; the raw input recorded is the filled prompt.

    Examples
    --------
    >>> task = TemplateGeneration(image_generation_model=model, template="{subject}, {style}")
    >>> task.process_batch([{"subject": "a fox", "style": "ink"}])[0]["image"] is not None
    True
    """

    template: str

    def __post_init__(self) -> None:
        try:
            template_fields(self.template)
        except ValueError as exc:
            raise ConfigError(f"{type(self).__name__}: bad field `template`: {exc}") from None
        super().__post_init__()

    @property
    def inputs(self) -> list[str]:
        return list(template_fields(self.template))

    def format_input(self, input: Row) -> str:
        return self.template.format_map({name: input[name] for name in self.inputs})
