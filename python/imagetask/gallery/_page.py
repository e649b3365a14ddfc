"""A static page to browse a run's images, or to compare two runs prompt by prompt.

`build_gallery(run)` writes `<run>/gallery/index.html`; `build_gallery(run, other)` writes
`<run>/gallery/compare.html`, where the same prompts of both runs stand side by side. The
page (with `gallery.js`, `gallery.css` and `icon.png`) needs no network and opens from
`file://` as well as from a static server. The rows are kept in `<page>-data/`: `meta.js`
(the runs, their counts and task) and one script per `CHUNK` prompts, loaded when the page
shows them. Images are not copied: the page points at the run's artifact files by
relative path; a run without artifacts gets previews written once into
`<run>/gallery/thumbs/` (see `imagetask.gallery._thumbnails`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imagetask._durable import own_folder, write_atomic
from imagetask.build._schema import OutputSchema
from imagetask.gallery._thumbnails import Thumbnails
from imagetask.io._run_folder import RunFolder, image_payload, open_run

__all__ = [
    "CHUNK",
    "FOLDER",
    "Entry",
    "Generation",
    "RunView",
    "build_gallery",
    "compare_entries",
    "view_run",
]

FOLDER = "gallery"
"""The page's folder inside the run folder."""

CHUNK = 1000
"""Prompts per data file."""

_PLAIN = re.compile(r"[A-Za-z0-9._-]+")
"""A file name that needs no quoting in a URL."""

_BLOCK = 256
"""Rows read before the previews they need are made."""

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
    """

    image: str | None
    error: str | None = None


@dataclass(frozen=True)
class Entry:
    """One input row: its prompt and its generations."""

    prompt: str
    generations: tuple[Generation, ...]


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
    """

    name: str
    run: RunFolder
    models: tuple[str, ...]
    entries: tuple[Entry, ...]
    thumbnails: str | None

    @property
    def images(self) -> int:
        """Generations that succeeded."""
        return sum(g.error is None for entry in self.entries for g in entry.generations)

    @property
    def failures(self) -> int:
        """Generations that failed (with or without an image)."""
        return sum(g.error is not None for entry in self.entries for g in entry.generations)


@dataclass(frozen=True)
class _Preview:
    """A generation whose image is only in its row: a preview is to be made of `data`."""

    data: bytes
    error: str | None


class _Reader:
    """Turns a run's rows into entries, with the column names its task recorded."""

    def __init__(self, run: RunFolder, page_folder: Path) -> None:
        task = run.task
        schema = OutputSchema.of_dump(task)
        inputs = task.get("input_mappings") or {}
        self.run = run
        self.root = str(run.path.resolve())
        self.page_folder = page_folder.resolve()
        self.prompt = inputs.get("prompt", "prompt")
        self.image = schema.columns["image"]
        self.path = schema.columns["image_path"]
        self.model = schema.model_name
        self.metadata = schema.metadata
        self.error_key = schema.error
        self.raw_input_key = schema.raw_input
        self.models: dict[str, None] = {}
        self.thumbnails: Thumbnails | None = None
        self._urls: dict[str, str] = {}

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
        """The URL of `path` (relative to the run folder) if it names a file inside it;
        a path that leads elsewhere (absolute, or through `..`) is not shown."""
        if not isinstance(path, str) or not path:
            return None
        file = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([file, os.path.realpath(self.root)]) != os.path.realpath(self.root):
            return None
        return self.url(file) if os.path.isfile(file) else None

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
                name = thumbnail.name
                url = None if name is None else self.url(os.path.join(folder, name))
                item = Generation(url, item.error if item.error is not None else thumbnail.error)
            done.append(item)
        return done

    def generation(self, image: Any, path: Any, metadata: Any, model: Any) -> Generation | _Preview:
        if isinstance(model, str):
            self.models[model] = None
        error = metadata.get(self.error_key) if isinstance(metadata, dict) else None
        error = None if error is None else str(error)
        url = self.existing(path)
        if url is not None:
            return Generation(url, error)
        shown = Generation(None, "the row has no image")
        if isinstance(path, str) and path:
            shown = Generation(None, f"the image file is missing: {path}")
        try:
            payload = image_payload(image)
        except ValueError as exc:
            payload, shown = None, Generation(None, str(exc))
        if payload is not None:
            url = self.existing(payload.path)
            if url is not None:
                shown = Generation(url)
            elif payload.data:
                return _Preview(payload.data, error)
        return Generation(shown.image, error if error is not None else shown.error)

    def prompt_of(self, row: dict[str, Any]) -> str:
        prompt = row.get(self.prompt)
        if prompt is None:
            metadata = row.get(self.metadata)
            if isinstance(metadata, list):
                metadata = metadata[0] if metadata else None
            if isinstance(metadata, dict):
                prompt = metadata.get(self.raw_input_key)
        return "" if prompt is None else str(prompt)

    def generations(self, row: dict[str, Any], grouped: bool) -> list[Generation | _Preview]:
        cells = [row.get(column) for column in (self.image, self.path, self.metadata, self.model)]
        if not grouped:
            return [self.generation(*cells)]
        count = max((len(cell) for cell in cells if isinstance(cell, list)), default=0)
        return [
            self.generation(*(cell[k] if isinstance(cell, list) else cell for cell in cells))
            for k in range(count)
        ]


