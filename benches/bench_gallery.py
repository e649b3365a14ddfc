"""`imagetask gallery` on a large run: build time, page size, and time to open it.

Makes runs with `imagetask generate` (placeholder pictures, one per prompt): `artifacts`
(N prompts, JSONL, `--save-artifacts`: the page points at the image files), `previews`
(N prompts, JSONL without artifacts: the page writes a preview of each image once; these
64x64 pictures are small enough to be written as they are) and `large` (N/100 prompts
like `previews` but 1024x1024 pictures, which Pillow shrinks to 256x256 PNGs). Then, each
in a fresh process:

- build: `imagetask gallery OUT`, against the floor of reading the rows it is built from
  (a plain loop decoding every line of `data.jsonl` with msgspec), as a ratio; for
  `previews`, the first build (writes the previews) and a rebuild (finds them);
- open: headless Chromium (when installed) loading the page until it has shown its first
  page of prompts, and a search that loads every data file, against the same page of a
  12-prompt run;
- size: the bytes the browser loads to show the first page, and the data files per row.

Each figure is the median of the repeats.

    python benches/bench_gallery.py                      # 100,000 prompts
    python benches/bench_gallery.py --prompts 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

SIZE = "64x64"
PEAK_MB: list[float] = []


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command(*args: str) -> None:
    """`imagetask ARGS` in a fresh process; records its peak RSS in `PEAK_MB`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "imagetask", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"imagetask {' '.join(args)}: exit status {process.returncode}")
    PEAK_MB.append(usage.ru_maxrss / 1024)


def read_rows(run: Path) -> None:
    """The floor: decode every row of the run, in a fresh process like the command."""
    code = (
        "import msgspec, sys\n"
        "decoder = msgspec.json.Decoder()\n"
        "with open(sys.argv[1], 'rb') as file:\n"
        "    rows = sum(1 for line in file if decoder.decode(line))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(run / "data.jsonl")], check=True)


def make_run(prompts: Path, out: Path, *flags: str, size: str = SIZE) -> None:
    command("generate", str(prompts), "-o", str(out), "--size", size, "--quiet", *flags)


def open_page(browser: str, url: str, profile: Path) -> None:
    """Chromium until the page's load event (its first data file shown), DOM checked."""
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--proxy-server=http://127.0.0.1:9",
            "--dump-dom",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert 'data-state="ready"' in done.stdout, done.stdout[-2000:]


def first_load_bytes(page: Path) -> int:
    folder = page.parent
    files = ["index.html", "gallery.js", "gallery.css", "icon.png"]
    files += ["index-data/meta.js", "index-data/0.js"]
    return sum((folder / name).stat().st_size for name in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.prompts
    print(f"# {platform.machine()}, {platform.python_version()}, {n:,} prompts, {SIZE} images")
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as scratch:
        root = Path(scratch)
        prompts = root / "prompts.txt"
        prompts.write_text("".join(f"a photo of object {i}\n" for i in range(n)))
        small = root / "small.txt"
        small.write_text("".join(f"a photo of object {i}\n" for i in range(12)))
        make_run(prompts, root / "artifacts", "--save-artifacts", "--batch-size", "1000")
        make_run(prompts, root / "previews", "--batch-size", "1000")
        few = root / "few.txt"
        few.write_text("".join(f"a photo of object {i}\n" for i in range(n // 100)))
        make_run(few, root / "large", size="1024x1024")
        make_run(small, root / "small", "--save-artifacts")

        print("\n| build | median s | x reading the rows | peak RSS MB |")
        print("| --- | ---: | ---: | ---: |")
        floor = median_seconds(lambda: read_rows(root / "artifacts"), args.repeats)
        print(f"| reading the rows (msgspec loop) | {floor:.2f} | 1.00 | - |")
        for label, run, repeats in (
            ("gallery, artifacts", "artifacts", args.repeats),
            ("gallery, previews: first build", "previews", 1),
            ("gallery, previews: rebuild", "previews", args.repeats),
            (f"gallery, {n // 100:,} 1024x1024 images shrunk: first build", "large", 1),
        ):
            PEAK_MB.clear()
            seconds = median_seconds(partial(command, "gallery", str(root / run)), repeats)
            ratio = f"{seconds / floor:.2f}" if run != "large" else "-"
            print(f"| {label} | {seconds:.2f} | {ratio} | {max(PEAK_MB):.0f} |")
        command("gallery", str(root / "small"))

        page = root / "artifacts" / "gallery" / "index.html"
        data = list((page.parent / "index-data").iterdir())
        data_bytes = sum(file.stat().st_size for file in data)
        print("\n| page | bytes |")
        print("| --- | ---: |")
        print(f"| loaded to show the first page | {first_load_bytes(page):,} |")
        print(f"| same, 12-prompt run | {first_load_bytes(root / 'small/gallery/index.html'):,} |")
        print(f"| data files ({len(data)}), all | {data_bytes:,} |")
        print(f"| data files per row | {data_bytes / n:.1f} |")
        previews = root / "previews" / "gallery" / "thumbs"
        print(f"| previews written | {len(list(previews.iterdir())):,} files |")

        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            print("\n(no Chromium: open times not measured)")
            return
        profile = root / "profile"
        small_page = (root / "small" / "gallery" / "index.html").as_uri()
        last = f"a photo of object {n - 1}".replace(" ", "%20")
        print("\n| open in Chromium (process start to page shown) | median s | x 12-prompt run |")
        print("| --- | ---: | ---: |")
        base = median_seconds(lambda: open_page(browser, small_page, profile), args.repeats)
        print(f"| 12-prompt run, first page | {base:.2f} | 1.00 |")
        for label, url in (
            (f"{n:,}-prompt run, first page", page.as_uri()),
            (f"{n:,}-prompt run, search for its last prompt", f"{page.as_uri()}#q={last}"),
        ):
            seconds = median_seconds(partial(open_page, browser, url, profile), args.repeats)
            print(f"| {label} | {seconds:.2f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
