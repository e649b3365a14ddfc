"""The gallery page in a real browser (headless Chromium): what it shows, that its images
load, that it fetches nothing from outside, and that a large run makes a small page."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from browser import Node, dump_dom, screenshot, static_server
from gallery_runs import CAT, CAT_ERROR, MOON, MOON_ERRORS, PROMPTS, make_run
from PIL import Image

from imagetask.gallery._page import build_gallery

TALL = "1280,6000"
"""A window tall enough that every image of a page is in view (lazy images load)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`a`: artifacts, JSONL; `b`: no artifacts, Parquet, other pictures; both with failures."""
    root = tmp_path_factory.mktemp("gallery")
    make_run(root / "a")
    make_run(root / "b", save_artifacts=False, format="parquet", seed=5)
    build_gallery(root / "a")
    build_gallery(root / "b")
    build_gallery(root / "a", root / "b")
    return root


def status(dom: Node) -> dict[str, str]:
    node = dom.find(id="status")
    return {**node.attrs, "text": node.text}


def entries(dom: Node) -> list[Node]:
    return dom.find(tag="main").find_all("article", "entry")


def generation_texts(entry: Node) -> list[list[str]]:
    """Per run, per generation: `ok` for an image, else the error text shown."""
    shown = []
    for gens in entry.find_all("div", "gens"):
        row = []
        for figure in gens.find_all("figure", "gen"):
            errors = figure.find_all("p", "error")
            row.append(errors[0].text if errors else "ok")
        shown.append(row)
    return shown


def expected_generations(index: int) -> list[str]:
    if index == MOON:
        return list(MOON_ERRORS)
    return ["ok", CAT_ERROR] if index == CAT else ["ok", "ok"]


def image_files(dom: Node, page: Path) -> list[Path]:
    """The files the <img> elements of the page's cards show, each checked to exist."""
    files = []
    for img in dom.find(tag="main").find_all("img"):
        src = img.attrs["src"]
        assert not urlsplit(src).scheme and not src.startswith("/"), src
        file = Path(os.path.normpath(page.parent / unquote(src)))
        assert file.is_file(), src
        assert "loaded" in img.classes, f"{src} did not load"
        files.append(file)
    return files


def test_a_run_with_failures_from_a_file_url(runs: Path, tmp_path: Path) -> None:
    page = runs / "a" / "gallery" / "index.html"
    dom = dump_dom(page.as_uri(), window=TALL)
    shown = status(dom)
    assert shown["data-state"] == "ready", shown
    assert (shown["data-shown"], shown["data-images"], shown["data-loaded"]) == ("12", "21", "21")
    assert (shown["data-broken"], shown["data-violations"]) == ("0", "0")
    assert shown["text"] == "prompts 1\N{EN DASH}12 of 12"
    found = entries(dom)
    assert [entry.find("p", "text").text for entry in found] == PROMPTS
    assert [entry.find("span", "num").text for entry in found] == [f"#{i}" for i in range(1, 13)]
    for index, entry in enumerate(found):
        assert generation_texts(entry) == [expected_generations(index)]
        assert ("has-failure" in entry.classes) == (index in (MOON, CAT))
    files = image_files(dom, page)
    assert len(files) == len(set(files)) == 21
    assert all(
        file.parent == runs / "a" / "artifacts" / "image_generation_0" / "images" for file in files
    )
    facts = dom.find(id="runs").text
    for fact in (
        "image_generation_0",
        "placeholder",
        "12 prompts",
        "21 images",
        "3 failed",
        "jsonl",
    ):
        assert fact in facts
    shot = tmp_path / "page.png"
    screenshot(page.as_uri(), shot)
    with Image.open(shot) as picture:
        assert (picture.format, picture.size) == ("PNG", (1280, 900))
        assert len(picture.convert("RGB").getcolors(1 << 20) or []) > 500  # pictures, not blank


def test_previews_and_failures_filter_over_a_static_server(runs: Path) -> None:
    with static_server(runs / "b") as server:
        dom = dump_dom(f"{server.url}/gallery/index.html#failures=1", window=TALL)
        found = entries(dom)
        assert [entry.find("span", "num").text for entry in found] == [
            f"#{MOON + 1}",
            f"#{CAT + 1}",
        ]
        assert [generation_texts(entry) for entry in found] == [
            [MOON_ERRORS],
            [["ok", CAT_ERROR]],
        ]
        assert status(dom)["text"] == "prompts 1\N{EN DASH}2 of 2 matching"
        dom = dump_dom(f"{server.url}/gallery/index.html", window=TALL)
        shown = status(dom)
        assert (shown["data-images"], shown["data-loaded"], shown["data-broken"]) == (
            "21",
            "21",
            "0",
        )
        assert shown["data-violations"] == "0"
        page = runs / "b" / "gallery" / "index.html"
        files = image_files(dom, page)
        assert {file.parent for file in files} == {runs / "b" / "gallery" / "thumbs"}
        requests = list(server.requests)
    assert [r for r in requests if r[1] != 200] == []
    paths = {unquote(path.split("#")[0]) for path, _ in requests}
    assert {path for path in paths if not path.startswith("/gallery/thumbs/")} == {
        "/gallery/index.html",
        "/gallery/gallery.css",
        "/gallery/gallery.js",
        "/gallery/icon.png",
        "/gallery/index-data/meta.js",
        "/gallery/index-data/0.js",
    }
    thumbs = {path for path in paths if path.startswith("/gallery/thumbs/")}
    assert thumbs == {"/gallery/thumbs/" + file.name for file in files}


