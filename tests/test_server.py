"""BackgroundServer: uvicorn on the current loop, safe to start and stop repeatedly."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from wa_agent.server import BackgroundServer, ServerStartError, _bind


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_accepted_connections_have_tcp_nodelay() -> None:
    """The listening socket is created as IPPROTO_TCP so asyncio turns Nagle off on every
    accepted connection (without it, keep-alive requests stall ~40 ms on delayed ACKs)."""
    sock = _bind("127.0.0.1", 0)
    accepted: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            raw = transport.get_extra_info("socket")
            accepted.append(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(100):
            if accepted:
                break
            await asyncio.sleep(0.01)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert accepted and accepted[0] != 0


async def test_start_stop_start_on_the_same_port() -> None:
    """stop() frees the port: a new server can listen on it at once."""
    first = BackgroundServer(_hello)
    await first.start()
    port = first.port
    async with httpx.AsyncClient() as client:
        assert (await client.get(first.url)).text == "hello"
    await first.stop()
    second = BackgroundServer(_hello, port=port)
    await second.start()
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(second.url)).text == "hello"
    finally:
        await second.stop()


async def test_port_clash_raises_oserror_and_keeps_the_loop() -> None:
    """A second server on a taken port raises OSError with a hint; nothing exits."""
    async with BackgroundServer(_hello) as running:
        with pytest.raises(OSError, match="pass port=0"):
            await BackgroundServer(_hello, port=running.port).start()
        async with httpx.AsyncClient() as client:
            assert (await client.get(running.url)).status_code == 200


async def test_failed_startup_is_an_exception_not_an_exit() -> None:
    """A lifespan startup failure becomes ServerStartError instead of uvicorn's sys.exit."""

    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no config"})

    with pytest.raises(ServerStartError):
        await BackgroundServer(broken).start()
