"""Hugging Face `datasets`: a task run as `Dataset.map(batched=True)` over Arrow batches.

`generate(dataset, task, **map_kwargs)` returns a dataset of the same kind whose rows are
`task.process_arrow`'s (see `imagetask.columnar`): the input columns, `image` as the
`Image()` feature (a list of them with `group_generations`), `image_path` with
`save_artifacts`, `model_name` and the metadata struct, one row per generation; a failed
generation is a row with no image and its error in the metadata.

A `Dataset` is mapped with `datasets`' own cache and progress bar: the result's fingerprint
comes from the dataset's, the task's output identity (`imagetask.io._identity`: its dump, which
holds no secret, the model's class and fields, and the hidden parts of its URLs as digests
under a key kept in the cache folder), the folder it writes its images to and imagetask's
version, so the same task on the same data loads the cached result and a changed task
generates again. A backend that is not a `Configurable` counts by its class alone: pass
`new_fingerprint=` to tell its configurations apart. With `num_proc > 1` each process
gets a pickled copy of the task (without live clients, made again on first use) and
loads it once. An `IterableDataset` is mapped lazily: a batch is generated when iteration
reaches it.
"""

from __future__ import annotations

import secrets
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from imagetask._extras import require
from imagetask.build._columnar import arrow
from imagetask.io._identity import UrlDigests, folder_key, output_identity

if TYPE_CHECKING:
    import pyarrow as pa

    from imagetask.task._task import ImageTask

__all__ = ["fingerprint", "generate", "output_features"]

D = TypeVar("D")

_SET_HERE = ("function", "batched", "input_columns", "with_indices", "with_rank", "fn_kwargs")
"""`map` arguments `generate` sets itself."""
_OUTPUT_NEUTRAL = frozenset(
    {
        "batch_size",
        "cache_file_name",
        "desc",
        "keep_in_memory",
        "load_from_cache_file",
        "num_proc",
        "suffix_template",
        "writer_batch_size",
    }
)
"""`map` arguments that change how the result is made, not what it holds."""


def _datasets() -> Any:
    return require("datasets", "datasets", "imagetask.integrations.datasets")


def _image_feature(task: ImageTask) -> Any:
    """The feature of the task's image column: `Image()`, a list of them when grouped."""
    datasets = _datasets()
    image = datasets.Image()
    return datasets.List(image) if task.group_generations else image


def output_features(task: ImageTask, features: Any) -> Any:
    """The `datasets.Features` of `generate`'s output for input `features`, or `None`
    when they cannot be told before generating (unknown input features, or an output
    column of a task with its own `format_output` whose type its values decide)."""
    datasets = _datasets()
    if features is None:
        return None
    empty = task.process_arrow(features.arrow_schema.empty_table())
    pa = arrow()
    if any(pa.types.is_null(field.type) for field in empty.schema):
        return None
    return datasets.Features.from_dict(task.output_schema.features(empty.schema))


def fingerprint(
    task: ImageTask, dataset_fingerprint: str, map_kwargs: dict[str, Any], key: str
) -> str:
    """The fingerprint of `generate`'s result: the input's fingerprint, the task's output
    identity (its URLs' hidden parts digested under `key`, hex), the folder it writes its
    images to, imagetask's version and the `map` arguments that change the output."""
    hasher = _datasets().fingerprint.Hasher()
    hasher.update(dataset_fingerprint)
    dump = task.dump()
    hasher.update(output_identity(dump, UrlDigests.of(task, key)))
    hasher.update(dump.get("output_dir"))
    hasher.update(version("imagetask"))
    hasher.update(
        {name: value for name, value in sorted(map_kwargs.items()) if name not in _OUTPUT_NEUTRAL}
    )
    digest: str = hasher.hexdigest()
    return digest


def _cache_key(dataset: Any) -> str:
    """The key of the URL digests (see `fingerprint`): kept in the folder where `map` caches
    its result, or new for a dataset in memory or in a folder that cannot keep it (`map`
    cannot cache its result there either)."""
    if dataset.cache_files:
        try:
            return folder_key(Path(dataset.cache_files[0]["filename"]).parent)
        except OSError:
            pass
    return secrets.token_hex(32)


class _Generate:
    """The function `map` calls: one Arrow batch in, the task's output table out. The
    task is loaded once in each process that runs it."""

    def __init__(self, task: ImageTask) -> None:
        self.task = task
        self.loaded = False

    def __getstate__(self) -> dict[str, Any]:
        return {"task": self.task, "loaded": False}

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self.loaded:
            self.task.load()
            self.loaded = True
        return self.task.process_arrow(batch)


def generate(dataset: D, task: ImageTask, **map_kwargs: Any) -> D:
    """Runs `task` over `dataset` (a `datasets.Dataset` or `IterableDataset`) with
    `map(batched=True)` on Arrow batches; returns a dataset of the same kind.

    `batch_size` defaults to `task.input_batch_size`; the other `map` arguments
    (`num_proc`, `desc`, `features`, `new_fingerprint`, ...) are passed through.
    """
    datasets = _datasets()
    for name in _SET_HERE:
        if name in map_kwargs:
            raise TypeError(f"generate sets `{name}` of `map` itself; do not pass it")
    map_kwargs.setdefault("batch_size", task.input_batch_size)
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(
            f"generate takes a datasets.Dataset or IterableDataset, got a {type(dataset).__name__}"
        )
    if "features" not in map_kwargs:
        map_kwargs["features"] = output_features(task, dataset.features)
    declared = map_kwargs["features"] is not None
    function = _Generate(task)
    if isinstance(dataset, datasets.IterableDataset):
        mapped = dataset.with_format("arrow").map(function, batched=True, **map_kwargs)
        result: D = mapped.with_format(None)
        return result
    map_kwargs.setdefault("desc", f"{task.name} ({task.image_generation_model.model_name})")
    if "new_fingerprint" not in map_kwargs:
        key = _cache_key(dataset)
        # `_fingerprint` for want of a public accessor (datasets 5.x has none): it is the
        # attribute the library's cache guide ("The cache") reads, the state `map` itself
        # chains from; `fingerprint.generate_fingerprint` would hash the whole table again.
        map_kwargs["new_fingerprint"] = fingerprint(task, dataset._fingerprint, map_kwargs, key)
    try:
        mapped = dataset.with_format("arrow").map(function, batched=True, **map_kwargs)
    finally:
        if function.loaded:
            task.unload()
    image_column = task.output_schema.image
    if not declared and image_column is not None:
        mapped = mapped.cast_column(image_column, _image_feature(task))
    output: D = mapped.with_format(dataset.format["type"])
    return output
