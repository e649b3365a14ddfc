"""Running a task over a whole dataset: batches streamed through the model, written whole,
checkpointed, resumable (`_runner`, the loop), into the run's folder (`_state`: its
checkpoint, sink and resume checks; `_images`: the image files synced; `_tables`: Arrow
tables for Parquet), the input read and checked (`_input`), under a folder lock (`_lock`),
with progress (`_progress`), a stop after failures in a row (`_streak`), the retry of
failed generations (`_retry`) and the run's record (`_record`). The task is taken through
`RunnableTask` (`_runnable`): this package imports nothing of `imagetask.task`."""

from imagetask.run._runner import run

__all__ = ["run"]
