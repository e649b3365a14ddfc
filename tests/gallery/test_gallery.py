"""The data the gallery page is built from: entries, images, failures, data files, the command."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imagetask import ImageGeneration, RunInterrupted
from imagetask.build._schema import OutputSchema
from imagetask.cli import main
from imagetask.errors import ReadError
from imagetask.gallery._page import (
    Entry,
    Generation,
    as_text,
    build_gallery,
    compare_entries,
    facts_of,
    readable,
    view_run,
)
from imagetask.gallery._thumbnails import Thumbnails
from imagetask.io._run_folder import ImagePayload, image_payload, open_run
from imagetask.models import PlaceholderImageGeneration
from tests.support.gallery_runs import (
    CAT,
    CAT_ERROR,
    MOON,
    MOON_ERRORS,
    PROMPTS,
    FlakyPlaceholder,
    make_run,
)
from tests.support.repository import EXAMPLES
from tests.support.runs import StopsAt30

ARTIFACTS = "../artifacts/image_generation_0/images/"


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]


def script_data(file: Path, call: str) -> Any:
    """The argument list of `gallery.<call>(...)` in a data script."""
    text = file.read_text(encoding="ascii")
    assert text.startswith(f"gallery.{call}(") and text.endswith(");\n")
    return json.loads(f"[{text[len(call) + 9 : -3]}]")


def on_disk(page_folder: Path, url: str) -> Path:
    """The file a URL relative to the page's folder names."""
    return Path(os.path.normpath(page_folder / unquote(url)))


def expected_errors(index: int) -> list[str | None]:
    if index == MOON:
        return list(MOON_ERRORS)
    if index == CAT:
        return [None, CAT_ERROR]
    return [None, None]


@pytest.fixture(scope="module")
def artifacts_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "with-artifacts"
    make_run(folder)
    return folder


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    return copy


def shown(generation: Generation) -> tuple[str | None, str | None]:
    return generation.image, generation.error


def test_a_run_with_artifacts_points_at_its_files(artifacts_run: Path) -> None:
    run = open_run(artifacts_run)
    view = view_run(run, artifacts_run / "gallery")
    rows = rows_of(artifacts_run)
    assert len(rows) == 2 * len(PROMPTS)
    assert [entry.prompt for entry in view.entries] == PROMPTS
    assert [entry.inputs for entry in view.entries] == [{"prompt": p} for p in PROMPTS]
    assert (view.name, view.models, view.thumbnails) == ("with-artifacts", ("placeholder",), None)
    assert (len(view.entries), view.images, view.failures) == (12, 21, 3)
    assert view.columns == ["prompt"]
    for index, entry in enumerate(view.entries):
        for k, error in enumerate(expected_errors(index)):
            row = rows[2 * index + k]
            generation = entry.generations[k]
            metadata = row["distilabel_metadata"]
            assert json.loads(generation.details) == metadata
            if error:
                assert (shown(generation), generation.sha256) == ((None, error), None)
                assert generation.facts == {}
                continue
            data = base64.b64decode(row["image"])
            assert shown(generation) == ("../" + row["image_path"], None)
            assert generation.sha256 == hashlib.sha256(data).hexdigest()
            assert generation.facts == {"seed": 0, "bytes": len(data)}
            assert metadata["statistics_image_generation_0"] == {"image_bytes": len(data)}
    for entry in view.entries:
        for generation in entry.generations:
            if generation.image is not None:
                assert generation.image.startswith(ARTIFACTS)
                data = on_disk(artifacts_run / "gallery", generation.image).read_bytes()
                assert generation.image == ARTIFACTS + hashlib.sha256(data).hexdigest() + ".png"


def test_without_artifacts_previews_are_written_once(tmp_path: Path) -> None:
    make_run(tmp_path / "run", save_artifacts=False)
    rows = rows_of(tmp_path / "run")
    view = view_run(open_run(tmp_path / "run"), tmp_path / "run" / "gallery")
    thumbs = tmp_path / "run" / "gallery" / "thumbs"
    assert view.thumbnails == "resized"
    assert (view.images, view.failures) == (21, 3)
    for index, entry in enumerate(view.entries):
        for k, generation in enumerate(entry.generations):
            row = rows[2 * index + k]
            assert generation.error == expected_errors(index)[k]
            if generation.error:
                assert row["image"] is None and generation.image is None
                continue
            original = base64.b64decode(row["image"])
            assert generation.image == f"thumbs/{hashlib.sha256(original).hexdigest()}.png"
            # 64x64 PNGs: small enough to be shown as they are.
            assert (thumbs.parent / generation.image).read_bytes() == original
    assert len(list(thumbs.iterdir())) == 21
    stamps = {file.name: file.stat().st_mtime_ns for file in thumbs.iterdir()}
    again = view_run(open_run(tmp_path / "run"), tmp_path / "run" / "gallery")
    assert again.entries == view.entries
    assert {file.name: file.stat().st_mtime_ns for file in thumbs.iterdir()} == stamps