def view_run(run: RunFolder, page_folder: Path) -> RunView:
    """Reads `run` into entries whose image URLs are relative to `page_folder`.

    Rows are grouped per input row: `num_generations` consecutive rows, or one row when
    the task grouped its generations. Writes previews of images that are in no file, those
    of `_BLOCK` rows at a time in parallel.
    """
    reader = _Reader(run, page_folder)
    grouped = bool(run.task.get("group_generations"))
    per_input = run.task.get("num_generations")
    per_input = per_input if isinstance(per_input, int) and per_input > 0 else 1
    entries: list[Entry] = []
    prompt = ""
    pending: list[Generation] = []
    rows = (item.row for item in run.rows())
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="imagetask-gallery") as pool:
        while block := list(islice(rows, _BLOCK)):
            items: list[Generation | _Preview] = []
            ends = []
            for row in block:
                items.extend(reader.generations(row, grouped))
                ends.append(len(items))
            done = reader.with_previews(items, pool)
            for row, start, end in zip(block, [0, *ends[:-1]], ends, strict=True):
                if not pending:
                    prompt = reader.prompt_of(row)
                pending.extend(done[start:end])
                if grouped or len(pending) >= per_input:
                    entries.append(Entry(prompt, tuple(pending)))
                    pending = []
    if pending:
        entries.append(Entry(prompt, tuple(pending)))
    return RunView(
        name=run.path.resolve().name,
        run=run,
        models=tuple(reader.models),
        entries=tuple(entries),
        thumbnails=None if reader.thumbnails is None else reader.thumbnails.kind,
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
    """`[dir, name]`, `[dir, name, error]` or `[error]` (see gallery.js)."""
    encoded: list[list[Any]] = []
    for generation in generations:
        if generation.image is None:
            encoded.append([generation.error])
            continue
        cut = generation.image.rfind("/") + 1
        where = dirs.setdefault(generation.image[:cut], len(dirs))
        item = [where, generation.image[cut:]]
        encoded.append(item if generation.error is None else [*item, generation.error])
    return encoded


def _script(call: str, *args: Any) -> str:
    data = ",".join(json.dumps(arg, ensure_ascii=True, separators=(",", ":")) for arg in args)
    return f"gallery.{call}({data});\n"


def _run_meta(view: RunView, dirs: dict[str, int]) -> dict[str, Any]:
    return {
        "name": view.name,
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
    """Writes `data/<i>.js` for each `chunk` rows, then `data/meta.js`."""
    if data.is_symlink():
        data.unlink()
    elif data.exists():
        shutil.rmtree(data)
    data.mkdir()
    dirs: list[dict[str, int]] = [{} for _ in views]
    chunks = []
    for index, start in enumerate(range(0, len(rows), chunk)):
        encoded = []
        failing = 0
        for row in rows[start : start + chunk]:
            prompt = next(entry.prompt for entry in row if entry is not None)
            cells = [
                None if entry is None else _encode(entry.generations, dirs[r])
                for r, entry in enumerate(row)
            ]
            failing += any(len(g) != 2 for cell in cells if cell for g in cell)
            encoded.append([prompt, *cells])
        _write(data / f"{index}.js", _script("chunk", index, encoded))
        chunks.append([len(encoded), failing])
    meta = {
        "version": 1,
        "data": data.name,
        "chunk_size": chunk,
        "entries": len(rows),
        "chunks": chunks,
        "matched": sum(all(entry is not None for entry in row) for row in rows),
        "runs": [_run_meta(view, dirs[r]) for r, view in enumerate(views)],
    }
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
