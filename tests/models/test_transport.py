"""The HTTP transport of the OpenAI backend: whole bodies read on a thread of their own,
connections kept, cancelled requests ended at once, failures as the client's own errors."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import threading
from typing import Any

import pytest

from imagetask.models._transport import WholeBodyTransport, httpx_library
from tests.support.raw_server import Scripted, answer, chunked, raw_server
from tests.support.servers import wait_until

openai = pytest.importorskip("openai")
HTTPX = httpx_library()


def _fetch(url: str, times: int = 1, timeout: float = 60.0) -> list[Any]:
    """`times` GETs of `url`, one after another, on one client with the transport."""

    async def fetch() -> list[Any]:
        transport = WholeBodyTransport(HTTPX)
        async with HTTPX.AsyncClient(transport=transport, timeout=timeout) as client:
            return [await client.get(url) for _ in range(times)]

    return asyncio.run(fetch())


def _http_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "imagetask-http"]


def test_bodies_arrive_whole_on_one_kept_connection() -> None:
    body = os.urandom(3 << 20)
    with raw_server(lambda method, path: Scripted(answer(200, body))) as server:
        responses = _fetch(f"{server.url}/image?x=1", times=5)
    assert [response.status_code for response in responses] == [200] * 5
    assert all(response.content == body for response in responses)
    assert server.seen.connections == 1
    assert [request[:2] for request in server.seen.requests] == [("GET", "/image?x=1")] * 5


def test_chunked_and_compressed_bodies_are_decoded() -> None:
    text = b"a body sent in pieces, " * 1000
    packed = gzip.compress(text)
    pieces = [packed[:100], packed[100:2000], packed[2000:]]
    wire = chunked(200, pieces, {"Content-Encoding": "gzip", "X-Kind": "test"})
    with raw_server(lambda method, path: Scripted(wire)) as server:
        (response,) = _fetch(server.url)
    assert response.content == text
    assert response.headers["x-kind"] == "test"


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    with raw_server(lambda method, path: Scripted(answer(200, b"ok"), close=True)) as server:
        responses = _fetch(server.url, times=4)
    assert [response.content for response in responses] == [b"ok"] * 4
    assert server.seen.connections == 4


def test_a_server_saying_close_gets_a_new_connection_each_time() -> None:
    wire = answer(200, b"ok", {"Connection": "close"})
    with raw_server(lambda method, path: Scripted(wire, close=True)) as server:
        responses = _fetch(server.url, times=3)
    assert [response.content for response in responses] == [b"ok"] * 3
    assert server.seen.connections == 3


def test_a_cancelled_request_ends_its_thread_at_once() -> None:
    hold = threading.Event()
    with raw_server(lambda method, path: Scripted(answer(200, b"late"), hold=hold)) as server:
        try:

            async def cancelled() -> None:
                transport = WholeBodyTransport(HTTPX)
                async with HTTPX.AsyncClient(transport=transport, timeout=600) as client:
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(client.get(server.url), 0.2)

            asyncio.run(cancelled())
            # The read timeout is 600 s: the thread ends because its socket was shut.
            wait_until(lambda: not _http_threads())
        finally:
            hold.set()


def test_a_request_past_its_read_timeout_is_a_read_timeout() -> None:
    hold = threading.Event()
    with raw_server(lambda method, path: Scripted(answer(200, b"late"), hold=hold)) as server:
        try:
            with pytest.raises(HTTPX.ReadTimeout):
                _fetch(server.url, timeout=0.2)
        finally:
            hold.set()


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(HTTPX.ConnectError):
        _fetch(f"http://127.0.0.1:{port}/")


def test_a_cut_body_is_an_error_not_a_short_answer() -> None:
    wire = answer(200, b"0123456789")[:-4]
    cut = Scripted(wire, close=True)
    with (
        raw_server(lambda method, path: cut) as server,
        pytest.raises((HTTPX.RemoteProtocolError, HTTPX.ReadError)),
    ):
        _fetch(server.url)


def test_an_unsupported_scheme_is_refused_by_name() -> None:
    with pytest.raises(HTTPX.UnsupportedProtocol, match="'ftp'"):
        _fetch("ftp://127.0.0.1/")


def test_the_sdk_posts_through_it_and_reads_the_answer() -> None:
    body = b'{"created": 0, "data": [{"b64_json": "aGk="}]}'
    wire = answer(200, body, {"Content-Type": "application/json"})
    with raw_server(lambda method, path: Scripted(wire)) as server:

        async def generate() -> Any:
            client = openai.AsyncOpenAI(
                api_key="test",
                base_url=f"{server.url}/v1",
                max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(transport=WholeBodyTransport(HTTPX)),
            )
            async with client:
                return await client.images.generate(model="m", prompt="p")

        result = asyncio.run(generate())
    assert result.data[0].b64_json == "aGk="
    ((method, path, sent),) = server.seen.requests
    assert (method, path) == ("POST", "/v1/images/generations")
    assert b'"prompt":"p"' in sent.replace(b" ", b"")


def test_a_kept_connection_dropped_unanswered_sends_the_request_again_once() -> None:
    answers = iter([Scripted(answer(200, b"one")), Scripted(b"", close=True)])
    fresh = Scripted(answer(200, b"two"))
    with raw_server(lambda method, path: next(answers, fresh)) as server:
        responses = _fetch(server.url, times=2)
    assert [response.content for response in responses] == [b"one", b"two"]
    assert (len(server.seen.requests), server.seen.connections) == (3, 2)


@pytest.mark.parametrize("wire", [b"NOT HTTP\r\n\r\n", b""], ids=["garbled", "nothing"])
def test_a_new_connection_answered_garbled_or_not_at_all_is_an_error_not_sent_again(
    wire: bytes,
) -> None:
    dropped = Scripted(wire, close=True)
    with (
        raw_server(lambda method, path: dropped) as server,
        pytest.raises(HTTPX.RemoteProtocolError),
    ):
        _fetch(server.url)
    assert (len(server.seen.requests), server.seen.connections) == (1, 1)