def test_parquet_run_reads_like_the_jsonl_run(tmp_path: Path) -> None:
    make_run(tmp_path / "jsonl", save_artifacts=False)
    make_run(tmp_path / "parquet", save_artifacts=False, format="parquet")
    jsonl = view_run(open_run(tmp_path / "jsonl"), tmp_path / "jsonl" / "gallery")
    parquet = view_run(open_run(tmp_path / "parquet"), tmp_path / "parquet" / "gallery")
    assert open_run(tmp_path / "parquet").format == "parquet"
    assert parquet.entries == jsonl.entries
    assert parquet.entries[0].generations[0].facts["seed"] == 0
    assert (parquet.images, parquet.failures) == (21, 3)


def _hub_table(rows: list[dict[str, Any]], image: str) -> pa.Table:
    """The rows as the Hugging Face layout has them: the metadata a struct, the image a
    `{bytes, path}` struct (`image="struct"`), its file's path only (`"path"`, without the
    `image_path` column) or base64 text (`"text"`)."""
    hub = []
    for row in rows:
        data = None if row["image"] is None else base64.b64decode(row["image"])
        if image == "struct":
            row = {**row, "image": {"bytes": data, "path": None}}
        elif image == "path":
            path = row.pop("image_path")
            row = {**row, "image": {"bytes": None, "path": path}}
        hub.append(row)
    return pa.Table.from_pylist(hub)


@pytest.mark.parametrize("image", ["struct", "path", "text"])
def test_hugging_face_shards(artifacts_run: Path, tmp_path: Path, image: str) -> None:
    run = copy_run(artifacts_run, tmp_path)
    table = _hub_table(rows_of(run), image)
    assert pa.types.is_struct(table.schema.field("distilabel_metadata").type)
    (run / "data.jsonl").unlink()
    (run / "data").mkdir()
    pq.write_table(table.slice(0, 10), run / "data" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(10), run / "data" / "train-00001-of-00002.parquet")
    folder = open_run(run)
    assert [path.name for path in folder.data] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    view = view_run(folder, run / "gallery")
    expected = view_run(open_run(artifacts_run), artifacts_run / "gallery")
    assert view.entries == expected.entries
    assert not (run / "gallery" / "thumbs").exists()


def test_grouped_generations_give_the_same_entries(tmp_path: Path) -> None:
    make_run(tmp_path / "flat")
    make_run(tmp_path / "grouped", group_generations=True)
    assert len(rows_of(tmp_path / "grouped")) == len(PROMPTS)
    flat = view_run(open_run(tmp_path / "flat"), tmp_path / "flat" / "gallery")
    grouped = view_run(open_run(tmp_path / "grouped"), tmp_path / "grouped" / "gallery")
    assert grouped.entries == flat.entries


def test_mapped_columns_and_a_run_under_way(tmp_path: Path) -> None:
    task = ImageGeneration(
        image_generation_model=FlakyPlaceholder(size="8x8"),
        input_mappings={"prompt": "caption"},
        output_mappings={"image": "picture", "image_path": "file"},
        metadata_column="meta",
        save_artifacts=True,
        num_generations=1,
    )
    rows = [{"caption": "a moon"}, {"caption": "a sun"}, {"caption": "a star"}]
    task.run(rows, tmp_path / "run", limit=2)
    (tmp_path / "run" / "run.json").unlink()  # the checkpoint tells the task as well
    run = open_run(tmp_path / "run")
    assert run.complete is False
    view = view_run(run, tmp_path / "run" / "gallery")
    sun = rows_of(tmp_path / "run")[1]["file"]
    assert [(entry.prompt, entry.inputs) for entry in view.entries] == [
        ("a moon", {"caption": "a moon"}),
        ("a sun", {"caption": "a sun"}),
    ]
    assert [[shown(g) for g in entry.generations] for entry in view.entries] == [
        [(None, "image 0 of the model's answer is missing: the server said 503: try later")],
        [("../" + sun, None)],
    ]
    data = (tmp_path / "run" / sun).read_bytes()
    assert view.entries[1].generations[0].sha256 == hashlib.sha256(data).hexdigest()
    assert json.loads(view.entries[1].generations[0].details)["statistics_image_generation_0"] == {
        "image_bytes": len(data)
    }


