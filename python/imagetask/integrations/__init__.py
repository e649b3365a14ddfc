"""imagetask inside the data engines users already run.

- `imagetask.integrations.datasets.generate(dataset, task, **map_kwargs)`: Hugging Face
  `datasets` (`imagetask[datasets]`), a `Dataset.map` over Arrow batches.
- `imagetask.integrations.ray.generate(dataset, task, concurrency=..., ...)`: Ray Data
  (`imagetask[ray]`), a `map_batches` over actors that each load the task once.

Both run `task.process_arrow` on each batch (see `imagetask.columnar`); the task travels
to other processes by pickling, without its live clients and event loop.
"""

__all__: list[str] = []
