"""Headless Chromium for the gallery tests: the DOM after the page's scripts, screenshots,
a loopback static server that records what is asked of it, and a small DOM reader."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

NAMES = ("chromium", "chromium-browser")


def chromium() -> str:
    """The Chromium binary; the test fails (never skips) without one."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"no Chromium ({' or '.join(NAMES)}) on PATH: the gallery is tested in a real browser; "
        "install it (apt-get install chromium, as .ci/run does)"
    )


def _dead_port() -> int:
    """A loopback port nothing listens on: a proxy there refuses every request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _run(url: str, *args: str, window: str = "1280,900") -> str:
    """Runs headless Chromium on `url`; any request that is not to loopback or a file goes
    to a proxy that refuses it, and no host name resolves."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--proxy-server=http://127.0.0.1:{_dead_port()}",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--virtual-time-budget=15000",
                f"--window-size={window}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def dump_dom(url: str, window: str = "1280,900") -> Node:
    """The page's DOM once its scripts ran and its images loaded."""
    html = _run(url, "--dump-dom", window=window)
    assert html.lstrip().lower().startswith("<!doctype html>"), html[:500]
    return parse(html)


def screenshot(url: str, target: Path, window: str = "1280,900") -> None:
    """Writes a PNG of the page's first screen."""
    _run(url, f"--screenshot={target}", window=window)
    assert target.is_file(), f"no screenshot written to {target}"


@dataclass
class Node:
    """An element: tag, attributes, children (elements and text)."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    found.append(child)
                found.extend(child.find_all(tag, cls))
        return found

    def find(self, tag: str | None = None, cls: str | None = None, id: str | None = None) -> Node:
        for node in self.find_all(tag, cls):
            if id is None or node.attrs.get("id") == id:
                return node
        raise AssertionError(f"no <{tag or '*'}> with class {cls!r} and id {id!r}")


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


@dataclass
class StaticServer:
    """A static file server on loopback; `requests` lists `(path, status)` as served."""

    url: str
    requests: list[tuple[str, int]]


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[StaticServer]:
    """Serves `root` on 127.0.0.1, recording every request."""
    requests: list[tuple[str, int]] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            requests.append((self.path, int(code)))

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StaticServer(f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