def test_a_missing_image_file_is_shown_as_a_failure(tmp_path: Path, artifacts_run: Path) -> None:
    run = copy_run(artifacts_run, tmp_path)
    rows = rows_of(run)
    (run / rows[0]["image_path"]).unlink()
    lines = [json.dumps({**row, "image": None}) for row in rows]
    (run / "data.jsonl").write_text("\n".join(lines) + "\n")
    view = view_run(open_run(run), run / "gallery")
    missing, present = view.entries[0].generations
    assert shown(missing) == (None, f"the image file is missing: {rows[0]['image_path']}")
    assert missing.sha256 is None
    assert shown(present) == ("../" + rows[1]["image_path"], None)
    data = (run / rows[1]["image_path"]).read_bytes()
    assert present.sha256 == hashlib.sha256(data).hexdigest()
    assert (view.images, view.failures) == (20, 4)


def test_image_cells() -> None:
    assert image_payload(None) == ImagePayload(None, None)
    assert image_payload(b"\x89PNG") == ImagePayload(b"\x89PNG", None)
    assert image_payload(base64.b64encode(b"abcd").decode()) == ImagePayload(b"abcd", None)
    assert image_payload("YWJj") == ImagePayload(b"abc", None)
    assert image_payload("YWI") == ImagePayload(b"ab", None)  # padding left out
    assert image_payload({"bytes": b"ab", "path": "x.png"}) == ImagePayload(b"ab", "x.png")
    assert image_payload({"bytes": None, "path": None}) == ImagePayload(None, None)
    with pytest.raises(ValueError, match=r"^the image text is not base64"):
        image_payload("not base64!")
    with pytest.raises(ValueError, match=r"struct, not int$"):
        image_payload(3)
    with pytest.raises(ValueError, match=r"struct, not dict$"):
        image_payload({"bytes": "text", "path": None})


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(out, format="PNG")
    return out.getvalue()


def test_thumbnails_with_pillow(tmp_path: Path) -> None:
    thumbnails = Thumbnails(tmp_path / "thumbs")
    assert thumbnails.kind == "resized"
    big = _png(600, 300)
    first = thumbnails(big)
    assert first.name == hashlib.sha256(big).hexdigest() + ".png" and first.error is None
    with Image.open(tmp_path / "thumbs" / first.name) as thumb:
        assert (thumb.format, thumb.size) == ("PNG", (256, 128))
        assert thumb.getpixel((100, 60)) == (200, 30, 60)
    small = io.BytesIO()
    Image.new("RGB", (256, 20)).save(small, format="JPEG")
    kept = thumbnails(small.getvalue())
    assert kept.name == hashlib.sha256(small.getvalue()).hexdigest() + ".jpg"
    assert (tmp_path / "thumbs" / kept.name).read_bytes() == small.getvalue()
    tiff = io.BytesIO()
    Image.new("RGB", (30, 10), (1, 2, 3)).save(tiff, format="TIFF")
    converted = thumbnails(tiff.getvalue())
    assert converted.name == hashlib.sha256(tiff.getvalue()).hexdigest() + ".png"
    with Image.open(tmp_path / "thumbs" / converted.name) as thumb:
        assert (thumb.format, thumb.size, thumb.getpixel((0, 0))) == ("PNG", (30, 10), (1, 2, 3))
    assert thumbnails(big) == first
    assert thumbnails(small.getvalue()) == kept
    assert thumbnails.written == 3
    bad = thumbnails(b"not an image")
    assert bad.name is None and bad.error is not None
    assert bad.error.startswith("no preview: the image cannot be decoded: cannot identify image")
    assert sorted(path.name for path in (tmp_path / "thumbs").iterdir()) == sorted(
        [first.name, kept.name, converted.name]
    )


