"""The gallery page in a real browser (headless Chromium): what it shows, that its images
load, that it fetches nothing from outside, and that a large run makes a small page."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

from imagetask import ImageGeneration
from imagetask.cli import main
from imagetask.curate import select
from imagetask.gallery._page import build_gallery
from imagetask.models import PlaceholderImageGeneration
from tests.support.browser import Chromium, Node, dump_dom, screenshot, static_server
from tests.support.gallery_runs import CAT, CAT_ERROR, MOON, MOON_ERRORS, PROMPTS, make_run
from tests.support.gallery_screenshots import WINDOW, take
from tests.support.repository import EXAMPLES

ARTIFACTS = "../artifacts/image_generation_0/images/"

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


def script_data(file: Path) -> Any:
    """The argument list of the `gallery.<call>(...)` of a data script."""
    text = file.read_text(encoding="ascii")
    return json.loads(f"[{text[text.index('(') + 1 : -3]}]")


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
    page_files = {path for path in paths if not path.startswith("/gallery/thumbs/")}
    # The browser asks for the icon when it gets to it: not always before the page is read.
    assert page_files - {"/gallery/icon.png"} == {
        "/gallery/index.html",
        "/gallery/gallery.css",
        "/gallery/gallery.js",
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
    prompts = [f"a photo of object {i}" for i in range(3_000)]
    summary = make_run(tmp_path / "big", prompts, num_generations=1, size="4x4")
    assert (summary.rows_out, summary.failed) == (3_000, 0)
    page = build_gallery(tmp_path / "big")
    folder = page.parent
    data = sorted((folder / "index-data").iterdir(), key=lambda path: path.name)
    assert len(data) == 7  # meta.js, 3 files of 1,000 prompts and their 3 details files
    sizes = {path.name: path.stat().st_size for path in data}
    rows = {name: size for name, size in sizes.items() if name[0].isdigit()}
    details = {name: size for name, size in sizes.items() if name.startswith("details-")}
    assert (len(rows), len(details)) == (3, 3)
    assert page.stat().st_size < 3_000
    assert (folder / "gallery.js").stat().st_size + (folder / "gallery.css").stat().st_size < 40_000
    assert sizes["meta.js"] < 3_000
    prompt_bytes = sum(len(prompt) for prompt in prompts)
    # Per row: its prompt, its image's file name (64 + 4 characters), its facts (seed and
    # size, 25 bytes) and < 30 bytes of JSON; the sha256 is the file name's stem.
    assert sum(rows.values()) < prompt_bytes + 3_000 * (68 + 25 + 30)
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
    assert status(dom)["text"] == "prompts 1\N{EN DASH}50 of 3,000"
    assert status(dom)["data-loaded"] == "50"
    scripts = [node.attrs["src"] for node in dom.find_all("script")]
    assert sorted(scripts) == ["gallery.js", "index-data/0.js", "index-data/meta.js"]
    dom = dump_dom(f"{page.as_uri()}#q=OBJECT 2999&size=20", window=TALL)
    assert [entry.find("span", "num").text for entry in entries(dom)] == ["#3,000"]
    assert status(dom)["text"] == "prompts 1\N{EN DASH}1 of 1 matching"
    assert status(dom)["data-loaded"] == "1"
    assert len(dom.find_all("script")) == 2 + 3  # every data file, for the search
    dom = dump_dom(f"{page.as_uri()}#page=60&size=50", window=TALL)
    assert [entry.find("span", "num").text for entry in entries(dom)][::49] == [
        "#2,951",
        "#3,000",
    ]
    assert status(dom)["data-loaded"] == "50"
    assert sorted(node.attrs["src"] for node in dom.find_all("script")) == [
        "gallery.js",
        "index-data/2.js",
        "index-data/meta.js",
    ]


def figure(input: int, generation: int) -> str:
    return f'figure.gen[data-input="{input}"][data-generation="{generation}"]'


def lightbox(browser: Chromium) -> dict[str, Any]:
    """What the lightbox shows: whether it is open, its image, its place and its error."""
    shown: dict[str, Any] = browser.evaluate(
        "(() => { const box = document.getElementById('lightbox');"
        " const image = document.getElementById('lb-image');"
        " return {open: !box.hidden, input: box.dataset.input, generation: box.dataset.generation,"
        " image: image.hidden ? null : image.getAttribute('src'),"
        " error: document.getElementById('lb-error').hidden ? null"
        " : document.getElementById('lb-error').textContent,"
        " focused: document.activeElement.id || document.activeElement.tagName}; })()"
    )
    return shown


def test_the_lightbox_opens_navigates_and_closes_with_keys(runs: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (runs / "a" / "data.jsonl").read_text().splitlines()]
    with Chromium(tmp_path) as browser:
        browser.open((runs / "a" / "gallery" / "index.html").as_uri())
        assert lightbox(browser)["open"] is False
        browser.click(f"{figure(0, 1)} img")
        shown = lightbox(browser)
        assert (shown["open"], shown["input"], shown["generation"]) == (True, "0", "1")
        assert shown["image"] == ARTIFACTS + Path(rows[1]["image_path"]).name
        browser.press("Escape")
        assert lightbox(browser)["open"] is False
        browser.evaluate(f"document.querySelector('{figure(MOON - 1, 1)}').focus()")
        browser.press("Enter")
        assert lightbox(browser)["input"] == str(MOON - 1)
        text = browser.wait_for(
            "document.getElementById('lb-meta').textContent.startsWith('{')"
            " && document.getElementById('lb-meta').textContent"
        )
        assert json.loads(text) == rows[2 * (MOON - 1) + 1]["distilabel_metadata"]
        assert "seed 0" in browser.evaluate("document.getElementById('lb-facts').textContent")
        browser.press("ArrowRight")
        shown = lightbox(browser)
        assert (shown["input"], shown["generation"], shown["image"]) == (str(MOON), "0", None)
        assert shown["error"] == MOON_ERRORS[0]
        text = browser.wait_for(
            "document.getElementById('lb-meta').textContent.includes('error_')"
            " && document.getElementById('lb-meta').textContent"
        )
        assert json.loads(text) == rows[2 * MOON]["distilabel_metadata"]
        browser.press("ArrowRight")
        browser.press("ArrowRight")
        assert (lightbox(browser)["input"], lightbox(browser)["generation"]) == (str(MOON + 1), "0")
        browser.press("ArrowLeft")
        assert (lightbox(browser)["input"], lightbox(browser)["generation"]) == (str(MOON), "1")
        browser.press("Escape")
        shown = lightbox(browser)
        assert (shown["open"], shown["focused"]) == (False, "FIGURE")
        assert browser.evaluate("document.activeElement.dataset.input") == str(MOON)
        # The last image: → stays on it.
        browser.evaluate(f"document.querySelector('{figure(11, 1)}').focus()")
        browser.press("Enter")
        browser.press("ArrowRight")
        assert (lightbox(browser)["input"], lightbox(browser)["generation"]) == ("11", "1")
        assert "image 24 of 24" in browser.evaluate(
            "document.getElementById('lb-where').textContent"
        )


def marks_shown(browser: Chromium) -> dict[str, str]:
    shown: dict[str, str] = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('figure.gen')]"
        ".filter((f) => f.dataset.mark).map((f) =>"
        " [`${f.dataset.input}:${f.dataset.generation}`, f.dataset.mark]))"
    )
    return shown


def test_marks_persist_per_run_and_export_what_select_reads(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "a"
    shutil.copytree(runs / "a", run)
    page = build_gallery(run)
    [meta] = script_data(page.parent / "index-data" / "meta.js")
    rows = [json.loads(line) for line in (run / "data.jsonl").read_text().splitlines()]

    def sha(input: int, generation: int) -> str:
        return Path(rows[2 * input + generation]["image_path"]).stem

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Chromium(downloads) as browser:
        browser.open(page.as_uri())
        assert browser.evaluate("document.getElementById('export').disabled") is True
        browser.evaluate(f"document.querySelector('{figure(0, 0)}').focus()")
        browser.press("k")
        browser.evaluate(f"document.querySelector('{figure(1, 1)}').focus()")
        browser.press("r")
        browser.press("r")  # pressed again: no mark
        browser.press("r")
        browser.click(f"{figure(2, 0)} img")
        browser.press("r")
        browser.press("ArrowRight")
        browser.press("k")
        browser.press("Escape")
        browser.click(f"{figure(5, 1)} .mark-reject")
        browser.evaluate(f"document.querySelector('{figure(MOON, 0)}').focus()")
        browser.press("k")  # a failure without an image has no mark
        expected = {"0:0": "keep", "1:1": "reject", "2:0": "reject", "2:1": "keep", "5:1": "reject"}
        assert marks_shown(browser) == expected
        marked = "2 kept \N{MIDDLE DOT} 3 rejected"
        assert browser.evaluate("document.getElementById('marked').textContent") == marked
        browser.reload()
        assert marks_shown(browser) == expected
        assert browser.evaluate("document.getElementById('marked').textContent") == marked
        stored = browser.evaluate(
            f"localStorage.getItem('imagetask-marks:{meta['runs'][0]['id']}')"
        )
        assert json.loads(stored) == {
            "run": "a",
            "marks": {
                key: [sha(*map(int, key.split(":"))), mark] for key, mark in expected.items()
            },
        }
        browser.click("#export")
        download = browser.download()
        assert download.name == "a.marks.json"
        exported = json.loads(download.path.read_text())
        assert exported == {
            "format": "imagetask-marks",
            "version": 1,
            "run": "a",
            "marks": [
                {"input": i, "generation": k, "sha256": sha(i, k), "mark": expected[f"{i}:{k}"]}
                for i, k in ((0, 0), (1, 1), (2, 0), (2, 1), (5, 1))
            ],
        }
        # Another run's page, in the same browser (every file:// page shares one storage),
        # shows none of them; nor does a comparison page offer marks.
        browser.open((runs / "b" / "gallery" / "index.html").as_uri())
        assert marks_shown(browser) == {}
        assert browser.evaluate("document.getElementById('marked').textContent") == (
            "0 kept \N{MIDDLE DOT} 0 rejected"
        )
        browser.open((runs / "a" / "gallery" / "compare.html").as_uri(), images=False)
        assert browser.evaluate("document.getElementById('choose').hidden") is True
        assert browser.evaluate("document.querySelectorAll('main .marks').length") == 0
    selection = select(run, tmp_path / "chosen", marks=download.path)
    assert (selection.rejected, selection.images, selection.failed) == (3, 18, 3)
    kept = [
        json.loads(line) for line in (tmp_path / "chosen" / "data.jsonl").read_text().splitlines()
    ]
    rejected = {sha(1, 1), sha(2, 0), sha(5, 1)}
    assert [row["image_path"] for row in kept] == [
        row["image_path"]
        for row in rows
        if row["image_path"] is None or Path(row["image_path"]).stem not in rejected
    ]


def test_search_highlights_matches_in_any_or_one_column(tmp_path: Path) -> None:
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="8x8"), num_generations=1
    )
    rows = [
        {"prompt": "a Cat on a mat", "style": "ink"},
        {"prompt": "a dog", "style": "cats and catkins"},
        {"prompt": "a bird", "style": "oil"},
    ]
    task.run(rows, tmp_path / "run")
    page = build_gallery(tmp_path / "run")
    highlights = (
        "[...document.querySelectorAll('main article')].map((a) =>"
        " [a.querySelector('.num').textContent,"
        " [...a.querySelectorAll('mark')].map((m) => m.textContent)])"
    )
    with Chromium(tmp_path) as browser:
        browser.open(f"{page.as_uri()}#q=cat")
        assert browser.evaluate(highlights) == [["#1", ["Cat"]], ["#2", ["cat", "cat"]]]
        assert status_text(browser) == "prompts 1\N{EN DASH}2 of 2 matching"
        browser.open(f"{page.as_uri()}#q=cat&col=style")
        assert browser.evaluate(highlights) == [["#2", ["cat", "cat"]]]
        assert browser.evaluate("document.getElementById('column').value") == "style"
        options = "[...document.getElementById('column').options].map((o) => o.textContent)"
        assert browser.evaluate(options) == ["all columns", "prompt", "style"]
        browser.open(page.as_uri())
        assert browser.evaluate(highlights) == [["#1", []], ["#2", []], ["#3", []]]
        browser.evaluate("document.getElementById('search').focus()")
        browser.type("BIRD")
        browser.press("Enter")
        browser.wait_for("location.hash === '#q=BIRD'")
        browser.wait_ready()
        assert browser.evaluate(highlights) == [["#3", ["bird"]]]
        styles = "[...document.querySelectorAll('main .inputs dd')].map((d) => d.textContent)"
        assert browser.evaluate(styles) == ["oil"]


def status_text(browser: Chromium) -> str:
    text: str = browser.evaluate("document.getElementById('status').textContent")
    return text


def test_the_readme_screenshots(tmp_path: Path) -> None:
    shots = take(tmp_path, tmp_path / "docs")
    assert [shot.name for shot in shots] == ["gallery.png", "gallery-lightbox.png"]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for shot in shots:
        assert f"(docs/{shot.name})" in readme
        committed = Path(__file__).parents[2] / "docs" / shot.name
        for picture_file in (shot, committed):
            with Image.open(picture_file) as picture:
                assert (picture.format, picture.size) == ("PNG", WINDOW)
                assert len(picture.convert("RGB").getcolors(1 << 20) or []) > 500


def test_an_editing_run_shows_its_sources_above_the_edits(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["edit", str(EXAMPLES / "edit"), "-o", str(out), "--num-generations", "2"]
    assert main([*args, "--save-artifacts", "--quiet"]) == 0
    page = build_gallery(out)
    dom = dump_dom(page.as_uri(), window=TALL)
    shown = status(dom)
    assert shown["data-state"] == "ready", shown
    assert (shown["data-images"], shown["data-loaded"]) == ("6", "6")
    assert (shown["data-broken"], shown["data-violations"]) == ("0", "0")
    for entry in entries(dom):
        sources, edits = entry.find_all("div", "gens")
        assert "sources" in sources.classes
        assert [f.find("figcaption", None).text for f in sources.find_all("figure", "gen")] == [
            "image"
        ]
        assert len(edits.find_all("figure", "gen")) == 2
    files = image_files(dom, page)
    assert len(files) == 6
    assert sum(file.parent.name == "thumbs" for file in files) == 2


def test_comparing_two_editing_runs_shows_each_runs_sources_above_its_edits(
    tmp_path: Path,
) -> None:
    edit = EXAMPLES / "edit"
    fewer = tmp_path / "fewer"
    shutil.copytree(edit, fewer)
    first = (edit / "captions.jsonl").read_text().splitlines()[0]
    (fewer / "captions.jsonl").write_text(first + "\n")
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--num-generations", "2", "--save-artifacts", "--quiet"]
    assert main(["edit", str(edit), "-o", str(a), *args]) == 0
    assert main(["edit", str(fewer), "-o", str(b), "--quiet"]) == 0
    page = build_gallery(a, b)
    assert page == a / "gallery" / "compare.html"
    dom = dump_dom(page.as_uri(), window=TALL)
    shown = status(dom)
    assert shown["data-state"] == "ready", shown
    assert (shown["data-images"], shown["data-loaded"]) == ("8", "8")
    assert (shown["data-broken"], shown["data-violations"]) == ("0", "0")
    apple, house = entries(dom)
    assert apple.find("p", "text").text == "make the apple green"
    assert house.find("p", "text").text == "add snow on the roof"
    in_a, in_b = apple.find_all("div", "edited")
    (house_in_a,) = house.find_all("div", "edited")
    assert house.find("p", "absent").text == "not in b"
    for column, edits in ((in_a, 2), (in_b, 1), (house_in_a, 2)):
        sources, generations = column.find_all("div", "gens")
        assert "sources" in sources.classes
        captions = [f.find("figcaption", None).text for f in sources.find_all("figure", "gen")]
        assert captions == ["image"]
        assert len(generations.find_all("figure", "gen")) == edits
    files = image_files(dom, page)
    assert len(files) == 8
    assert sum(file.is_relative_to(a / "artifacts") for file in files) == 4
    assert sum(file.is_relative_to(a / "gallery" / "thumbs") for file in files) == 2
    assert sum(file.is_relative_to(b / "gallery" / "thumbs") for file in files) == 2
