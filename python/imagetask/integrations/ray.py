"""Ray Data: a task run as `map_batches` over actors that each load it once.

`generate(dataset, task, concurrency=N)` returns a lazy `ray.data.Dataset` whose rows are
`task.process_arrow`'s (see `imagetask.columnar`: `image` is the `Image` struct and the
schema names its features, so what `write_parquet` writes loads in `datasets` with
`Image()`). The task travels to each actor pickled, as Ray pickles any argument (a model
class defined in a script goes by value), without its clients or event loop: an actor
makes its own. Each actor loads
the task once, runs one batch at a time (an async backend keeps its `max_concurrency`
requests in flight inside it) and unloads it when Ray shuts the actor down.

What Ray does, and imagetask does not: placing the actors on the cluster's machines,
autoscaling, restarting a worker that died and running its batch again (Ray Data
restarts map actors and retries their tasks by default), reading and writing the data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagetask._extras import require

if TYPE_CHECKING:
    import pyarrow as pa

    from imagetask.task._task import ImageTask

__all__ = ["TaskActor", "generate"]

_SET_HERE = (
    "fn",
    "batch_format",
    "compute",
    "concurrency",
    "fn_args",
    "fn_kwargs",
    "fn_constructor_args",
    "fn_constructor_kwargs",
)
"""`map_batches` arguments `generate` sets itself."""


class TaskActor:
    """The callable class of `map_batches`: loads the task when the actor starts, turns
    each pyarrow batch into the task's output table, unloads the task at teardown."""

    def __init__(self, task: ImageTask) -> None:
        self.task = task
        task.load()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.task.process_arrow(batch)

    def __del__(self) -> None:
        self.task.unload()


def generate(
    dataset: Any,
    task: ImageTask,
    *,
    concurrency: int | tuple[int, int] = 1,
    **map_batches_kwargs: Any,
) -> Any:
    """Runs `task` over a `ray.data.Dataset` on a pool of `concurrency` actors (a count,
    or a `(min, max)` range that Ray scales within); returns the lazy mapped dataset.

    `batch_size` defaults to `task.input_batch_size`; the other arguments of
    `map_batches` (`num_cpus`, `num_gpus`, `memory`, `ray_remote_args`, ...) are passed
    through.
    """
    ray_data = require("ray.data", "ray", "imagetask.integrations.ray")
    for name in _SET_HERE:
        if name in map_batches_kwargs:
            raise TypeError(f"generate sets `{name}` of `map_batches` itself; do not pass it")
    if not isinstance(dataset, ray_data.Dataset):
        raise TypeError(f"generate takes a ray.data.Dataset, got a {type(dataset).__name__}")
    if isinstance(concurrency, tuple):
        low, high = concurrency
        pool = ray_data.ActorPoolStrategy(min_size=low, max_size=high)
    else:
        pool = ray_data.ActorPoolStrategy(size=concurrency)
    remote_args = map_batches_kwargs.pop("ray_remote_args", {})
    map_batches_kwargs.setdefault("batch_size", task.input_batch_size)
    return dataset.map_batches(
        TaskActor,
        fn_constructor_args=(task,),
        batch_format="pyarrow",
        compute=pool,
        **map_batches_kwargs,
        **remote_args,
    )
