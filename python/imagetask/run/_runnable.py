"""`RunnableTask`: what a run needs of a task (`ImageTask` is one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from imagetask.build._batch import Batch
    from imagetask.build._columnar import ArrowBatch
    from imagetask.build._schema import OutputSchema
    from imagetask.models import ImageModel
    from imagetask.outcome import Row

__all__ = ["RunnableTask"]


class RunnableTask(Protocol):
    """A task as a run uses it: its configuration, its model, and its batches.

    A run also sets the task's `output_dir` when it has one, and checks its artifacts
    folder when it has `save_artifacts` set.
    """

    num_generations: int
    """Images per input row (a retry sets it on a copy of the task)."""

    @property
    def name(self) -> str: ...

    @property
    def image_generation_model(self) -> ImageModel: ...

    @property
    def input_batch_size(self) -> int: ...

    @property
    def group_generations(self) -> bool: ...

    @property
    def inputs(self) -> list[str]: ...

    @property
    def input_mappings(self) -> Mapping[str, str]: ...

    @property
    def output_schema(self) -> OutputSchema: ...

    def dump(self) -> dict[str, Any]:
        """The task's configuration as JSON data (recorded in the checkpoint and `run.json`)."""
        ...

    def set_runtime_parameters(self, parameters: dict[str, Any]) -> None: ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def prepare(self, inputs: Iterable[Row]) -> Batch:
        """The batch of `inputs` (see `imagetask.build._batch`)."""
        ...

    def prepare_arrow(self, data: Any) -> ArrowBatch:
        """The batch of an Arrow table's rows (see `imagetask.build._columnar`)."""
        ...
