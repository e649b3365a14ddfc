"""Backends for tests and benchmarks: `ScriptedModel` answers what it is told,
`ReplayModel` answers with the images of a finished run."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from imagetask import _core
from imagetask.build._converter import RowConverter
from imagetask.config import canonical_type_info
from imagetask.errors import ConfigError, ReadError, RequestError
from imagetask.io._run_folder import RunFolder
from imagetask.io._run_images import RunImages
from imagetask.models._base import Answer, ImageGenerationModel

__all__ = ["Call", "ReplayModel", "ScriptedAnswers", "ScriptedModel"]

Row = dict[str, Any]

ScriptedAnswers = Sequence[Any] | BaseException | Callable[[str, int], Any] | None
"""What a `ScriptedModel` answers: see the class."""

_IMAGE_SIDE = 8


class Call(NamedTuple):
    """One call of a `ScriptedModel`: the prompts it was sent and its arguments."""

    prompts: list[str]
    num_generations: int
    kwargs: dict[str, Any]


class ScriptedModel:
    """A backend whose answers the caller chooses; it needs no network and no base class.

    Parameters
    ----------
    answers:
        `None` (default): every prompt gets `num_generations` dicts of one image each, an
        8x8 PNG (bytes) drawn from the prompt and the generation's index, so every
        (prompt, generation) has an image of its own.
        A sequence: returned as it is by every call, one answer per prompt (its length is
        not checked: a wrong length scripts a broken backend).
        An exception: raised by every call (a whole batch fails).
        A callable: called as `answers(prompt, num_generations)` for each prompt; it returns
        that prompt's answer, or an exception for a request that failed.
    model_name:
        The name recorded in the `model_name` column.

    Attributes
    ----------
    answers:
        What the model answers; it may be changed between calls.
    calls:
        Every call so far, in order (`Call`).
    """

    def __init__(self, answers: ScriptedAnswers = None, *, model_name: str = "scripted") -> None:
        if not (
            answers is None or isinstance(answers, (Sequence, BaseException)) or callable(answers)
        ):
            raise ConfigError(
                f"ScriptedModel: bad `answers`: a {type(answers).__name__}, expected None, a "
                "sequence of answers, an exception or a callable of the prompt"
            )
        self.answers = answers
        self.model_name = model_name
        self.calls: list[Call] = []

    def dump(self) -> dict[str, Any]:
        """The model's name and class, as a run records its task (`run.json`); the scripted
        answers are not data and are left out (a loaded dump answers with the default
        images)."""
        cls = type(self)
        return {
            "model_name": self.model_name,
            "type_info": {"module": cls.__module__, "name": cls.__qualname__},
        }

    def load(self) -> None:
        """Nothing to load."""

    def unload(self) -> None:
        """Nothing to unload."""

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Sequence[Any]:
        """The scripted answers for `inputs` (see the class)."""
        self.calls.append(Call(list(inputs), num_generations, kwargs))
        answers = self.answers
        if answers is None:
            images = _core.placeholder_images(
                inputs,
                num_generations=num_generations,
                seed=0,
                width=_IMAGE_SIDE,
                height=_IMAGE_SIDE,
            )
            return [[{"images": [image]} for image in prompt_images] for prompt_images in images]
        if isinstance(answers, BaseException):
            raise answers
        if isinstance(answers, Sequence):
            return answers
        return [answers(prompt, num_generations) for prompt in inputs]


class _Recorded(NamedTuple):
    """What a finished run recorded: its input rows and each prompt's answers."""

    rows: list[Row]
    answers: dict[str, list[Answer]]
    model_name: str


class ReplayModel(ImageGenerationModel):
    """Answers each prompt with the images and raw outputs a finished run recorded for it.

    A run can so be formatted again (other mappings, other columns) or benchmarked at
    volume without calling the model again. The run's rows (`data.jsonl`, or its Parquet
    shards) are read once, when the model is made, and held in memory. A prompt is found
    by its recorded raw input (`raw_input_<name>`), or, for an `ImageGeneration` run
    without raw inputs, by its prompt column. A prompt the run saw several times gets its
    recorded answers in turn; a generation that failed in the run fails again with its
    error; a prompt the run did not see fails its rows with a `RequestError`.

    Parameters
    ----------
    output_dir:
        The run's output folder (it holds `run.json`).
    """

    output_dir: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self._recorded = _read_run(Path(self.output_dir))
        self._turns: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, output_dir: str | os.PathLike[str]) -> ReplayModel:
        """The replay of the finished run in `output_dir`.

        Raises `ReadError` when the folder holds no finished run, or its rows cannot be
        read (the message names the file and line).
        """
        return cls(output_dir=os.fspath(output_dir))

    @property
    def model_name(self) -> str:
        """The recorded run's model name."""
        return self._recorded.model_name

    @property
    def rows(self) -> list[Row]:
        """The run's input rows in order, one per input row that had a prompt: its first
        output row without the columns the task added (the image, `image_path`,
        `model_name` and metadata columns)."""
        return self._recorded.rows

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> list[Answer]:
        """The recorded answer of each prompt (all its recorded images: the task takes the
        first `num_generations`)."""
        out: list[Any] = []
        with self._lock:
            for prompt in inputs:
                recorded = self._recorded.answers.get(prompt)
                if recorded is None:
                    out.append(
                        RequestError(
                            f"the prompt {prompt!r} is not in the run replayed from "
                            f"{self.output_dir}"
                        )
                    )
                    continue
                turn = self._turns.get(prompt, 0)
                self._turns[prompt] = turn + 1
                out.append(recorded[turn % len(recorded)])
        return out


