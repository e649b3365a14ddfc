"""A static page to browse a run's images, or to compare two runs prompt by prompt.

`build_gallery(run)` writes `<run>/gallery/index.html`; `build_gallery(run, other)` writes
`<run>/gallery/compare.html`, where the same prompts of both runs stand side by side. The
page (with `gallery.js`, `gallery.css` and `icon.png`) needs no network and opens from
`file://` as well as from a static server. The rows are kept in `<page>-data/`: `meta.js`
(the runs, their counts, task and storage id, the input columns) and per `CHUNK` prompts
one script of their input columns and images, loaded when the page shows them, and one of
their images' whole metadata (`details-<i>.js`), loaded when the lightbox shows one.
Images are not copied: the page points at the run's artifact files by relative path; a
run without artifacts gets previews written once into `<run>/gallery/thumbs/` (see
`imagetask.gallery._thumbnails`). Each image carries its SHA-256, with which the page's
marks (keep / reject) name it for `imagetask select`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imagetask._durable import own_folder, write_atomic
from imagetask.build._input_images import ImageReader
from imagetask.build._schema import OutputSchema
from imagetask.errors import InputRowError, MissingExtraError, RunError
from imagetask.gallery._thumbnails import Thumbnails
from imagetask.io._run_folder import ImagePayload, RunFolder, image_payload, open_run
from imagetask.io._run_images import GenerationCells, InputRows, RunImages

__all__ = [
    "CHUNK",
    "FOLDER",
    "Entry",
    "Generation",
    "RunView",
    "as_text",
    "build_gallery",
    "compare_entries",
    "facts_of",
    "readable",
    "view_run",
]

FOLDER = "gallery"
"""The page's folder inside the run folder."""

CHUNK = 1000
"""Prompts per data file."""

_PLAIN = re.compile(r"[A-Za-z0-9._-]+")
"""A file name that needs no quoting in a URL."""

_BLOCK = 256
"""Input rows read before the previews they need are made."""

_WORKERS = min(4, os.cpu_count() or 1)
"""Threads making previews (Pillow decodes and encodes without the GIL)."""

_ASSETS = ("gallery.js", "gallery.css", "icon.png")


@dataclass(frozen=True)
class Generation:
    """One generated image as the page shows it.

    Attributes
    ----------
    image:
        The image file's URL relative to the page's folder, or `None` (no image).
    error:
        Why the generation failed, or `None`.
    sha256:
        The hex SHA-256 of the image's bytes (`None`: no image shown), which names the
        image in a marks file.
    facts:
        What the card shows of the metadata (see `facts_of`).
    details:
        The generation's whole metadata, readable, as JSON text (shown in the lightbox).
    """

    image: str | None
    error: str | None = None
    sha256: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    details: str = "{}"


@dataclass(frozen=True)
class Entry:
    """One input row: its prompt, its input columns as text, its generations, and the
    images it was made from (an editing run's sources and mask, `facts` naming each
    one's column as `source`)."""

    prompt: str
    generations: tuple[Generation, ...]
    inputs: dict[str, str] = field(default_factory=dict)
    sources: tuple[Generation, ...] = ()


@dataclass(frozen=True)
class RunView:
    """A run as the page shows it.

    Attributes
    ----------
    name:
        The run folder's name.
    run:
        The run folder.
    models:
        The model names of its rows, in order of appearance.
    entries:
        One per input row, in order.
    thumbnails:
        `resized` or `original` when previews were needed (see `Thumbnails.kind`), else
        `None`.
    prompt_column:
        The input column that holds the prompt.
    """

    name: str
    run: RunFolder
    models: tuple[str, ...]
    entries: tuple[Entry, ...]
    thumbnails: str | None
    prompt_column: str = "prompt"

    @property
    def images(self) -> int:
        """Generations that succeeded."""
        return sum(g.error is None for entry in self.entries for g in entry.generations)

    @property
    def failures(self) -> int:
        """Generations that failed (with or without an image)."""
        return sum(g.error is not None for entry in self.entries for g in entry.generations)

    @property
    def columns(self) -> list[str]:
        """The input columns of its entries, in order of appearance."""
        seen: dict[str, None] = {}
        for entry in self.entries:
            seen.update(dict.fromkeys(entry.inputs))
        return list(seen)

    @property
    def run_id(self) -> str:
        """What names the run in the browser's storage (every `file://` page shares one):
        a digest of its folder's name and of the random key its checkpoint keeps for the
        whole life of the output folder (else of its record), so that the marks of a run
        stay with it through resumes and never show on another run's page."""
        try:
            checkpoint = self.run.checkpoint()
        except RunError:
            checkpoint = None
        if checkpoint is not None and checkpoint.urls is not None:
            secret = checkpoint.urls.key.encode()
        else:
            secret = self.run.record().file.read_bytes()
        digest = hashlib.sha256(b"imagetask gallery run\0" + self.name.encode() + b"\0" + secret)
        return digest.hexdigest()[:32]


