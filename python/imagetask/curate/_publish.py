"""A finished run's dataset sent to the Hugging Face Hub as a dataset repository.

Exactly the dataset is sent: its data files (`data.jsonl`, or the Parquet shards under
`data/`), its card (`README.md`, written afresh from `run.json`: see
`imagetask.io._card`) and the image files under `artifacts/` that its rows reference.
Nothing of the run's bookkeeping goes: not `checkpoint.json`, `run.json`, the lock file,
`.retry/`, `.staging/`, `gallery/`, `batch-jobs/`, nor any file no row names.

`huggingface_hub` (the `hf` extra) is imported only when sending; it finds the token as
it always does (`HF_TOKEN`, or `hf auth login`) and the Hub at `HF_ENDPOINT`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagetask._extras import require
from imagetask.build._schema import features
from imagetask.errors import ConfigError, ReadError, RequestError
from imagetask.io._card import DatasetCard
from imagetask.io._run_folder import RunFolder
from imagetask.io._run_images import RunImages

__all__ = ["PublishFile", "Published", "dataset_files", "describe_run", "publish"]

_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_ARTIFACTS = "artifacts/"
_EDITING_TASKS = frozenset({"ImageEditing"})
"""Task classes whose datasets are `image-to-image` rather than `text-to-image`."""


@dataclass(frozen=True)
class PublishFile:
    """A file of the dataset: its path in the repository, its size, and where its bytes
    are (`source`, a file of the run, or `data`, made for the upload: the card)."""

    path: str
    size: int
    source: Path | None = None
    data: bytes | None = None


def _parameters(model: dict[str, Any]) -> str:
    """The generation parameters a model's dump records, as `key=value` text."""
    shown = {key: model[key] for key in ("size", "quality", "seed") if model.get(key) is not None}
    kwargs = model.get("generation_kwargs")
    if isinstance(kwargs, dict):
        shown |= kwargs
    return ", ".join(f"{key}={value}" for key, value in shown.items()) or "the model's defaults"


def _kind(dump: Any) -> str:
    info = dump.get("type_info") if isinstance(dump, dict) else None
    return str(info.get("name", "?")) if isinstance(info, dict) else "?"


def describe_run(name: str, report: dict[str, Any]) -> str:
    """How a run's dataset was made, from its `run.json`: the task, the model and its
    parameters, the counts and failures, and where it was selected from."""
    task = report.get("task") or {}
    model = task.get("image_generation_model") or {}
    model_name = model.get("model") or model.get("model_id") or model.get("base_url")
    model_text = f"`{model_name}` ({_kind(model)})" if model_name else f"`{_kind(model)}`"
    text = (
        f"# {name}\n\n"
        f"Images generated with imagetask: task `{_kind(task)}` (`{task.get('name')}`), "
        f"model {model_text}, parameters: {_parameters(model)}; "
        f"{task.get('num_generations', 1)} generation(s) per input row.\n\n"
        "| input rows | output rows | images | failed generations |\n"
        "| --- | --- | --- | --- |\n"
        f"| {report.get('rows_in', 0):,} | {report.get('rows_out', 0):,} | "
        f"{report.get('images', 0):,} | {report.get('failed', 0):,} |"
    )
    selected = report.get("selected_from")
    if isinstance(selected, dict):
        where = " and ".join(f"`{condition}`" for condition in selected.get("where") or [])
        unmatched = (
            f" and {selected.get('dropped_where', 0):,} not matching {where}" if where else ""
        )
        text += (
            f"\n\nSelected from the run `{selected.get('run')}` ({selected.get('rows_in', 0):,} "
            f"input rows): {selected.get('rejected', 0):,} images rejected by hand, "
            f"{selected.get('dropped_failed', 0):,} failed generations{unmatched} left out."
        )
    return text


def _card(run: RunFolder, license: str | None, pretty_name: str | None, size: int) -> DatasetCard:
    report = run.summary().report
    name = pretty_name or run.path.resolve().name
    schema = run.arrow_schema()
    image = RunImages(run).image
    return DatasetCard(
        about=describe_run(name, report),
        format=run.format,
        rows=int(report.get("rows_out", 0)),
        files=len(run.data),
        size=size,
        features=None if schema is None else features(schema, image),
        pretty_name=name,
        license=license,
        task_category=("image-to-image" if _kind(run.task) in _EDITING_TASKS else "text-to-image"),
    )


def _images(run: RunFolder) -> Iterator[tuple[str, Path]]:
    """The image files the rows reference: their paths in the repository and on disk."""
    images = RunImages(run)
    root = run.path.resolve()
    seen: set[str] = set()
    for unit in images.inputs():
        for run_row in unit.rows:
            for generation in images.generations(run_row):
                if generation.path is None or generation.path in seen:
                    continue
                seen.add(generation.path)
                file = images.artifact(generation.path, run_row.where)
                path = file.relative_to(root).as_posix()
                if not path.startswith(_ARTIFACTS):
                    raise ReadError(
                        f"{run_row.where}: the image path {generation.path!r} is not under "
                        f"{_ARTIFACTS}: it is not sent"
                    )
                yield path, file


def dataset_files(
    run: str | Path, *, license: str | None = None, pretty_name: str | None = None
) -> list[PublishFile]:
    """The files `publish` sends for the finished run in `run`: its card first, then its
    data files, then the images its rows reference, each once.

    Raises `ReadError` for a folder without a finished run (`run.json`) or data, a row
    naming an image that is missing or outside `artifacts/`.
    """
    folder = RunFolder(run)
    folder.summary()
    folder.check()
    root = folder.path.resolve()
    data = [
        PublishFile(file.resolve().relative_to(root).as_posix(), file.stat().st_size, file)
        for file in folder.data
    ]
    card = _card(folder, license, pretty_name, sum(file.size for file in data)).text().encode()
    images = [PublishFile(path, file.stat().st_size, file) for path, file in _images(folder)]
    return [PublishFile("README.md", len(card), data=card), *data, *images]


@dataclass(frozen=True)
class Published:
    """What `publish` sent: the repository's URL and the files."""

    url: str
    files: tuple[PublishFile, ...]


def publish(
    run: str | Path,
    repo: str,
    *,
    private: bool = False,
    license: str | None = None,
    pretty_name: str | None = None,
) -> Published:
    """Creates the dataset repository `repo` (`user/name`) on the Hub if it does not exist
    and sends it the files of `dataset_files` in one commit.

    Raises `ConfigError` for a repository id that is not `user/name`, what `dataset_files`
    raises, `MissingExtraError` without `huggingface_hub`, and `RequestError` when the Hub
    refuses (the message is the Hub's).
    """
    if not _REPO.fullmatch(repo):
        raise ConfigError(f"--repo: expected user/name, got {repo!r}")
    files = dataset_files(run, license=license, pretty_name=pretty_name)
    hub = require("huggingface_hub", "hf", "imagetask publish")
    api = hub.HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    operations = [
        hub.CommitOperationAdd(
            path_in_repo=file.path,
            path_or_fileobj=file.data if file.data is not None else str(file.source),
        )
        for file in files
    ]
    try:
        url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.create_commit(
            repo,
            operations=operations,
            repo_type="dataset",
            commit_message=f"Dataset made with imagetask ({len(files)} files)",
        )
    except (hub.errors.HfHubHTTPError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise RequestError(f"publishing to {repo}: {reason}") from None
    return Published(str(url), tuple(files))
