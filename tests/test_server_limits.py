"""Request limits of wa_agent's servers (``ServerLimits``), with real sockets on loopback:
oversized request heads are refused before they are buffered, stalled heads and bodies are
closed after their timeout, ordinary traffic (keep-alive, Meta-sized webhooks) is untouched;
for uvicorn's httptools parser (the ``fast`` extra) and for h11, in-process and through
``wa-agent serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import free_port
from wa_agent.server import DEFAULT_LIMITS, BackgroundServer, ServerLimits, uvicorn_options

PARSERS = ["httptools", "h11"]
SHORT = ServerLimits(head_timeout=0.5, body_timeout=0.5)


class App:
    """An ASGI app that reads the whole body and answers 200 with its size; it records
    what each request saw (``"disconnect"`` when the body never completed)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.seen.append("disconnect")
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.seen.append(f"{scope['method']} {size}")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(str(size))).encode())],
            }
        )
        await send({"type": "http.response.body", "body": str(size).encode()})


@contextlib.asynccontextmanager
async def serving(
    parser: str, limits: ServerLimits | None = DEFAULT_LIMITS
) -> AsyncIterator[tuple[App, int]]:
    app = App()
    async with BackgroundServer(app, limits=limits, http=parser) as server:
        yield app, server.port


async def exchange(port: int, *parts: bytes, read_timeout: float = 10.0) -> bytes:
    """Send ``parts`` on a fresh connection and read until the server closes it (or
    ``read_timeout``). A reset counts as a close; what arrived before it is returned."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        with contextlib.suppress(ConnectionError):
            for part in parts:
                writer.write(part)
                await writer.drain()
        async with asyncio.timeout(read_timeout):
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received


@pytest.mark.parametrize("parser", PARSERS)
async def test_oversized_headers_are_refused(parser: str) -> None:
    """A request whose headers exceed max_header_bytes gets 431 (or a closed connection,
    when the client is still writing) and never reaches the app; the server stays up."""
    async with serving(parser) as (app, port):
        answer = await exchange(
            port,
            b"POST /webhook HTTP/1.1\r\nhost: x\r\nx-big: "
            + b"a" * (1 << 20)
            + b"\r\ncontent-length: 0\r\n\r\n",
        )
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        assert app.seen == []
        small = await exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert small.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_head_just_over_the_cap_gets_431(parser: str) -> None:
    """A client that sent its whole (oversized) head and waits reads the 431 answer."""
    limits = ServerLimits(max_header_bytes=4096)
    async with serving(parser, limits) as (app, port):
        answer = await exchange(
            port, b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        assert b"connection: close" in answer
        assert app.seen == []


@pytest.mark.parametrize("parser", PARSERS)
async def test_head_and_a_large_body_in_one_write_are_served(parser: str) -> None:
    """Only the head counts: a request written at once with a 60 KiB head (just under the
    cap) and a 2 MB body, so the server's first reads carry head and body together, is
    served."""
    body = b"y" * 2_000_000
    head = (
        b"POST /webhook HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-pad: "
        + b"p" * 60_000
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    async with serving(parser) as (app, port):
        answer = await exchange(port, head + body)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b"2000000")
        assert app.seen == ["POST 2000000"]


@pytest.mark.parametrize("parser", PARSERS)
async def test_an_oversized_url_is_refused(parser: str) -> None:
    """The URL counts towards the cap: a 100 KiB query string is refused."""
    async with serving(parser) as (app, port):
        answer = await exchange(
            port, b"GET /health?x=" + b"b" * 100_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        assert app.seen == []


@pytest.mark.parametrize("parser", PARSERS)
async def test_keep_alive_requests_each_get_the_full_allowance(parser: str) -> None:
    """Five requests on one keep-alive connection, each with 40 KiB of headers (200 KiB in
    all, over the 64 KiB cap) and a body: the count starts again at every request."""
    async with (
        serving(parser) as (app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        for n in range(5):
            response = await client.post(
                "/webhook", content=b"x" * (1000 + n), headers={"x-pad": "p" * 40_000}
            )
            assert response.status_code == 200
            assert response.text == str(1000 + n)
        assert app.seen == [f"POST {1000 + n}" for n in range(5)]


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_stalled_chunked_body_is_closed_after_the_body_timeout(parser: str) -> None:
    """A chunked upload that stops after its first chunk is answered 408 and closed once
    body_timeout (0.5 s here) has passed; the app sees a disconnect."""
    async with serving(parser, SHORT) as (app, port):
        answer = await exchange(
            port,
            b"POST /webhook HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        for _ in range(100):
            if app.seen:
                break
            await asyncio.sleep(0.01)
        assert app.seen == ["disconnect"]


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_body_shorter_than_its_content_length_is_closed(parser: str) -> None:
    """A body that never reaches its Content-Length is closed after body_timeout too."""
    async with serving(parser, SHORT) as (app, port):
        answer = await exchange(
            port, b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc"
        )
        assert answer.startswith(b"HTTP/1.1 408 ")
        for _ in range(100):
            if app.seen:
                break
            await asyncio.sleep(0.01)
        assert app.seen == ["disconnect"]


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_stalled_head_and_a_silent_connection_are_closed(parser: str) -> None:
    """Headers that never end, and a connection that never sends anything, are answered
    408 and closed after head_timeout (0.5 s here)."""
    async with serving(parser, SHORT) as (app, port):
        answer = await exchange(port, b"POST /webhook HTTP/1.1\r\nhost: x\r\nx-slow: 1")
        assert answer.startswith(b"HTTP/1.1 408 ")
        silent = await exchange(port)  # connects, sends nothing
        assert silent.startswith(b"HTTP/1.1 408 ")
        assert app.seen == []


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_slow_but_steady_body_within_the_timeout_is_served(parser: str) -> None:
    """A body sent in ten pieces over ~0.3 s with body_timeout=0.5 s is served normally,
    and the connection is kept alive afterwards."""
    async with serving(parser, SHORT) as (app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0.03)
            writer.write(b"z")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readexactly(2), 10) == b"10"
        await asyncio.sleep(0.7)  # longer than both timeouts: idle keep-alive is uvicorn's
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert second.startswith(b"HTTP/1.1 200 ")
        writer.close()
        assert app.seen[:2] == ["POST 10", "GET 0"]


def test_limits_are_validated_and_optional() -> None:
    """Nonsensical limits are refused; ``None`` leaves uvicorn's parser as it is."""
    with pytest.raises(ValueError, match="max_header_bytes"):
        ServerLimits(max_header_bytes=10)
    with pytest.raises(ValueError, match="body_timeout"):
        ServerLimits(body_timeout=0)
    assert uvicorn_options(None) == {"http": "auto"}
    options = uvicorn_options(ServerLimits(max_header_bytes=8192), "h11")
    assert options["h11_max_incomplete_event_size"] == 8192
    assert options["http"].__name__ == "LimitedH11Protocol"


