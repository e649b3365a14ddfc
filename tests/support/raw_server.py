"""A loopback HTTP/1.1 server whose answers are scripted down to the bytes on the wire
(chunked bodies, compression, connections closed or never answered), counting the
connections it accepts: for testing an HTTP transport."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.servers import serving


@dataclass(frozen=True)
class Scripted:
    """One answer: `wire` is written as it is after the request is read; with `close`, the
    connection is closed after it (whatever its headers say); with `hold`, nothing is
    written until the event is set."""

    wire: bytes
    close: bool = False
    hold: threading.Event | None = None


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 answer with a `Content-Length`."""
    lines = [f"HTTP/1.1 {status} OK", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(status: int, pieces: list[bytes], headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 answer with `Transfer-Encoding: chunked`, one chunk per piece."""
    lines = [f"HTTP/1.1 {status} OK", "Transfer-Encoding: chunked"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    body = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces)
    return head + body + b"0\r\n\r\n"


@dataclass
class Seen:
    """What the server saw: the connections it accepted and the requests."""

    connections: int = 0
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)


class RawServer(ThreadingHTTPServer):
    """Answers every request with `script(method, path)`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: Callable[[str, str], Scripted]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.seen = Seen()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RawServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.seen.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `server.seen` instead."""

    def do_GET(self) -> None:
        self.scripted()

    def do_POST(self) -> None:
        self.scripted()

    def scripted(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.seen.requests.append((self.command, self.path, body))
        scripted = self.server.script(self.command, self.path)
        if scripted.hold is not None:
            scripted.hold.wait()
        self.wfile.write(scripted.wire)
        self.wfile.flush()
        self.close_connection = scripted.close


@contextmanager
def raw_server(script: Callable[[str, str], Scripted]) -> Iterator[RawServer]:
    """A running `RawServer` on a free loopback port."""
    with serving(RawServer(script)) as server:
        yield server
