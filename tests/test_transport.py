"""FastTransport (wa_agent._transport) against real loopback servers: uvicorn through
BackgroundServer for ordinary traffic, tiny raw asyncio servers for framing and failure
edge cases, a TLS uvicorn with a self-signed certificate, and the Sender on top of it
against the Cloud API emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from wa_agent._transport import FastTransport
from wa_agent.exceptions import MediaError
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.server import BackgroundServer
from wa_agent.testing import CloudAPIEmulator

# --------------------------------------------------------------------------- uvicorn app

BIG = 4 * 1024 * 1024


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echo, redirect, no-body and large streamed answers."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/redirect":
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [(b"location", b"/echo?from=redirect"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/big":  # no Content-Length: uvicorn sends it chunked
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        piece = b"x" * (256 * 1024)
        for _ in range(BIG // len(piece)):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    echo = {
        "method": scope["method"],
        "path": path,
        "query": scope["query_string"].decode(),
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "body_len": len(body),
        "body_head": body[:64].decode("latin-1"),
    }
    data = json.dumps(echo).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


@contextlib.asynccontextmanager
async def fast_client(
    base_url: str, **kwargs: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastTransport]]:
    transport = FastTransport(**kwargs)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client, transport


async def test_uvicorn_round_trips_reuse_one_connection() -> None:
    """GET with a query and POST with JSON reach uvicorn intact, and sequential requests
    share one keep-alive connection."""
    async with BackgroundServer(app) as server, fast_client(server.url) as (client, transport):
        r = await client.get("/echo", params={"a": "1 2", "b": "é"}, headers={"X-Test": "yes"})
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        echo = r.json()
        assert echo["method"] == "GET" and echo["path"] == "/echo"
        assert echo["query"] == "a=1+2&b=%C3%A9"
        assert echo["headers"]["x-test"] == "yes"
        assert echo["headers"]["host"] == server.url.removeprefix("http://")
        r = await client.post("/echo", json={"k": "v"})
        assert r.json()["body_len"] == len(b'{"k":"v"}') and r.json()["method"] == "POST"
        for _ in range(10):
            assert (await client.get("/echo")).status_code == 200
        assert transport.connections_opened == 1


async def test_concurrent_requests_stay_within_max_connections() -> None:
    """Twenty concurrent requests with max_connections=3 all succeed on at most three
    connections."""
    async with (
        BackgroundServer(app) as server,
        fast_client(server.url, max_connections=3) as (client, transport),
    ):
        responses = await asyncio.gather(*(client.get("/echo", params={"i": i}) for i in range(20)))
        assert [r.json()["query"] for r in responses] == [f"i={i}" for i in range(20)]
        assert transport.connections_opened <= 3


async def test_redirects_are_followed_by_httpx() -> None:
    """A 302 is returned as is without follow_redirects and followed by httpx with it."""
    async with BackgroundServer(app) as server, fast_client(server.url) as (client, transport):
        r = await client.get("/redirect")
        assert r.status_code == 302 and r.headers["location"] == "/echo?from=redirect"
        r = await client.get("/redirect", follow_redirects=True)
        assert r.status_code == 200 and r.json()["query"] == "from=redirect"
        assert len(r.history) == 1
        assert transport.connections_opened == 1


async def test_large_chunked_body_streams_in_pieces() -> None:
    """A 4 MB chunked body arrives in many pieces with every byte, and the connection is
    reused afterwards."""
    async with BackgroundServer(app) as server, fast_client(server.url) as (client, transport):
        async with client.stream("GET", "/big") as r:
            assert "content-length" not in r.headers
            sizes = [len(chunk) async for chunk in r.aiter_raw()]
        assert sum(sizes) == BIG and len(sizes) > 4
        assert (await client.get("/echo")).status_code == 200
        assert transport.connections_opened == 1


async def test_head_and_204_have_no_body_and_keep_the_connection() -> None:
    """HEAD (with a Content-Length) and 204 responses carry no body and the next request
    reuses the connection."""
    async with BackgroundServer(app) as server, fast_client(server.url) as (client, transport):
        r = await client.head("/echo")
        assert r.status_code == 200 and int(r.headers["content-length"]) > 0
        assert r.content == b""
        r = await client.get("/empty")
        assert r.status_code == 204 and r.content == b""
        assert (await client.get("/echo")).json()["method"] == "GET"
        assert transport.connections_opened == 1


# --------------------------------------------------------------------------- raw servers


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> RawRequest:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return RawRequest(method, target, headers, body)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A loopback asyncio server calling ``handler(reader, writer, n)`` for its n-th
    connection; counts connections and closes them all on exit."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_peer = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the test is over
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


async def serve_forever(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes
) -> None:
    """Answer every request on the connection with ``answer`` until the client leaves."""
    while True:
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(answer)
        await writer.drain()


async def test_content_length_body_and_keep_alive() -> None:
    """A Content-Length answer is read exactly and the connection is reused (counted by
    the server)."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await serve_forever(r, w, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        for _ in range(5):
            assert (await client.get("/")).content == b"hello"
        assert server.connections == 1


