"""The README's screenshots of the gallery, taken with the browser helper.

Makes the run of the README's main command, builds its gallery, marks two images, and
writes `docs/gallery.png` (the page) and `docs/gallery-lightbox.png` (an image opened in
the lightbox with its metadata). `tests/gallery/test_gallery_browser.py` runs it into a temporary
folder; run it as a script to refresh the README's files:

    PYTHONPATH=python python -m tests.support.gallery_screenshots
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from imagetask.cli import main as imagetask
from tests.support.browser import Chromium

ROOT = Path(__file__).resolve().parents[2]
WINDOW = (1200, 760)
"""The screenshots' size in pixels."""


def take(folder: Path, docs: Path) -> list[Path]:
    """Writes the screenshots into `docs`, working in `folder`; returns their paths."""
    out = folder / "out"
    prompts = str(ROOT / "examples" / "prompts.txt")
    command = ["generate", prompts, "-o", str(out), "--num-generations", "2", "--save-artifacts"]
    assert imagetask([*command, "--quiet"]) == 0
    assert imagetask(["gallery", str(out)]) == 0
    page = out / "gallery" / "index.html"
    docs.mkdir(parents=True, exist_ok=True)
    shots = [docs / "gallery.png", docs / "gallery-lightbox.png"]
    downloads = folder / "downloads"
    downloads.mkdir(exist_ok=True)
    with Chromium(downloads, window=WINDOW) as browser:
        browser.open(page.as_uri())
        for selector, key in (
            ('[data-input="0"][data-generation="1"]', "k"),
            ('[data-input="1"][data-generation="0"]', "r"),
        ):
            browser.evaluate(f"document.querySelector('figure.gen{selector}').focus()")
            browser.press(key)
        browser.evaluate("document.activeElement.blur()")
        browser.screenshot(shots[0])
        browser.click('figure.gen[data-input="2"][data-generation="0"] img')
        browser.wait_for("document.getElementById('lb-meta').textContent.startsWith('{')")
        browser.wait_for("document.getElementById('lb-image').naturalWidth > 0")
        browser.screenshot(shots[1])
    return shots


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="gallery-screenshots-") as scratch:
        for shot in take(Path(scratch), ROOT / "docs"):
            print(shot.relative_to(ROOT))
