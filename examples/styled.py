"""A task of your own: the prompt is a template filled from two input columns.

`imagetask bench --task examples.styled:StyledImages` measures it from the repository's
root; `tests/test_readme.py` runs the README's blocks that use it.
"""

from typing import Any

from imagetask import ImageGeneration


class StyledImages(ImageGeneration):
    """Text-to-image with a prompt built from the `prompt` and `style` columns."""

    template: str = "{prompt}, in the style of {style}"

    @property
    def inputs(self) -> list[str]:
        return ["prompt", "style"]

    def format_input(self, input: dict[str, Any]) -> str:
        return self.template.format(**input)