async def test_chunked_body_with_extensions_and_trailers() -> None:
    """Chunk extensions and trailers are handled; the body is the chunks' bytes and the
    connection stays usable."""
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await serve_forever(r, w, answer)

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        assert (await client.get("/")).text == "hello world"
        assert (await client.get("/")).text == "hello world"
        assert server.connections == 1


async def test_close_delimited_body_is_read_to_eof_and_not_reused() -> None:
    """Without Content-Length or chunking the body runs to EOF; the next request uses a
    new connection."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await w.drain()

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        assert (await client.get("/")).text == "until the end"
        assert (await client.get("/")).text == "until the end"
        assert server.connections == 2


async def test_header_folding_and_case() -> None:
    """Folded header lines are joined, header names of any case work (Content-Length
    included) and repeated headers are kept."""
    answer = (
        b"HTTP/1.1 201 Created\r\ncOnTeNt-LeNgTh: 2\r\nX-Folded: first\r\n  second\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nok"
    )

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await serve_forever(r, w, answer)

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        r = await client.get("/")
        assert r.status_code == 201 and r.reason_phrase == "Created"
        assert r.headers["x-folded"] == "first second"
        assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert r.content == b"ok"


async def test_server_closing_idle_connection_then_request_succeeds() -> None:
    """A keep-alive connection the server closes while idle is not used again: the next
    request succeeds on a new connection."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()  # then close, without saying Connection: close

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        assert (await client.get("/")).content == b"ok"
        await asyncio.sleep(0.05)  # let the FIN arrive
        assert (await client.get("/")).content == b"ok"
        assert server.connections == 2


async def test_stale_connection_race_is_retried_once() -> None:
    """If the server closes a reused connection after reading the next request but before
    answering (the keep-alive race), the request is sent again on a new connection."""
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        req = await read_request(r)
        seen.append(req.body)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        if n == 1:
            seen.append((await read_request(r)).body)  # read it, then close unanswered

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        assert (await client.post("/", content=b"one")).content == b"ok"
        assert (await client.post("/", content=b"two")).content == b"ok"
        assert server.connections == 2
        assert seen == [b"one", b"two", b"two"]


async def test_all_idle_connections_stale_needs_one_retry() -> None:
    """When the server dropped every idle connection (a restart), the request is retried
    once on a new connection, not on the next stale one."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        if n > 3:
            await serve_forever(r, w, ok)
            return
        await read_request(r)
        await asyncio.sleep(0.05)  # keep the three first requests on three connections
        w.write(ok)
        await w.drain()
        await read_request(r)  # then close unanswered

    async with (
        RawServer(handler) as server,
        fast_client(server.url, max_connections=3) as (client, _),
    ):
        await asyncio.gather(*(client.get("/") for _ in range(3)))
        assert server.connections == 3
        assert (await client.get("/")).content == b"ok"
        assert server.connections == 4


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    """A new connection that closes before answering raises RemoteProtocolError at once
    (only reused connections get the stale retry)."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/", content=b"x")
        assert server.connections == 1