# -- wa-agent serve ---------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def cli_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``wa-agent serve`` (httptools, as with the ``fast`` extra) with a 0.5 s body
    timeout, on a free loopback port."""
    pytest.importorskip("httptools")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update(
        {
            "WHATSAPP_VERIFY_TOKEN": "v",
            "WHATSAPP_APP_SECRET": "s",
            "WHATSAPP_ACCESS_TOKEN": "t",
            "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
        }
    )
    port = free_port()
    log = tmp_path / "serve.log"
    (tmp_path / "mybot.py").write_text("from wa_agent.demo import DemoAgent\nagent = DemoAgent()\n")
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wa_agent",
                "serve",
                "mybot:agent",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage",
                str(tmp_path / "bot.db"),
                "--body-timeout",
                "0.5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (
                    httpx.get(f"http://127.0.0.1:{port}/whatsapp/health", timeout=1).status_code
                    == 200
                ):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log.read_text(errors="replace"))
            time.sleep(0.05)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_wa_agent_serve_caps_headers_without_growing(
    cli_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    """Eight requests with 32 MiB headers against ``wa-agent serve``: each is refused
    (431 or closed) and the server's RSS grows by less than 8 MiB (it used to buffer every
    header: 456 MB for eight); a normal webhook still gets its answer."""
    proc, port = cli_server
    before = _rss_kib(proc.pid)
    big = b"a" * (1 << 20)
    for _ in range(8):
        answer = await exchange(
            port,
            b"POST /whatsapp/webhook HTTP/1.1\r\nhost: x\r\nx-big: ",
            *([big] * 32),
            b"\r\ncontent-length: 0\r\n\r\n",
        )
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    grown = _rss_kib(proc.pid) - before
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/whatsapp/health")
    assert health.status_code == 200


async def test_wa_agent_serve_closes_a_stalled_body(
    cli_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    """``wa-agent serve --body-timeout 0.5``: a chunked webhook upload that stalls is
    answered 408 and closed."""
    _, port = cli_server
    answer = await exchange(
        port,
        b"POST /whatsapp/webhook HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
        b"\r\n5\r\nhello\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_manager_start_applies_the_limits() -> None:
    """``InterfaceManager.start(limits=...)`` serves with those limits."""
    from wa_agent import InterfaceManager, WhatsAppInterface

    async def agent(request: Any) -> str:
        return "ok"

    manager = InterfaceManager(
        [
            WhatsAppInterface(
                agent,
                verify_token="v",
                app_secret="s",
                access_token="t",
                phone_number_id="100000000000001",
            )
        ]
    )
    url = await manager.start("127.0.0.1", 0, limits=ServerLimits(max_header_bytes=4096))
    try:
        port = int(url.rsplit(":", 1)[1])
        answer = await exchange(
            port, b"GET /whatsapp/health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 431 ")
    finally:
        await manager.stop()


def test_wa_agent_serve_refuses_nonsensical_limits(tmp_path: Path) -> None:
    """``wa-agent serve --body-timeout 0`` exits with status 2 and says which setting is
    wrong, before serving anything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update(
        {
            "WHATSAPP_VERIFY_TOKEN": "v",
            "WHATSAPP_APP_SECRET": "s",
            "WHATSAPP_ACCESS_TOKEN": "t",
            "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
        }
    )
    (tmp_path / "mybot.py").write_text("from wa_agent.demo import DemoAgent\nagent = DemoAgent()\n")
    result = subprocess.run(
        [sys.executable, "-m", "wa_agent", "serve", "mybot:agent", "--body-timeout", "0"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "body_timeout must be > 0" in result.stderr