def test_thumbnails_without_pillow_are_the_original_bytes(tmp_path: Path) -> None:
    thumbnails = Thumbnails(tmp_path / "thumbs", resize=False)
    assert thumbnails.kind == "original"
    png = _png(600, 300)
    webp = b"RIFF\x00\x00\x00\x00WEBPVP8 rest"
    for data, ext in ((png, "png"), (webp, "webp"), (b"\xff\xd8\xff\xe0jpeg", "jpg")):
        made = thumbnails(data)
        assert made.name == f"{hashlib.sha256(data).hexdigest()}.{ext}"
        assert (tmp_path / "thumbs" / made.name).read_bytes() == data
    tiff = thumbnails(b"II*\x00rest")
    assert tiff.name is None
    assert tiff.error == (
        "no preview: the image (first bytes 49 49 2a 00 72 65 73 74) is in no format a browser "
        "shows; pip install '.[images]' in the imagetask source folder to convert it"
    )
    assert thumbnails.written == 3


def test_compare_pairs_the_same_prompts() -> None:
    def entries(*prompts: str) -> list[Entry]:
        return [
            Entry(prompt, (Generation(f"{prompt}-{i}.png"),)) for i, prompt in enumerate(prompts)
        ]

    a = entries("p1", "p2", "p2", "p3")
    b = entries("p2", "p4", "p1", "p2", "p2")
    assert compare_entries(a, b) == [
        (a[0], b[2]),
        (a[1], b[0]),
        (a[2], b[3]),
        (a[3], None),
        (None, b[1]),
        (None, b[4]),
    ]
    assert compare_entries([], b[:1]) == [(None, b[0])]


def test_data_files_of_the_page(tmp_path: Path, artifacts_run: Path) -> None:
    run = copy_run(artifacts_run, tmp_path)
    page = build_gallery(run, chunk=5)
    folder = run / "gallery"
    assert page == folder / "index.html"
    assert sorted(path.name for path in folder.iterdir()) == [
        "gallery.css",
        "gallery.js",
        "icon.png",
        "index-data",
        "index.html",
    ]
    assert sorted(path.name for path in (folder / "index-data").iterdir()) == [
        "0.js",
        "1.js",
        "2.js",
        "details-0.js",
        "details-1.js",
        "details-2.js",
        "meta.js",
    ]
    html = page.read_text()
    assert '<script src="index-data/meta.js"></script>' in html
    assert "default-src 'none'; script-src 'self'; img-src 'self'; style-src 'self'" in html
    [meta] = script_data(folder / "index-data" / "meta.js", "meta")
    task = json.loads((run / "run.json").read_text())["task"]
    key = json.loads((run / "checkpoint.json").read_text())["urls"]["key"]
    run_id = hashlib.sha256(f"imagetask gallery run\0with-artifacts\0{key}".encode()).hexdigest()
    assert meta == {
        "version": 2,
        "data": "index-data",
        "chunk_size": 5,
        "entries": 12,
        "chunks": [[5, 1], [5, 0], [2, 1]],
        "matched": 12,
        "columns": ["prompt"],
        "prompt": "prompt",
        "marks": True,
        "runs": [
            {
                "name": "with-artifacts",
                "id": run_id[:32],
                "task": "image_generation_0",
                "models": ["placeholder"],
                "format": "jsonl",
                "complete": True,
                "rows": 12,
                "images": 21,
                "failures": 3,
                "thumbnails": None,
                "dirs": [ARTIFACTS],
                "config": task,
            }
        ],
    }
    rows = rows_of(run)
    entries = []
    details = []
    for index in range(3):
        chunk, data = script_data(folder / "index-data" / f"{index}.js", "chunk")
        assert chunk == index
        entries.extend(data)
        chunk, data = script_data(folder / "index-data" / f"details-{index}.js", "details")
        assert chunk == index
        details.extend(data)
    assert [entry[0] for entry in entries] == [[prompt] for prompt in PROMPTS]
    for index, (_, generations) in enumerate(entries):
        expected: list[list[Any]] = []
        for k, error in enumerate(expected_errors(index)):
            row = rows[2 * index + k]
            if error:
                expected.append([None, None, {}, error])
            else:
                name = Path(row["image_path"]).name
                size = row["distilabel_metadata"]["statistics_image_generation_0"]["image_bytes"]
                expected.append([0, name, {"seed": 0, "bytes": size}])
        assert generations == expected
        assert details[index] == [[rows[2 * index + k]["distilabel_metadata"] for k in (0, 1)]]
    # A rebuild replaces the data files: none is left from the larger layout.
    build_gallery(run)
    assert sorted(path.name for path in (folder / "index-data").iterdir()) == [
        "0.js",
        "details-0.js",
        "meta.js",
    ]