async def test_partial_response_on_reused_connection_is_not_retried() -> None:
    """When a reused connection dies after part of the response arrived, the POST fails
    instead of being sent twice."""
    posts = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        nonlocal posts
        await read_request(r)
        posts += 1
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await read_request(r)
        posts += 1
        w.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await w.drain()

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        assert (await client.post("/", content=b"a")).content == b"ok"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/", content=b"b")
        assert posts == 2 and server.connections == 1


async def test_partly_read_body_closes_the_connection() -> None:
    """A response closed before its body was read to the end closes its connection (the
    server sees EOF) and the next request opens a new one."""
    eofs = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        nonlocal eofs
        while True:
            try:
                await read_request(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                eofs += 1
                return
            size = 1024 * 1024
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size)
            with contextlib.suppress(ConnectionError):
                await w.drain()

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        async with client.stream("GET", "/") as r:
            async for chunk in r.aiter_raw():
                assert chunk
                break
        r2 = await client.get("/")
        assert len(r2.content) == 1024 * 1024
        assert server.connections == 2
        for _ in range(100):
            if eofs:
                break
            await asyncio.sleep(0.01)
        assert eofs == 1


async def test_read_timeout() -> None:
    """A server that never answers raises httpx.ReadTimeout after the read timeout, and
    the connection is not reused."""
    release = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        if n == 1:
            await release.wait()
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
            await read_request(r)

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/", timeout=httpx.Timeout(5.0, read=0.2))
        assert (await client.get("/")).status_code == 200
        assert server.connections == 2
        release.set()


async def test_pool_timeout_when_every_connection_is_busy() -> None:
    """With max_connections=1 and a response still streaming, another request raises
    httpx.PoolTimeout; once the first finishes the pool serves again."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        size = 200_000
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"z" * size)
        await w.drain()
        await serve_forever(r, w, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!")

    async with (
        RawServer(handler) as server,
        fast_client(server.url, max_connections=1) as (client, _),
    ):
        async with client.stream("GET", "/") as r:
            with pytest.raises(httpx.PoolTimeout):
                await client.get("/", timeout=httpx.Timeout(5.0, pool=0.1))
            assert len(await r.aread()) == 200_000
        assert (await client.get("/")).content == b"!"
        assert server.connections == 1


async def test_connect_refused_is_connect_error() -> None:
    """A closed port raises httpx.ConnectError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with fast_client(f"http://127.0.0.1:{port}") as (client, _):
        with pytest.raises(httpx.ConnectError):
            await client.get("/")


async def test_streamed_request_body_is_sent_chunked() -> None:
    """A request body of unknown length (an async iterator) goes out chunked and arrives
    whole."""
    received: list[RawRequest] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        received.append(await read_request(r))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await w.drain()

    async def parts() -> AsyncIterator[bytes]:
        for piece in (b"abc", b"", b"def" * 1000):
            yield piece

    async with RawServer(handler) as server, fast_client(server.url) as (client, _):
        assert (await client.post("/up", content=parts())).status_code == 200
    assert received[0].headers["transfer-encoding"] == "chunked"
    assert received[0].body == b"abc" + b"def" * 1000


