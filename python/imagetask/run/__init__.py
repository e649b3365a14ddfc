"""Running a task over a whole dataset: batches streamed through the model, written whole,
checkpointed, resumable (`_runner`), under a folder lock (`_lock`), with progress
(`_progress`) and the retry of failed generations (`_retry`)."""

from imagetask.run._runner import run

__all__ = ["run"]