def _read_run(folder: Path) -> _Recorded:
    run = RunFolder(folder)
    run.summary()  # only a run that ended is replayed
    run.check()
    layout = _Layout(RunImages(run))
    parquet = run.format == "parquet"
    rows: list[Row] = []
    answers: dict[str, list[Answer]] = {}
    model_name = ""
    answer: Answer = []
    for item in run.rows():
        where = item.where
        row = layout.dict_row(item.row, where) if parquet else item.row
        model_name = model_name or str(row.get(layout.model_name, ""))
        prompt = layout.prompt(row, where)
        generations = list(layout.generations(row, where))
        if (layout.grouped or not answer) and prompt is not None:
            rows.append({key: value for key, value in row.items() if key not in layout.added})
        answer.extend(generations)
        if layout.grouped or len(answer) == layout.num_generations:
            if prompt is not None:
                answers.setdefault(prompt, []).append(answer)
            answer = []
    return _Recorded(rows, answers, model_name)


class _Layout:
    """Where a run's rows keep each generation's image, prompt and metadata."""

    def __init__(self, images: RunImages) -> None:
        task = images.run.task
        schema = images.schema
        self.images = images
        self.image = schema.columns[schema.image_output]
        self.path = schema.columns["image_path"]
        self.inlined = schema.image is not None
        self.model_name = schema.model_name
        self.metadata = schema.metadata
        self.added = {self.image, self.path, self.model_name, self.metadata}
        self.raw_output = schema.raw_output
        self.raw_input = schema.raw_input
        self.statistics = schema.statistics
        self.error = schema.error
        self.grouped = schema.grouped
        self.num_generations: int = task.get("num_generations") or 1
        type_info = canonical_type_info(task).get("type_info") or {}
        plain = type_info == {"module": "imagetask.task", "name": "ImageGeneration"}
        inputs: dict[str, str] = task.get("input_mappings") or {}
        self.prompt_column = inputs.get("prompt", "prompt") if plain else None
        self.add_raw_input = schema.add_raw_input
        self._converter = RowConverter(schema, images_as_bytes=True)

    def dict_row(self, row: Row, where: str) -> Row:
        """A row read from Parquet as the dict path gives it, images as their bytes
        (see `imagetask.build._converter`)."""
        return self._converter.row(row, where)

    def prompt(self, row: Row, where: str) -> str | None:
        """The prompt the run sent for this row (`None`: the row was not sent)."""
        if self.add_raw_input:
            metas = self._metas(row, where)
            prompt = metas[0].get(self.raw_input) if metas else None
        elif self.prompt_column is not None:
            prompt = row.get(self.prompt_column)
        else:
            raise ReadError(
                f"{where}: the run recorded no raw input (add_raw_input=False) and its task "
                "is not ImageGeneration, so its images cannot be matched to prompts"
            )
        return prompt if isinstance(prompt, str) else None

    def _metas(self, row: Row, where: str) -> list[dict[str, Any]]:
        meta = row.get(self.metadata)
        metas = meta if self.grouped else [meta]
        if not isinstance(metas, list) or not all(isinstance(m, dict) for m in metas):
            raise ReadError(f"{where}: column '{self.metadata}' does not hold the run's metadata")
        return metas

    def generations(self, row: Row, where: str) -> Iterator[dict[str, Any]]:
        """This row's generations as parts of a model answer (one image each)."""
        column = self.image if self.inlined else self.path
        if column not in row:
            raise ReadError(f"{where}: no image column '{column}'")
        images = row[column] if self.grouped else [row[column]]
        metas = self._metas(row, where)
        if not isinstance(images, list) or len(images) != len(metas):
            raise ReadError(f"{where}: column '{column}' does not match the run's metadata")
        if not self.inlined:
            images = [self._artifact(path, where) for path in images]
        for image, meta in zip(images, metas, strict=True):
            if image is None:
                error = meta.get(self.error) or "the run recorded no image"
                yield {"images": [None], "error": error}
                continue
            raw = meta.get(self.raw_output)
            part = dict(raw) if isinstance(raw, dict) else {}
            part["images"] = [image]
            statistics = meta.get(self.statistics)
            if statistics is not None:
                part["statistics"] = statistics
            yield part

    def _artifact(self, path: Any, where: str) -> bytes | None:
        """The bytes of the artifact file an `image_path` cell names (`None`: no path)."""
        if path is None:
            return None
        if not isinstance(path, str):
            raise ReadError(f"{where}: column '{self.path}' holds a {type(path).__name__}")
        return self.images.artifact(path, where).read_bytes()