async def test_unsupported_scheme() -> None:
    """A non-http(s) URL raises httpx.UnsupportedProtocol."""
    transport = FastTransport()
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
    await transport.aclose()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_with_a_trusted_certificate(certificate: tuple[Path, Path]) -> None:
    """HTTPS to a uvicorn with a self-signed certificate works when its CA is given, with
    the host name checked and keep-alive reuse over TLS."""
    cert, key = certificate
    async with BackgroundServer(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        url = f"https://127.0.0.1:{server.port}"
        async with fast_client(url, verify=str(cert)) as (client, transport):
            for i in range(3):
                r = await client.post("/echo", params={"i": i}, content=b"secret")
                assert r.json()["body_len"] == 6 and r.json()["query"] == f"i={i}"
            assert transport.connections_opened == 1


async def test_tls_with_verification_off(certificate: tuple[Path, Path]) -> None:
    """verify=False accepts the self-signed certificate without a CA."""
    cert, key = certificate
    server = BackgroundServer(app, ssl_certfile=str(cert), ssl_keyfile=str(key))
    async with server, fast_client(f"https://127.0.0.1:{server.port}", verify=False) as (client, _):
        assert (await client.get("/echo")).json()["method"] == "GET"


async def test_tls_untrusted_certificate_is_connect_error(certificate: tuple[Path, Path]) -> None:
    """With the system CAs only, the self-signed certificate is refused as ConnectError."""
    cert, key = certificate
    server = BackgroundServer(app, ssl_certfile=str(cert), ssl_keyfile=str(key))
    async with server, fast_client(f"https://127.0.0.1:{server.port}") as (client, _):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get("/echo")


# --------------------------------------------------------------------------- Sender


def sender_transport(sender: Sender) -> httpx.AsyncBaseTransport:
    return sender._graph.http()._transport


async def test_sender_uses_fast_transport_by_default_and_can_opt_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Sender's own client runs on FastTransport by default; transport="httpx" and a
    configured proxy in the environment fall back to httpx's transport."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    async with Sender("t", "1") as sender:
        assert isinstance(sender_transport(sender), FastTransport)
    async with Sender("t", "1", transport="httpx") as sender:
        assert not isinstance(sender_transport(sender), FastTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    async with Sender("t", "1") as sender:
        assert not isinstance(sender_transport(sender), FastTransport)
    with pytest.raises(ValueError, match="transport"):
        Sender("t", "1", transport="h2")
    mock = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"messages": [{"id": "wamid.X"}]})
    )
    async with Sender("t", "1", transport=mock) as sender:
        assert sender_transport(sender) is mock
        assert await sender.send_text("15550001111", "hi") == ["wamid.X"]


async def test_transport_choice_is_logged_once_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The Sender's transport choice is logged once per process at DEBUG with the reason:
    FastTransport on asyncio without a proxy; httpcore when a proxy variable is set (naming
    the scheme, never the proxy URL, which may carry a password) or when asked for."""
    import wa_agent._transport as transport_module

    monkeypatch.setattr(transport_module, "_choices_logged", set())
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.DEBUG, logger="wa_agent._transport")

    def lines() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "wa_agent._transport" and r.getMessage().startswith("Sender sends through")
        ]

    for _ in range(3):
        async with Sender("t", "1") as sender:
            sender_transport(sender)
    assert lines() == [
        "Sender sends through FastTransport: transport='auto' on asyncio and no proxy configured"
    ]
    monkeypatch.setenv("HTTPS_PROXY", "http://user:hunter2@127.0.0.1:9")
    for _ in range(2):
        async with Sender("t", "1") as sender:
            assert not isinstance(sender_transport(sender), FastTransport)
    async with Sender("t", "1", transport="httpx") as sender:
        sender_transport(sender)
    logged = lines()
    assert len(logged) == 3
    assert "proxy is configured for https" in logged[1] and "hunter2" not in logged[1]
    assert logged[2].endswith("transport='httpx'")
    assert all(
        r.levelno == logging.DEBUG for r in caplog.records if r.name == "wa_agent._transport"
    )


async def test_sender_upload_and_download_through_fast_transport() -> None:
    """Multipart upload and a 300 kB streamed download round-trip through the emulator;
    a download stopped at the size cap leaves the Sender working on a fresh connection."""
    emulator = CloudAPIEmulator(access_token="tok", phone_number_ids=["123"])
    data = bytes(range(256)) * 1200
    async with emulator.serve() as url:
        sender = Sender("tok", "123", base_url=url, retry=RetryPolicy(max_attempts=1))
        async with sender:
            transport = sender_transport(sender)
            assert isinstance(transport, FastTransport)
            media_id = await sender.upload_media(data, "application/pdf", filename="a.pdf")
            assert emulator.media[media_id].data == data
            got, mime = await sender.download_media(media_id)
            assert got == data and mime == "application/pdf"
            opened = transport.connections_opened
            info = await sender.get_media_url(media_id)
            with pytest.raises(MediaError, match="limit"):
                await sender.download_url(info.url, max_bytes=len(data) - 1000)
            again, _ = await sender.download_media(media_id)
            assert again == data
            assert transport.connections_opened == opened + 1