def test_compare_page_data(tmp_path: Path, artifacts_run: Path) -> None:
    make_run(tmp_path / "b", prompts=[*PROMPTS[6:], "only in b"], save_artifacts=False, seed=7)
    page = build_gallery(artifacts_run, tmp_path / "b")
    assert page == artifacts_run / "gallery" / "compare.html"
    folder = artifacts_run / "gallery"
    [meta] = script_data(folder / "compare-data" / "meta.js", "meta")
    relative = os.path.relpath(tmp_path / "b" / "gallery" / "thumbs", folder)
    assert [run["dirs"] for run in meta["runs"]] == [[ARTIFACTS], [Path(relative).as_posix() + "/"]]
    assert (meta["entries"], meta["matched"]) == (13, 6)
    assert [(run["name"], run["rows"], run["images"], run["failures"]) for run in meta["runs"]] == [
        ("with-artifacts", 12, 21, 3),
        ("b", 7, 13, 1),
    ]
    assert meta["marks"] is False
    _, entries = script_data(folder / "compare-data" / "0.js", "chunk")
    assert [entry[0] for entry in entries] == [[p] for p in [*PROMPTS, "only in b"]]
    assert [entry[2] is None for entry in entries] == [True] * 6 + [False] * 7
    assert entries[12][1] is None
    assert entries[CAT][2][1] == [None, None, {}, CAT_ERROR]
    b_rows = rows_of(tmp_path / "b")
    assert [generation[:2] for generation in entries[6][2]] == [
        [0, hashlib.sha256(base64.b64decode(b_rows[k]["image"])).hexdigest() + ".png"]
        for k in (0, 1)
    ]
    _, details = script_data(folder / "compare-data" / "details-0.js", "details")
    assert details[12][0] is None
    assert details[6][1] == [b_rows[k]["distilabel_metadata"] for k in (0, 1)]
    assert (tmp_path / "b" / "gallery" / "thumbs").is_dir()


def test_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match=rf"^{tmp_path / 'nope'}: no such folder$"):
        open_run(tmp_path / "nope")
    with pytest.raises(ReadError, match=r": not a run folder \(it has no run.json or checkpoint"):
        open_run(tmp_path)
    (tmp_path / "run.json").write_text('{"task": {"name": "t"}}')
    with pytest.raises(ReadError, match=r": the run has no data.jsonl, data.parquet or data/\*"):
        open_run(tmp_path)
    (tmp_path / "run.json").write_text("[1]")
    with pytest.raises(ReadError, match=r"run.json: no task recorded: not written by imagetask$"):
        open_run(tmp_path)


def test_a_bad_line_is_named(tmp_path: Path, artifacts_run: Path) -> None:
    run = copy_run(artifacts_run, tmp_path)
    with (run / "data.jsonl").open("a") as file:
        file.write('{"prompt": "cut short"\n')
    with pytest.raises(ReadError, match=rf"^{run / 'data.jsonl'} line 25: invalid JSON"):
        build_gallery(run)


