"""An httpx transport that reads each answer's body whole, on a thread of its own.

httpx reads a body in 64 KB pieces through the event loop, each piece passing through
several layers of Python: an image answer of 4 MB is 64 of them, and a run's event loop
spends most of its time there. Here `http.client` sends the request and reads the answer on
a daemon thread; reading a body of known length is one loop of `recv_into` in C with the GIL
released. The client above (and the OpenAI SDK above it) sees an ordinary response: its
redirects, proxies (the client's mounts), content decoding and errors work as with httpx's
own transport. Connections are kept alive and reused; one found closed by the server while
idle is dropped before it is used. A cancelled request (a timeout, Ctrl-C) shuts its
socket down, so its thread ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from imagetask._extras import require

__all__ = ["WholeBodyTransport", "httpx_library"]

_IDLE_PER_ORIGIN = 64
_DEFAULT_PORTS = {"http": 80, "https": 443}


def httpx_library() -> ModuleType:
    """The httpx library the installed `openai` is built on (`httpx2`, or `httpx` before)."""
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    library: ModuleType = require("httpx", "openai", "OpenAIImageGeneration")
    return library


@dataclass(frozen=True)
class _Origin:
    """Where a connection goes."""

    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class _Exchange:
    """One request as `http.client` sends it."""

    origin: _Origin
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connect_timeout: float | None
    read_timeout: float | None


@dataclass(frozen=True)
class _Reply:
    """An answer read whole."""

    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class _InFlight:
    """The connection of a request being answered, so that cancelling it can shut it."""

    connection: http.client.HTTPConnection | None = None
    aborted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, connection: http.client.HTTPConnection) -> None:
        with self.lock:
            self.connection = connection
            if self.aborted:
                _shut(connection)

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            if self.connection is not None:
                _shut(self.connection)


class _ConnectFailed(Exception):
    """The connection could not be made (the request was not sent)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Unanswered(Exception):
    """The server closed the connection without answering the request sent over it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _shut(connection: http.client.HTTPConnection) -> None:
    """Ends `connection`'s exchange: a thread blocked reading it returns at once."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection has something to read: the server closed it (or sent
    what no request asked for), so it cannot carry another request."""
    sock = connection.sock
    if sock is None:
        return True
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


class WholeBodyTransport:
    """An httpx transport sending each request with `http.client` on a thread of its own.

    `httpx` is the httpx library the client is built on (`httpx` or `httpx2`): responses and
    errors are its types, so the client handles them as its own transport's.
    """

    def __init__(self, httpx: ModuleType) -> None:
        self._http = httpx
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    async def __aenter__(self) -> WholeBodyTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the idle connections."""
        with self._lock:
            idle = [connection for pool in self._idle.values() for connection in pool]
            self._idle.clear()
        for connection in idle:
            connection.close()

    async def handle_async_request(self, request: Any) -> Any:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise self._http.UnsupportedProtocol(
                f"the request's URL has scheme {scheme!r}: expected 'http' or 'https'",
                request=request,
            )
        timeouts = request.extensions.get("timeout", {})
        exchange = _Exchange(
            origin=_Origin(scheme, url.host, url.port or _DEFAULT_PORTS[scheme]),
            method=request.method,
            target=url.raw_path.decode("ascii"),
            headers=list(request.headers.raw),
            body=await request.aread(),
            connect_timeout=timeouts.get("connect"),
            read_timeout=timeouts.get("read"),
        )
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[_Reply] = loop.create_future()
        in_flight = _InFlight()

        def settle(reply: _Reply | None, error: BaseException | None) -> None:
            if answered.cancelled():
                return
            if error is not None:
                answered.set_exception(error)
            else:
                answered.set_result(reply)  # type: ignore[arg-type]

        def run() -> None:
            reply: _Reply | None = None
            error: BaseException | None = None
            try:
                reply = self._exchange(exchange, in_flight)
            except BaseException as exc:  # handed to the awaiting request
                error = exc
            # A closed loop raises RuntimeError: nobody waits for the answer.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, reply, error)

        threading.Thread(target=run, name="imagetask-http", daemon=True).start()
        try:
            reply = await answered
        except asyncio.CancelledError:
            in_flight.abort()
            raise
        except _ConnectFailed as failed:
            raise self._error(failed.cause, request, connecting=True) from failed.cause
        except _Unanswered as unanswered:
            cause = unanswered.cause
            raise self._error(cause, request, connecting=False) from cause
        except (OSError, http.client.HTTPException) as exc:
            raise self._error(exc, request, connecting=False) from exc
        return self._http.Response(
            reply.status,
            headers=reply.headers,
            stream=self._http.ByteStream(reply.body),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": reply.reason.encode("latin-1"),
            },
            request=request,
        )

    def _error(self, exc: BaseException, request: Any, *, connecting: bool) -> Exception:
        """The httpx error for a failed exchange."""
        httpx = self._http
        message = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            kind = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
        elif connecting:
            kind = httpx.ConnectError
        elif isinstance(exc, http.client.HTTPException):
            kind = httpx.RemoteProtocolError
        else:
            kind = httpx.ReadError
        error: Exception = kind(message, request=request)
        return error

    def _exchange(self, exchange: _Exchange, in_flight: _InFlight) -> _Reply:
        """Sends `exchange` and reads its answer whole (on the request's own thread).

        A kept connection the server closed just as it was taken (it answered nothing)
        is replaced by a new one, once: the request never reached the server's handler.
        """
        connection = self._idle_connection(exchange.origin)
        if connection is not None:
            try:
                return self._over(connection, exchange, in_flight)
            except _Unanswered:
                if in_flight.aborted:
                    raise
        return self._over(self._new_connection(exchange), exchange, in_flight)

    def _over(
        self, connection: http.client.HTTPConnection, exchange: _Exchange, in_flight: _InFlight
    ) -> _Reply:
        """`exchange` sent over `connection`, which is kept for another request after it
        unless the server or a cancellation ends it."""
        in_flight.hold(connection)
        try:
            connection.sock.settimeout(exchange.read_timeout)
            try:
                connection.putrequest(
                    exchange.method, exchange.target, skip_host=True, skip_accept_encoding=True
                )
                for name, value in exchange.headers:
                    connection.putheader(name, value)
                connection.endheaders(exchange.body or None)
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError) as exc:
                raise _Unanswered(exc) from exc
            body = response.read()
        except BaseException:
            connection.close()
            raise
        reply = _Reply(
            status=response.status,
            reason=response.reason,
            headers=[
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.getheaders()
            ],
            body=body,
        )
        if response.will_close or in_flight.aborted:
            connection.close()
        else:
            self._keep(exchange.origin, connection)
        return reply

    def _idle_connection(self, origin: _Origin) -> http.client.HTTPConnection | None:
        """A kept connection to `origin` the server has not closed, if there is one."""
        while True:
            with self._lock:
                pool = self._idle.get(origin)
                connection = pool.pop() if pool else None
            if connection is None or not _closed_by_peer(connection):
                return connection
            connection.close()

    def _new_connection(self, exchange: _Exchange) -> http.client.HTTPConnection:
        """A new connection to the exchange's origin."""
        origin = exchange.origin
        connection: http.client.HTTPConnection
        if origin.scheme == "https":
            connection = http.client.HTTPSConnection(
                origin.host, origin.port, timeout=exchange.connect_timeout, context=self._context()
            )
        else:
            connection = http.client.HTTPConnection(
                origin.host, origin.port, timeout=exchange.connect_timeout
            )
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise _ConnectFailed(exc) from exc
        return connection

    def _keep(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault(origin, [])
            if len(pool) < _IDLE_PER_ORIGIN:
                pool.append(connection)
                return
        connection.close()

    def _context(self) -> ssl.SSLContext:
        """The TLS settings of httpx's own transport (certificates, `SSL_CERT_FILE`)."""
        with self._lock:
            if self._ssl is None:
                self._ssl = self._http.create_ssl_context()
            return self._ssl