@dataclass(frozen=True)
class _Preview:
    """A generation whose image is only in its row: a preview is to be made of `data`."""

    data: bytes
    shown: Generation


_LONG = 2000
"""Characters of a text value the lightbox shows whole; longer ones are cut."""


def readable(value: Any) -> Any:
    """`value` (a metadata value) as the page shows it: JSON types, bytes as their size,
    long text cut, `None` values of an object left out (a Parquet struct holds every key
    of every row)."""
    if isinstance(value, dict):
        return {str(k): readable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [readable(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"({len(value):,} bytes)"
    if isinstance(value, str):
        return value if len(value) <= _LONG else f"{value[:200]}\u2026 ({len(value):,} characters)"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def as_text(value: Any) -> str:
    """An input cell as the card shows it: text as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) <= {"bytes", "path"}:
        shown = readable(value)
        return str(shown.get("path") or shown.get("bytes") or "(no image)")
    return json.dumps(readable(value), ensure_ascii=False)


def facts_of(metadata: dict[str, Any], schema: OutputSchema) -> dict[str, Any]:
    """What the card shows of a generation's metadata, when present: `seed`,
    `revised_prompt`, `latency_s`, `bytes` (the image's size), `tokens` (its usage) and
    `cost_usd`."""
    raw = metadata.get(schema.raw_output)
    raw = raw if isinstance(raw, dict) else {}
    stats = metadata.get(schema.statistics)
    stats = stats if isinstance(stats, dict) else {}
    usage = raw.get("usage")
    usage = usage if isinstance(usage, dict) else stats
    found: dict[str, Any] = {
        "seed": raw.get("seed"),
        "revised_prompt": raw.get("revised_prompt"),
        "latency_s": stats.get("latency_s"),
        "bytes": stats.get("image_bytes"),
        "tokens": usage.get("total_tokens"),
        "cost_usd": stats.get("cost_usd"),
    }
    if found["latency_s"] is None and _number(stats.get("latency_ms")):
        found["latency_s"] = stats["latency_ms"] / 1000
    parts = (usage.get("input_tokens"), usage.get("output_tokens"))
    if found["tokens"] is None and all(type(part) is int for part in parts):
        found["tokens"] = sum(parts)
    kinds = {"revised_prompt": str, "seed": int}
    return {
        name: value
        for name, value in found.items()
        if (isinstance(value, kinds[name]) if name in kinds else _number(value))
        and not isinstance(value, bool)
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Reader:
    """Turns a run's rows into entries, with the column names its task recorded."""

    def __init__(self, run: RunFolder, page_folder: Path) -> None:
        self.images = RunImages(run)
        self.schema = self.images.schema
        self.root = str(run.path.resolve())
        self.real_root = os.path.realpath(self.root)
        self.page_folder = page_folder.resolve()
        inputs = run.task.get("input_mappings") or {}
        self.prompt = inputs.get("prompt", "prompt")
        folder = run.task.get("input_folder")
        self.sources = ImageReader(
            folder if isinstance(folder, str) else None,
            allow_outside=run.task.get("allow_outside_paths") is True,
        )
        self.models: dict[str, None] = {}
        self.thumbnails: Thumbnails | None = None
        self._urls: dict[str, str] = {}
        self._folders: dict[str, str] = {}
        """Folders of image paths -> their real paths."""

    def url(self, file: str) -> str:
        """The URL of the file at path `file`, relative to the page's folder."""
        folder, name = os.path.split(file)
        prefix = self._urls.get(folder)
        if prefix is None:
            try:
                relative = Path(os.path.relpath(folder, self.page_folder)).as_posix()
                prefix = quote(relative, safe="/") + "/"
            except ValueError:  # another drive (Windows)
                prefix = Path(folder).as_uri() + "/"
            self._urls[folder] = prefix
        return prefix + (name if _PLAIN.fullmatch(name) else quote(name))

    def existing(self, path: Any) -> str | None:
        """The file `path` (relative to the run folder) names if it is inside it; a path
        that leads elsewhere (absolute, or through `..`) is not shown."""
        if not isinstance(path, str) or not path:
            return None
        folder, name = os.path.split(os.path.join(self.root, path))
        real = self._folders.get(folder)
        if real is None:
            real = self._folders[folder] = os.path.realpath(folder)
        file = os.path.join(real, name)
        if name in ("", ".", "..") or os.path.islink(file):
            file = os.path.realpath(file)
        inside = file.startswith(self.real_root + os.sep)
        return file if inside and os.path.isfile(file) else None

    def with_previews(
        self, items: list[Generation | _Preview], pool: ThreadPoolExecutor
    ) -> list[Generation]:
        """`items` with each `_Preview` made (in `pool`) and turned into its generation."""
        wanted = [item.data for item in items if isinstance(item, _Preview)]
        if not wanted:
            return items  # type: ignore[return-value]
        if self.thumbnails is None:
            self.thumbnails = Thumbnails(Path(self.root, FOLDER, "thumbs"))
        folder = str(self.thumbnails.folder)
        made = pool.map(self.thumbnails, wanted)
        done = []
        for item in items:
            if isinstance(item, _Preview):
                thumbnail = next(made)
                shown = item.shown
                if thumbnail.name is None:
                    error = shown.error if shown.error is not None else thumbnail.error
                    item = replace(shown, error=error, sha256=None)
                else:
                    item = replace(shown, image=self.url(os.path.join(folder, thumbnail.name)))
            done.append(item)
        return done

    def generation(self, cells: GenerationCells) -> Generation | _Preview:
        """How the page shows one generation; `_Preview` when a preview is to be made."""
        if isinstance(cells.model, str):
            self.models[cells.model] = None
        metadata = cells.metadata if isinstance(cells.metadata, dict) else {}
        error = metadata.get(self.schema.error)
        shown = Generation(
            None,
            None if error is None else str(error),
            facts=facts_of(metadata, self.schema),
            details=json.dumps(readable(metadata), ensure_ascii=True, separators=(",", ":")),
        )
        try:
            payload = image_payload(cells.image)
        except ValueError as exc:
            payload, problem = ImagePayload(None, None), str(exc)
        else:
            problem = "the row has no image"
            if isinstance(cells.path, str) and cells.path:
                problem = f"the image file is missing: {cells.path}"
        file = self.existing(cells.path) or self.existing(payload.path)
        if file is not None:
            data = payload.data or Path(file).read_bytes()
            return replace(shown, image=self.url(file), sha256=hashlib.sha256(data).hexdigest())
        if payload.data:
            sha256 = hashlib.sha256(payload.data).hexdigest()
            return _Preview(payload.data, replace(shown, sha256=sha256))
        return shown if shown.error is not None else replace(shown, error=problem)

    def source_images(self, unit: InputRows) -> list[Generation | _Preview]:
        """The images of an input row's image columns (an editing run's sources and
        mask), read as the run read them, each to be shown as a preview."""
        row = unit.rows[0].row
        items: list[Generation | _Preview] = []
        for column in self.schema.image_inputs:
            try:
                images = self.sources.images(row.get(column), unit.index, column)
            except (InputRowError, MissingExtraError) as exc:
                items.append(Generation(None, str(exc), facts={"source": column}))
                continue
            for image in images:
                shown = Generation(None, sha256=image.sha256, facts={"source": column})
                items.append(_Preview(image.data, shown))
        return items

    def entry(
        self, unit: InputRows, generations: list[Generation], sources: list[Generation]
    ) -> Entry:
        """The entry of an input row: its prompt and input columns, from its first row."""
        row = unit.rows[0].row
        inputs = {name: as_text(value) for name, value in self.images.input_columns(row).items()}
        if self.prompt not in inputs:
            metadata = row.get(self.schema.metadata)
            if isinstance(metadata, list):
                metadata = metadata[0] if metadata else None
            if isinstance(metadata, dict) and metadata.get(self.schema.raw_input) is not None:
                inputs = {self.prompt: as_text(metadata[self.schema.raw_input]), **inputs}
        return Entry(inputs.get(self.prompt, ""), tuple(generations), inputs, tuple(sources))


def view_run(run: RunFolder, page_folder: Path) -> RunView:
    """Reads `run` into entries whose image URLs are relative to `page_folder`.

    Rows are grouped per input row: `num_generations` consecutive rows, or one row when
    the task grouped its generations. Writes previews of images that are in no file, those
    of `_BLOCK` input rows at a time in parallel.
    """
    reader = _Reader(run, page_folder)
    entries: list[Entry] = []
    units = reader.images.inputs()
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="imagetask-gallery") as pool:
        while block := list(islice(units, _BLOCK)):
            items: list[Generation | _Preview] = []
            bounds = []
            for unit in block:
                start = len(items)
                items.extend(reader.source_images(unit))
                middle = len(items)
                for run_row in unit.rows:
                    items.extend(map(reader.generation, reader.images.cells(run_row)))
                bounds.append((start, middle, len(items)))
            done = reader.with_previews(items, pool)
            for unit, (start, middle, end) in zip(block, bounds, strict=True):
                entries.append(reader.entry(unit, done[middle:end], done[start:middle]))
    return RunView(
        name=run.path.resolve().name,
        run=run,
        models=tuple(reader.models),
        entries=tuple(entries),
        thumbnails=None if reader.thumbnails is None else reader.thumbnails.kind,
        prompt_column=reader.prompt,
    )


def compare_entries(a: Sequence[Entry], b: Sequence[Entry]) -> list[tuple[Entry | None, ...]]:
    """Pairs the entries of two runs by prompt: the k-th occurrence of a prompt in `a` with
    its k-th occurrence in `b`, in `a`'s order; then `b`'s prompts that `a` lacks."""
    waiting: defaultdict[str, deque[int]] = defaultdict(deque)
    for index, entry in enumerate(b):
        waiting[entry.prompt].append(index)
    paired: list[tuple[Entry | None, ...]] = []
    used: set[int] = set()
    for entry in a:
        queue = waiting.get(entry.prompt)
        if queue:
            used.add(queue[0])
            paired.append((entry, b[queue.popleft()]))
        else:
            paired.append((entry, None))
    paired.extend((None, entry) for index, entry in enumerate(b) if index not in used)
    return paired


def _encode(generations: Iterable[Generation], dirs: dict[str, int]) -> list[list[Any]]:
    """`[dir, name, facts, error, sha256]` each, trailing nulls left out; `dir` and `name`
    are null without an image, and `sha256` is left out when the name's stem is it (see
    gallery.js)."""
    encoded: list[list[Any]] = []
    for generation in generations:
        item: list[Any] = [None, None, generation.facts, generation.error, generation.sha256]
        if generation.image is not None:
            cut = generation.image.rfind("/") + 1
            item[:2] = dirs.setdefault(generation.image[:cut], len(dirs)), generation.image[cut:]
            if item[1].rpartition(".")[0] == generation.sha256:
                item[4] = None
        while item[-1] is None:
            item.pop()
        encoded.append(item)
    return encoded


def _script(call: str, *args: Any) -> str:
    data = ",".join(json.dumps(arg, ensure_ascii=True, separators=(",", ":")) for arg in args)
    return f"gallery.{call}({data});\n"


def _run_meta(view: RunView, dirs: dict[str, int]) -> dict[str, Any]:
    return {
        "name": view.name,
        "id": view.run_id,
        "task": view.run.task.get("name", ""),
        "models": list(view.models),
        "format": view.run.format,
        "complete": view.run.complete,
        "rows": len(view.entries),
        "images": view.images,
        "failures": view.failures,
        "thumbnails": view.thumbnails,
        "dirs": list(dirs),
        "config": view.run.task,
    }


def _write(path: Path, data: str | bytes) -> None:
    write_atomic(path, data.encode() if isinstance(data, str) else data, durable=False)


def _write_data(
    data: Path, views: list[RunView], rows: list[tuple[Entry | None, ...]], chunk: int
) -> None:
    """Writes `data/<i>.js` for each `chunk` rows, with `data/details-<i>.js` (the whole
    metadata of their generations, loaded by the lightbox), then `data/meta.js`."""
    if data.is_symlink():
        data.unlink()
    elif data.exists():
        shutil.rmtree(data)
    data.mkdir()
    dirs: list[dict[str, int]] = [{} for _ in views]
    columns: dict[str, None] = {}
    for view in views:
        columns.update(dict.fromkeys(view.columns))
    order = list(columns)
    sources = any(entry.sources for view in views for entry in view.entries)
    chunks = []
    for index, start in enumerate(range(0, len(rows), chunk)):
        encoded = []
        details = []
        failing = 0
        for row in rows[start : start + chunk]:
            inputs = next(entry.inputs for entry in row if entry is not None)
            cells = [
                None if entry is None else _encode(entry.generations, dirs[r])
                for r, entry in enumerate(row)
            ]
            if sources:
                cells.extend(
                    None if entry is None else _encode(entry.sources, dirs[r])
                    for r, entry in enumerate(row)
                )
            failing += any(
                entry is not None and any(g.error is not None for g in entry.generations)
                for entry in row
            )
            shown = [inputs.get(name) for name in order]
            while shown and shown[-1] is None:
                shown.pop()
            encoded.append([shown, *cells])
            listed = (
                "null" if entry is None else f"[{','.join(g.details for g in entry.generations)}]"
                for entry in row
            )
            details.append(f"[{','.join(listed)}]")
        _write(data / f"{index}.js", _script("chunk", index, encoded))
        _write(data / f"details-{index}.js", f"gallery.details({index},[{','.join(details)}]);\n")
        chunks.append([len(encoded), failing])
    meta = {
        "version": 2,
        "data": data.name,
        "chunk_size": chunk,
        "entries": len(rows),
        "chunks": chunks,
        "matched": sum(all(entry is not None for entry in row) for row in rows),
        "columns": order,
        "prompt": views[0].prompt_column,
        "marks": len(views) == 1,
        "runs": [_run_meta(view, dirs[r]) for r, view in enumerate(views)],
    }
    if sources:
        meta["sources"] = True
    _write(data / "meta.js", _script("meta", meta))


def build_gallery(
    run: str | Path, compare: str | Path | None = None, *, chunk: int = CHUNK
) -> Path:
    """Writes the page of `run` (compared with the run `compare` if given); returns its path.

    `chunk` is the number of prompts per data file. Raises `ReadError` when a folder is
    not a run or a data file cannot be read.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    first = open_run(run)
    second = None if compare is None else open_run(compare)
    folder = own_folder(first.path / FOLDER)
    views = [view_run(first, folder)]
    if second is None:
        page = "index"
        rows: list[tuple[Entry | None, ...]] = [(entry,) for entry in views[0].entries]
    else:
        page = "compare"
        views.append(view_run(second, folder))
        rows = compare_entries(views[0].entries, views[1].entries)
    _write_data(folder / f"{page}-data", views, rows, chunk)
    assets = resources.files("imagetask.gallery") / "page"
    for name in _ASSETS:
        _write(folder / name, assets.joinpath(name).read_bytes())
    html = assets.joinpath("page.html").read_text(encoding="utf-8")
    target = folder / f"{page}.html"
    _write(target, html.replace("@DATA@", f"{page}-data"))
    return target