def test_the_command(
    tmp_path: Path, artifacts_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(artifacts_run, tmp_path)
    assert main(["gallery", str(run)]) == 0
    assert capsys.readouterr().out == f"{run / 'gallery' / 'index.html'}\n"
    assert main(["gallery", str(run), str(run)]) == 0
    assert capsys.readouterr().out == f"{run / 'gallery' / 'compare.html'}\n"
    assert main(["gallery", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"imagetask: error: {tmp_path / 'nope'}: no such folder\n"
    assert main(["gallery", str(run), str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {tmp_path}: not a run folder (it has no run.json or checkpoint.json)\n"
    )


def test_open_hands_the_page_to_the_browser(tmp_path: Path, artifacts_run: Path) -> None:
    run = copy_run(artifacts_run, tmp_path)
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "imagetask", "gallery", str(run), "--open"],
        env={**os.environ, "BROWSER": str(browser)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    page = run / "gallery" / "index.html"
    assert done.stdout == f"{page}\n"
    assert opened.read_text() == page.resolve().as_uri() + "\n"
    browser.write_text("#!/bin/sh\nexit 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "imagetask", "gallery", str(run), "--open"],
        env={**os.environ, "BROWSER": str(browser)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"{page}\n")
    assert done.stderr == f"imagetask: could not open a web browser; the page is {page}\n"


def test_generate_tells_how_to_browse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "my prompts.txt"
    prompts.write_text("a cat\n")
    out = tmp_path / "my out"
    assert main(["generate", str(prompts), "-o", str(out), "--size", "4x4", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"browse: imagetask gallery '{out}'"
    assert main(["gallery", str(out)]) == 0


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["gallery", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for option in ("OUT", "[OUT_B]", "--open", "OUT/gallery/index.html", "compare.html"):
        assert option in text, option
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "gallery" in capsys.readouterr().out


def test_an_empty_run(tmp_path: Path) -> None:
    make_run(tmp_path / "run", prompts=[])
    page = build_gallery(tmp_path / "run")
    [meta] = script_data(page.parent / "index-data" / "meta.js", "meta")
    assert (meta["entries"], meta["chunks"], meta["runs"][0]["rows"]) == (0, [], 0)
    assert sorted(path.name for path in (page.parent / "index-data").iterdir()) == ["meta.js"]
    assert (meta["columns"], meta["marks"]) == ([], True)
    with pytest.raises(ValueError, match=r"^chunk must be at least 1, got 0$"):
        build_gallery(tmp_path / "run", chunk=0)


def test_an_image_path_outside_the_run_is_not_shown(tmp_path: Path, artifacts_run: Path) -> None:
    run = copy_run(artifacts_run, tmp_path)
    outside = tmp_path / "secret.png"
    outside.write_bytes((run / rows_of(run)[0]["image_path"]).read_bytes())
    rows = rows_of(run)
    escaping = ["../secret.png", str(outside)]
    lines = [
        json.dumps(
            {**row, "image": None, "image_path": escaping[i] if i < 2 else row["image_path"]}
        )
        for i, row in enumerate(rows)
    ]
    (run / "data.jsonl").write_text("\n".join(lines) + "\n")
    view = view_run(open_run(run), run / "gallery")
    first = view.entries[0].generations
    assert [(*shown(g), g.sha256) for g in first] == [
        (None, "the image file is missing: ../secret.png", None),
        (None, f"the image file is missing: {outside}", None),
    ]


def test_an_interrupted_parquet_run_shows_its_checkpointed_rows(tmp_path: Path) -> None:
    out = tmp_path / "run"
    task = ImageGeneration(image_generation_model=StopsAt30(size="4x4"), input_batch_size=10)
    with pytest.raises(RunInterrupted):
        task.run([{"prompt": f"p{i}"} for i in range(50)], out, format="parquet")
    assert not list((out / "data").glob("*.parquet"))  # every row is still staged
    view = view_run(open_run(out), out / "gallery")
    assert [entry.prompt for entry in view.entries] == [f"p{i}" for i in range(30)]
    assert (view.images, view.failures) == (30, 0)


def test_links_planted_in_the_gallery_folder_are_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS[:3], save_artifacts=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    page = run / "gallery"
    page.mkdir()
    for name in (".index.html.tmp", "index.html", "gallery.js", ".gallery.css.tmp"):
        (page / name).symlink_to(victim)
    for name in ("thumbs", "index-data"):
        (page / name).symlink_to(elsewhere, target_is_directory=True)
    build_gallery(run)
    assert victim.read_text() == "keep me\n"
    assert list(elsewhere.iterdir()) == []
    for name in ("thumbs", "index-data"):
        assert (page / name).is_dir() and not (page / name).is_symlink()
    assert len(list((page / "thumbs").iterdir())) == 6
    for name in ("index.html", "gallery.js"):
        assert (page / name).is_file() and not (page / name).is_symlink()
    assert not [path.name for path in page.rglob("*.tmp") if not path.is_symlink()]


def test_a_gallery_folder_that_is_a_link_is_replaced(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS[:2], save_artifacts=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "gallery").symlink_to(elsewhere, target_is_directory=True)
    assert build_gallery(run) == run / "gallery" / "index.html"
    assert list(elsewhere.iterdir()) == []
    assert not (run / "gallery").is_symlink()
    assert len(list((run / "gallery" / "thumbs").iterdir())) == 4


def test_gallery_files_follow_the_umask(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS[:2], save_artifacts=False)
    old = os.umask(0o027)
    try:
        build_gallery(run)
    finally:
        os.umask(old)
    page = run / "gallery"
    written = [page / "index.html", page / "index-data" / "meta.js"]
    written += list((page / "thumbs").iterdir())
    assert {path.stat().st_mode & 0o777 for path in written} == {0o640}


@pytest.mark.parametrize("name", ["absolute", "../../outside.arrows", "staged-1.arrows"])
def test_a_checkpoint_naming_a_stream_outside_the_staging_folder_is_refused(
    tmp_path: Path, name: str
) -> None:
    out = tmp_path / "run"
    task = ImageGeneration(image_generation_model=StopsAt30(size="4x4"), input_batch_size=10)
    with pytest.raises(RunInterrupted):
        task.run([{"prompt": f"p{i}"} for i in range(50)], out, format="parquet")
    (staged,) = (out / ".staging").iterdir()
    outside = tmp_path / "outside.arrows"
    shutil.copy(staged, outside)
    name = str(outside) if name == "absolute" else name
    record = out / "checkpoint.json"
    state = json.loads(record.read_text())
    state["sink"]["staged"][0]["name"] = name
    record.write_text(json.dumps(state))
    with pytest.raises(ReadError) as caught:
        build_gallery(out)
    assert str(caught.value) == (
        f"{record}: the sink names {name!r}, not a staged stream of .staging"
    )
    assert not (out / "gallery").exists()


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("field", "value", "fault"),
    [
        (
            "input_mappings",
            [1],
            "the task's `input_mappings` is [1], not an object of column names",
        ),
        (
            "output_mappings",
            "x",
            "the task's `output_mappings` is 'x', not an object of column names",
        ),
        (
            "output_mappings",
            {"image": ["a"]},
            "the task's `output_mappings` is {'image': ['a']}, not an object of column names",
        ),
        ("metadata_column", [1], "the task's `metadata_column` is [1], not text"),
        ("name", 3, "the task's `name` is 3, not text"),
        ("num_generations", "2", "the task's `num_generations` is '2', not a count of at least 1"),
        ("num_generations", 0, "the task's `num_generations` is 0, not a count of at least 1"),
        ("group_generations", 1, "the task's `group_generations` is 1, not true or false"),
        ("extra", _deep(70), "nested more than 64 levels deep"),
    ],
)
def test_a_malformed_run_json_is_one_line_naming_it(
    tmp_path: Path,
    artifacts_run: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: Any,
    fault: str,
) -> None:
    run = copy_run(artifacts_run, tmp_path)
    record = run / "run.json"
    state = json.loads(record.read_text())
    state["task"][field] = value
    record.write_text(json.dumps(state))
    message = f"{record}: {fault}: not written by imagetask"
    with pytest.raises(ReadError) as caught:
        build_gallery(run)
    assert str(caught.value) == message
    assert main(["gallery", str(run)]) == 1
    assert capsys.readouterr().err == f"imagetask: error: {message}\n"


def test_a_run_json_nested_past_the_parser_is_one_line(
    tmp_path: Path, artifacts_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(artifacts_run, tmp_path)
    record = run / "run.json"
    record.write_text('{"task": {"name": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    assert main(["gallery", str(run)]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {record}: nested too deeply: not written by imagetask\n"
    )


def test_facts_of_the_metadata_the_backends_write() -> None:
    schema = OutputSchema.of_dump({"name": "t"})
    openai = {
        "raw_output_t": {"images": ["sha256:ab"], "revised_prompt": "a red cat", "seed": 7},
        "statistics_t": {
            "latency_s": 2.5,
            "image_bytes": 1234,
            "images_in_request": 2,
            "input_tokens": 10,
            "output_tokens": 4160,
            "total_tokens": 4170,
            "input_tokens_details": {"text_tokens": 10},
            "cost_usd": 0.02,
        },
    }
    assert facts_of(openai, schema) == {
        "seed": 7,
        "revised_prompt": "a red cat",
        "latency_s": 2.5,
        "bytes": 1234,
        "tokens": 4170,
        "cost_usd": 0.02,
    }
    usage = {"raw_output_t": {"usage": {"input_tokens": 3, "output_tokens": 5}}}
    assert facts_of(usage, schema) == {"tokens": 8}
    assert facts_of({"statistics_t": {"latency_ms": 1500}}, schema) == {"latency_s": 1.5}
    wrong = {"raw_output_t": {"seed": "7", "revised_prompt": 3}, "statistics_t": {"cost_usd": True}}
    assert facts_of(wrong, schema) == {}
    assert facts_of({"raw_output_t": "text", "statistics_t": [1]}, schema) == {}


def test_readable_values() -> None:
    long = "x" * 2001
    assert readable({"a": None, "b": b"\x00" * 2048, "c": [1, 2.5, True], "d": long}) == {
        "b": "(2,048 bytes)",
        "c": [1, 2.5, True],
        "d": "x" * 200 + "\N{HORIZONTAL ELLIPSIS} (2,001 characters)",
    }
    assert readable(Path("p")) == "p"
    assert as_text("text") == "text"
    assert as_text(3) == "3"
    assert as_text({"style": ["a", None]}) == '{"style": ["a", null]}'
    assert as_text({"bytes": b"abc", "path": "in/cat.png"}) == "in/cat.png"
    assert as_text({"bytes": b"abc", "path": None}) == "(3 bytes)"


def test_an_image_not_named_by_its_hash_carries_its_sha256(
    tmp_path: Path, artifacts_run: Path
) -> None:
    run = copy_run(artifacts_run, tmp_path)
    rows = rows_of(run)
    first = run / rows[0]["image_path"]
    renamed = first.with_name("first picture.png")
    first.rename(renamed)
    rows[0] = {**rows[0], "image": None, "image_path": str(renamed.relative_to(run))}
    (run / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    page = build_gallery(run)
    _, entries = script_data(page.parent / "index-data" / "0.js", "chunk")
    sha = hashlib.sha256(renamed.read_bytes()).hexdigest()
    size = len(renamed.read_bytes())
    assert entries[0][1][0] == [0, "first%20picture.png", {"seed": 0, "bytes": size}, None, sha]
    assert entries[0][1][1][1] == Path(rows[1]["image_path"]).name  # its stem is its sha256


def test_input_columns_are_shown_and_searchable(tmp_path: Path) -> None:
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="4x4"), num_generations=1
    )
    rows = [
        {"prompt": "a cat", "style": "oil", "id": 3, "tags": ["x"]},
        {"prompt": "a dog", "style": "ink", "extra": None},
    ]
    task.run(rows, tmp_path / "run")
    page = build_gallery(tmp_path / "run")
    [meta] = script_data(page.parent / "index-data" / "meta.js", "meta")
    assert (meta["columns"], meta["prompt"]) == (
        ["prompt", "style", "id", "tags", "extra"],
        "prompt",
    )
    _, entries = script_data(page.parent / "index-data" / "0.js", "chunk")
    assert [entry[0] for entry in entries] == [
        ["a cat", "oil", "3", '["x"]'],
        ["a dog", "ink", None, None, "null"],
    ]


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_an_editing_run_shows_each_source_beside_its_edits(tmp_path: Path, format: str) -> None:
    edit = EXAMPLES / "edit"
    out = tmp_path / "out"
    args = ["edit", str(edit), "-o", str(out), "--num-generations", "2", "--quiet"]
    assert main([*args, "--format", format, "--save-artifacts"]) == 0
    page = build_gallery(out)
    view = view_run(open_run(out), page.parent)
    captions = [json.loads(line) for line in (edit / "captions.jsonl").read_text().splitlines()]
    assert [entry.prompt for entry in view.entries] == [row["prompt"] for row in captions]
    for entry, row in zip(view.entries, captions, strict=True):
        (source,) = entry.sources
        original = (edit / row["image"]).read_bytes()
        assert (source.facts, source.error) == ({"source": "image"}, None)
        assert source.sha256 == hashlib.sha256(original).hexdigest()
        assert source.image is not None
        thumbnail = on_disk(page.parent, source.image).read_bytes()
        with Image.open(io.BytesIO(thumbnail)) as shown, Image.open(edit / row["image"]) as image:
            assert shown.convert("RGB").tobytes() == image.convert("RGB").tobytes()
        assert [g.error for g in entry.generations] == [None, None]
        assert all(g.image and g.image.startswith("../artifacts/") for g in entry.generations)
    meta = (page.parent / "index-data" / "meta.js").read_text()
    assert '"sources":true' in meta
    chunk = (page.parent / "index-data" / "0.js").read_text()
    entries = json.loads(chunk[len("gallery.chunk(0,") : -len(");\n")])
    assert [len(entry) for entry in entries] == [3, 3]
    assert [entry[2][0][2] for entry in entries] == [{"source": "image"}] * 2
