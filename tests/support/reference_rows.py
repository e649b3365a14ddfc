"""A plain-Python reference of the native row builder, for the property tests.

It reads the same task fields as the extension and returns the same rows and failures;
the hypothesis tests check that the two agree on arbitrary rows and answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from imagetask import ImageTask


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def decode(text: str) -> bytes:
    """Standard base64 with optional padding; raises ValueError when invalid."""
    if not text.isascii() or len(text) % 4 == 1:
        raise ValueError
    padded = text + "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise ValueError from None
    if base64.b64encode(data).decode() != padded:  # non-canonical trailing bits
        raise ValueError
    return data


def problem(task: ImageTask, index: int, row: Any) -> str | None:
    if not isinstance(row, Mapping):
        return f"row {index} of the batch is a {type(row).__name__}, not a mapping"
    for name in task.inputs:
        column = task.input_mappings.get(name, name)
        if column not in row:
            keys = ", ".join(repr(key) for key in row) or "none"
            return (
                f"row {index} of the batch lacks the input column '{column}' (its columns: {keys})"
            )
    meta = row.get(task.metadata_column)
    if meta is not None and not isinstance(meta, dict):
        return (
            f"row {index} of the batch has a {type(meta).__name__} in column "
            f"'{task.metadata_column}', expected a dict of metadata"
        )
    column = task.input_mappings.get("prompt", "prompt")
    if not isinstance(row[column], str):
        return (
            f"row {index} of the batch has no text prompt: its column '{column}' holds "
            f"a {type(row[column]).__name__}"
        )
    return None


def read_entry(
    entry: Any, n: int
) -> tuple[list[tuple[dict[str, Any], Any, bool]], str | None, Any]:
    """(generations, error, raw) of one input's entry."""
    if isinstance(entry, BaseException):
        return [], f"the model raised {describe(entry)}", None
    if entry is None:
        return [], "the model returned no answer for this input", None
    if not isinstance(entry, (list, tuple)):
        return (
            [],
            (
                f"the model's answer is {type(entry).__name__}, expected a list of dicts with an "
                "'images' list"
            ),
            entry,
        )
    generations = []
    for index, part in enumerate(entry):
        images = part.get("images") if isinstance(part, dict) else None
        if not isinstance(images, (list, tuple)):
            return (
                [],
                (f"part {index} of the model's answer is not a dict with an 'images' list"),
                entry,
            )
        alone = len(images) == 1 and len(part) == 1
        generations.extend((part, image, alone) for image in images)
    return generations[:n], None, None


def narrowed(part: dict[str, Any], image: Any) -> dict[str, Any]:
    out = {key: value for key, value in part.items() if key != "statistics"}
    out["images"] = [image]
    return out


def reference_rows(
    task: ImageTask, rows: list[Any], answers: Any
) -> tuple[list[dict[str, Any]], list[tuple[int, int, str]]]:
    name, n = task.name, task.num_generations
    out_names = {key: task.output_mappings.get(key, key) for key in ("image", "model_name")}
    prompt_column = task.input_mappings.get("prompt", "prompt")
    model_name = task.image_generation_model.model_name
    problems = {i: problem(task, i, row) for i, row in enumerate(rows)}
    valid = [i for i, p in problems.items() if p is None]

    batch_error = None
    if isinstance(answers, BaseException):
        batch_error = f"the model raised {describe(answers)}"
    elif answers is None:
        batch_error = "the model returned None instead of a list of answers"
    elif not isinstance(answers, (list, tuple)):
        batch_error = (
            f"the model returned {type(answers).__name__}, expected a list of {len(valid)} answers"
        )
    elif len(answers) != len(valid):
        batch_error = (
            f"the model returned {len(answers)} answers for {len(valid)} inputs; "
            "they cannot be matched to rows"
        )
    entries = dict(zip(valid, answers, strict=True)) if batch_error is None else {}

    out: list[dict[str, Any]] = []
    failures: list[tuple[int, int, str]] = []
    for i, row in enumerate(rows):
        base = dict(row) if isinstance(row, Mapping) else {}
        upstream = base.get(task.metadata_column)
        upstream = upstream if isinstance(upstream, dict) else {}
        prompt = base[prompt_column] if problems[i] is None else None
        if problems[i] is not None:
            gens, error, raw = [], problems[i], None
        elif batch_error is not None:
            gens, error, raw = [], batch_error, None
        else:
            gens, error, raw = read_entry(entries[i], n)
        cells = []
        for k in range(n):
            meta = {
                key: value
                for key, value in upstream.items()
                if key not in (f"error_{name}", f"statistics_{name}")
            }
            fail = error
            fail_raw = raw
            if fail is None and k >= len(gens):
                fail = f"the model returned {len(gens)} image(s) for {n} generation(s)"
            if fail is None:
                part, payload, alone = gens[k]
                image, fail = convert(task, part, payload)
                if fail is not None:
                    fail = f"image {k} of the model's answer {fail}"
                    fail_raw = narrowed(part, payload)
            if fail is not None:
                if task.add_raw_output:
                    meta[f"raw_output_{name}"] = fail_raw
                if task.add_raw_input:
                    meta[f"raw_input_{name}"] = prompt
                meta[f"error_{name}"] = fail
                failures.append((i, k, fail))
                cells.append((None, meta))
                continue
            if task.add_raw_output:
                if task.inline_raw_images:
                    meta[f"raw_output_{name}"] = narrowed(part, payload)
                else:
                    data = payload if isinstance(payload, bytes) else decode(payload)
                    ref = "sha256:" + hashlib.sha256(data).hexdigest()
                    meta[f"raw_output_{name}"] = narrowed(part, ref)
            if task.add_raw_input:
                meta[f"raw_input_{name}"] = prompt
            if not alone and part.get("statistics") is not None:
                meta[f"statistics_{name}"] = part["statistics"]
            cells.append((image, meta))
        if task.group_generations:
            out.append(
                {
                    **base,
                    out_names["image"]: [image for image, _ in cells],
                    out_names["model_name"]: model_name,
                    task.metadata_column: [meta for _, meta in cells],
                }
            )
        else:
            for image, meta in cells:
                out.append(
                    {
                        **base,
                        out_names["image"]: image,
                        out_names["model_name"]: model_name,
                        task.metadata_column: meta,
                    }
                )
    return out, failures


def convert(task: ImageTask, part: dict[str, Any], payload: Any) -> tuple[Any, str | None]:
    """The image column's value for a payload, or why the payload is unusable."""
    if payload is None:
        error = part.get("error")
        if error is not None:
            return None, f"is missing: {error}"
        return None, "is None, expected base64 text or bytes"
    if not isinstance(payload, (str, bytes)):
        return None, f"is a {type(payload).__name__}, expected base64 text or bytes"
    if isinstance(payload, str):
        try:
            data = decode(payload)
        except ValueError:
            return None, "is not valid base64"
        if not data:
            return None, "is empty"
        return (data if task.images_as_bytes else payload), None
    if not payload:
        return None, "is empty"
    return (payload if task.images_as_bytes else base64.b64encode(payload).decode()), None
