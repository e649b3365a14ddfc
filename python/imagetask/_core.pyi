"""Native core of imagetask: the per-row and per-batch loops of an `ImageTask`."""

from collections.abc import Callable
from typing import Any, final

__all__ = ["RowBuilder"]

@final
class RowBuilder:
    """Builds the output rows of one task configuration.

    `inputs` and `outputs` are `(task name, dataset column)` pairs; the first input is the
    prompt column of the native path, and `outputs` are the columns written on every row
    besides `model_name_column`.
    """

    def __new__(
        cls,
        *,
        task_name: str,
        model_name: Any,
        inputs: list[tuple[str, str]],
        outputs: list[tuple[str, str]],
        num_generations: int,
        group_generations: bool,
        add_raw_output: bool,
        add_raw_input: bool,
        image_bytes: bool,
        inline_raw_images: bool,
        pass_invalid_rows: bool,
        model_name_column: str,
        metadata_column: str,
    ) -> RowBuilder: ...
    def prompts(
        self,
        rows: list[Any],
        format_input: Callable[[dict[str, Any]], Any] | None = None,
    ) -> tuple[list[str], dict[int, str]]:
        """Reads the prompt of every row: `(prompts of the valid rows, {index: problem})`.

        Raises `InputRowError` for the first invalid row unless `pass_invalid_rows`.
        """
    def build(
        self,
        rows: list[Any],
        prompts: list[str],
        answers: Any,
        invalid: dict[int, str],
        format_output: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None,
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int, str]]]:
        """Builds the output rows of a batch: `(rows, [(row, generation, error), ...])`.

        `answers` is what the model returned for the valid rows' prompts (or the exception
        it raised).
        """
