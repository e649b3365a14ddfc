"""Headless Chromium for the gallery tests: the DOM after the page's scripts, screenshots,
a loopback static server that records what is asked of it, a small DOM reader, and
`Chromium`, a browser driven over the DevTools protocol to press keys, click, read the
page's storage and receive its downloads."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
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


_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
"""Headless, quiet, and no host name resolves."""


def _run(url: str, *args: str, window: str = "1280,900") -> str:
    """Runs headless Chromium on `url`; any request that is not to loopback or a file goes
    to a proxy that refuses it, and no host name resolves."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [
                chromium(),
                *_FLAGS,
                f"--user-data-dir={profile}",
                f"--proxy-server=http://127.0.0.1:{_dead_port()}",
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


_KEYS = {
    "ArrowLeft": 37,
    "ArrowRight": 39,
    "Escape": 27,
    "Enter": 13,
}
"""The key codes of the named keys the tests press (a letter's is its capital's)."""

_EXEC = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); " + (
    "os.execv(sys.argv[3], sys.argv[3:])"
)
"""Starts Chromium with the pipe ends on the descriptors `--remote-debugging-pipe` uses."""


@dataclass(frozen=True)
class Download:
    """A file the page downloaded: where it is, and the name the page gave it."""

    path: Path
    name: str


class Chromium:
    """One headless Chromium page driven over the DevTools protocol, through the pipe of
    `--remote-debugging-pipe` (JSON messages ended by a NUL byte; no websocket). Its
    profile lives as long as the object, so the page's storage survives a reload; files
    the page downloads go to `downloads`. Use it in a `with` block."""

    def __init__(self, downloads: Path, window: tuple[int, int] = (1280, 900)) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        commands, self._to_browser = os.pipe()
        self._from_browser, replies = os.pipe()
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _EXEC,
                str(commands),
                str(replies),
                chromium(),
                *_FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--proxy-server=http://127.0.0.1:{_dead_port()}",
                f"--window-size={window[0]},{window[1]}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(commands, replies),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands)
        os.close(replies)
        self._next = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.downloads = downloads
        self.send(
            "Browser.setDownloadBehavior",
            behavior="allowAndName",
            downloadPath=str(downloads),
            eventsEnabled=True,
        )
        pages = [t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        attached = self.send("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)
        self._session = attached["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            page=True,
            width=window[0],
            height=window[1],
            deviceScaleFactor=1,
            mobile=False,
        )

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends Chromium and removes its profile."""
        with contextlib.suppress(OSError):
            os.close(self._to_browser)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=10)
        os.close(self._from_browser)
        self._profile.cleanup()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                data = json.loads(message)
                if "id" in data:
                    with self._lock:
                        waiting = self._replies.get(data["id"])
                    if waiting is not None:
                        waiting.put(data)
                else:
                    self.events.put(data)

    def send(self, method: str, *, page: bool = False, **params: Any) -> dict[str, Any]:
        """Sends a DevTools command (to the page's session with `page`) and returns its
        result; an error answer fails the test."""
        with self._lock:
            self._next += 1
            number = self._next
            answer: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[number] = answer
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if page:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = answer.get(timeout=60)
        with self._lock:
            del self._replies[number]
        assert "error" not in reply, f"{method}: {reply['error']}"
        result: dict[str, Any] = reply["result"]
        return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise awaited)."""
        result = self.send(
            "Runtime.evaluate",
            page=True,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Waits until the expression is truthy in the page; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
            time.sleep(0.05)

    def open(self, url: str, images: bool = True) -> None:
        """Loads `url` and waits as `wait_ready` does."""
        self.send("Page.navigate", page=True, url=url)
        self.wait_ready(images)

    def reload(self) -> None:
        """Reloads the page and waits as `open` does."""
        self.evaluate("document.getElementById('status').dataset.state = 'reloading'")
        self.send("Page.reload", page=True)
        self.wait_ready()

    def wait_ready(self, images: bool = True) -> None:
        """Waits until the gallery shows the page its address names (`#q=...`), and with
        `images` until every image of it loaded or failed to (lazy images out of the window
        never do)."""
        self.wait_for(
            "(() => { const s = document.getElementById('status');"
            " return document.readyState === 'complete' && s && s.dataset.state === 'ready'"
            " && s.dataset.hash === location.hash"
            f" && ({str(not images).lower()} || Number(s.dataset.loaded)"
            " + Number(s.dataset.broken) === Number(s.dataset.images)); })()"
        )

    def press(self, key: str) -> None:
        """Presses and releases a key (`k`, `ArrowRight`, `Escape`, ...) in the page."""
        code = _KEYS[key] if key in _KEYS else ord(key.upper())
        down: dict[str, Any] = {
            "key": key,
            "code": key if key in _KEYS else f"Key{key.upper()}",
            "windowsVirtualKeyCode": code,
        }
        if key not in _KEYS or key == "Enter":
            down["text"] = "\r" if key == "Enter" else key
        self.send("Input.dispatchKeyEvent", page=True, type="keyDown", **down)
        down.pop("text", None)
        self.send("Input.dispatchKeyEvent", page=True, type="keyUp", **down)

    def click(self, selector: str) -> None:
        """Clicks the middle of the first element `selector` matches, as a mouse does."""
        box = self.evaluate(
            f"(() => {{ const node = document.querySelector({json.dumps(selector)});"
            " if (!node) return null; node.scrollIntoView({block: 'center'});"
            " const r = node.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        assert box is not None, f"nothing matches {selector}"
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                page=True,
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    def download(self, timeout: float = 30) -> Download:
        """The next download the page makes, once it is complete."""
        deadline = time.monotonic() + timeout
        names: dict[str, str] = {}
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            params = event.get("params", {})
            if event.get("method") == "Browser.downloadWillBegin":
                names[params["guid"]] = params["suggestedFilename"]
            elif event.get("method") == "Browser.downloadProgress":
                assert params["state"] != "canceled", params
                if params["state"] == "completed":
                    guid = params["guid"]
                    return Download(self.downloads / guid, names[guid])

    def type(self, text: str) -> None:
        """Types `text` into the focused field."""
        self.send("Input.insertText", page=True, text=text)

    def screenshot(self, target: Path) -> None:
        """Writes a PNG of what the page shows."""
        data = self.send("Page.captureScreenshot", page=True, format="png")["data"]
        target.write_bytes(base64.b64decode(data))
