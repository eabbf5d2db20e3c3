"""A raw ASGI driver for hostile-input tests: calls an ASGI app directly with a scope and
hand-made ``receive``/``send`` callables, so a test controls exactly what a server would
pass through (chunked bodies without a length, duplicated or odd headers, a disconnect) and
sees exactly what the app does (every ``receive()`` it makes, every byte it consumes, every
message it sends, any exception it lets out).

Used by ``tests/test_fuzz.py``, ``tests/test_security.py`` and ``scripts/fuzz_long.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Exchange", "ProtocolViolation", "call_asgi"]

Headers = Iterable[tuple[bytes, bytes]]


class ProtocolViolation(AssertionError):
    """The app broke the ASGI HTTP protocol (two response starts, body before start, ...)."""


@dataclass
class Exchange:
    """What happened during one request."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    #: ``receive()`` calls the app made, and body bytes it was handed.
    receive_calls: int = 0
    bytes_consumed: int = 0
    #: An exception the app let out of its ASGI callable (``None`` is the only right value).
    raised: BaseException | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


async def call_asgi(
    app: Any,
    *,
    method: str = "POST",
    path: str = "/webhook",
    query: bytes = b"",
    headers: Headers = (),
    chunks: Iterable[bytes] = (),
    disconnect: bool = False,
    root_path: str = "",
) -> Exchange:
    """Run one HTTP request through ``app`` and return the :class:`Exchange`.

    ``chunks`` is consumed lazily, one ``http.request`` message per chunk (the last one with
    ``more_body=False``), so a test can offer a practically endless body and count how much
    of it the app actually pulled. ``disconnect=True`` ends the body with ``http.disconnect``
    instead of a final chunk. After the body, ``receive()`` answers ``http.disconnect`` as
    servers do once the client is gone.
    """
    ex = Exchange()
    source: Iterator[bytes] = iter(chunks)
    pending: bytes | None = next(source, None)
    body_done = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal pending, body_done
        ex.receive_calls += 1
        await asyncio.sleep(0)  # a real server yields here too
        if body_done:
            return {"type": "http.disconnect"}
        if pending is None:
            body_done = True
            if disconnect:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = pending
        pending = next(source, None)
        ex.bytes_consumed += len(chunk)
        more = pending is not None or disconnect
        if not more:
            body_done = True
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(message: MutableMapping[str, Any]) -> None:
        kind = message.get("type")
        if ex.complete:
            raise ProtocolViolation(f"{kind} sent after the response was complete")
        if kind == "http.response.start":
            if ex.status is not None:
                raise ProtocolViolation("two http.response.start messages")
            status = message["status"]
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise ProtocolViolation(f"bad status {status!r}")
            ex.status = status
            ex.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif kind == "http.response.body":
            if ex.status is None:
                raise ProtocolViolation("response body before http.response.start")
            ex.body += bytes(message.get("body", b""))
            if not message.get("more_body", False):
                ex.complete = True
        else:
            raise ProtocolViolation(f"unexpected message type {kind!r}")

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode("latin-1", "replace"),
        "root_path": root_path,
        "query_string": query,
        "headers": [(k.lower(), v) for k, v in headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    try:
        await app(scope, receive, send)
    except (ProtocolViolation, asyncio.CancelledError):
        raise
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        ex.raised = exc
    return ex