def test_compare_two_runs_side_by_side(runs: Path) -> None:
    page = runs / "a" / "gallery" / "compare.html"
    dom = dump_dom(page.as_uri(), window=TALL)
    shown = status(dom)
    assert (shown["data-images"], shown["data-loaded"], shown["data-broken"]) == ("42", "42", "0")
    found = entries(dom)
    assert [entry.find("p", "text").text for entry in found] == PROMPTS
    for index, entry in enumerate(found):
        assert generation_texts(entry) == [expected_generations(index)] * 2
    files = image_files(dom, page)
    assert len([f for f in files if f.is_relative_to(runs / "a" / "artifacts")]) == 21
    assert len([f for f in files if f.is_relative_to(runs / "b" / "gallery" / "thumbs")]) == 21
    assert dom.find(id="columns").text == "promptA · a (placeholder)B · b (placeholder)"
    assert "12 prompts in both runs · 0 only in A · 0 only in B" in dom.find(id="runs").text


def test_the_page_reports_a_request_to_outside(runs: Path, tmp_path: Path) -> None:
    """The check above can fail: a page that asks for an outside image is caught twice, by
    its content policy (blocked, counted) and by the failed load."""
    folder = tmp_path / "gallery"
    shutil.copytree(runs / "a" / "gallery", folder)
    (folder / "probe.js").write_text(
        "setTimeout(() => {\n"
        '  const img = document.createElement("img");\n'
        '  img.src = "https://example.com/outside.png";\n'
        "  document.body.append(img);\n"
        "}, 0);\n"
    )
    html = (folder / "index.html").read_text()
    (folder / "probe.html").write_text(
        html.replace("</body>", '<script src="probe.js"></script>\n</body>')
    )
    # The data files point at the run's artifacts, one level up.
    shutil.copytree(runs / "a" / "artifacts", tmp_path / "artifacts")
    dom = dump_dom((folder / "probe.html").as_uri())
    assert status(dom)["data-violations"] == "1"
    assert "1 blocked request" in status(dom)["text"]


def test_a_large_run_makes_a_small_page_that_loads_lazily(tmp_path: Path) -> None:
    prompts = [f"a photo of object {i}" for i in range(20_000)]
    summary = make_run(tmp_path / "big", prompts, num_generations=1, size="4x4")
    assert (summary.rows_out, summary.failed) == (20_000, 0)
    page = build_gallery(tmp_path / "big")
    folder = page.parent
    data = sorted((folder / "index-data").iterdir(), key=lambda path: path.name)
    assert len(data) == 41  # meta.js, 20 files of 1,000 prompts and their 20 details files
    sizes = {path.name: path.stat().st_size for path in data}
    rows = {name: size for name, size in sizes.items() if name[0].isdigit()}
    details = {name: size for name, size in sizes.items() if name.startswith("details-")}
    assert (len(rows), len(details)) == (20, 20)
    assert page.stat().st_size < 3_000
    assert (folder / "gallery.js").stat().st_size + (folder / "gallery.css").stat().st_size < 40_000
    assert sizes["meta.js"] < 3_000
    prompt_bytes = sum(len(prompt) for prompt in prompts)
    # Per row: its prompt, its image's file name (64 + 4 characters), its facts (seed and
    # size, 25 bytes) and < 30 bytes of JSON; the sha256 is the file name's stem.
    assert sum(rows.values()) < prompt_bytes + 20_000 * (68 + 25 + 30)
    assert max(rows.values()) < 150_000
    first_page = ["index.html", "gallery.js", "gallery.css", "icon.png"]
    loaded = sum((folder / name).stat().st_size for name in first_page)
    loaded += sizes["meta.js"] + sizes["0.js"]
    assert loaded < 300_000  # the same for 100,000 prompts: 1,000 rows per data file
    assert sorted(path.name for path in folder.iterdir()) == [
        "gallery.css",
        "gallery.js",
        "icon.png",
        "index-data",
        "index.html",
    ]  # no image copied
    for path in [page, folder / "gallery.js", folder / "gallery.css", *data]:
        text = path.read_text(encoding="ascii")
        assert not re.search(r"https?:|//[a-z0-9]|data:", text), path
    dom = dump_dom(page.as_uri(), window=TALL)
    assert status(dom)["text"] == "prompts 1\N{EN DASH}50 of 20,000"
    assert status(dom)["data-loaded"] == "50"
    scripts = [node.attrs["src"] for node in dom.find_all("script")]
    assert sorted(scripts) == ["gallery.js", "index-data/0.js", "index-data/meta.js"]
    dom = dump_dom(f"{page.as_uri()}#q=OBJECT 19999&size=20", window=TALL)
    assert [entry.find("span", "num").text for entry in entries(dom)] == ["#20,000"]
    assert status(dom)["text"] == "prompts 1\N{EN DASH}1 of 1 matching"
    assert status(dom)["data-loaded"] == "1"
    assert len(dom.find_all("script")) == 2 + 20  # every data file, for the search
    dom = dump_dom(f"{page.as_uri()}#page=400&size=50", window=TALL)
    assert [entry.find("span", "num").text for entry in entries(dom)][::49] == [
        "#19,951",
        "#20,000",
    ]
    assert status(dom)["data-loaded"] == "50"
    assert sorted(node.attrs["src"] for node in dom.find_all("script")) == [
        "gallery.js",
        "index-data/19.js",
        "index-data/meta.js",
    ]
