"""The lean reference bot of the conversational benchmarks: what a careful developer would
write by hand with no guarantees at all.

A raw ASGI app (no framework) that verifies the HMAC, parses the JSON, answers ``200`` at
once and starts one asyncio task per text message. The task optionally marks the message
read with the typing indicator (``read_receipt=True``: the same two Graph calls per
message as wa_agent), waits for the agent, and sends the reply through ONE shared
``httpx.AsyncClient``, at most 64 Graph calls in flight (a semaphore: with thousands of
calls due at once httpcore's pool bookkeeping would otherwise eat the event loop,
encode/httpcore#1035, and the reference would measure that instead). No dedupe, no durable
inbox, no ordering, no retries, no bound on agents: its replies are in order only when its
agents happen to finish in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def make_app(
    app_secret: str,
    graph_url: str,
    access_token: str,
    phone_number_id: str,
    agent_delay: float,
    *,
    read_receipt: bool = False,
) -> Any:
    key = app_secret.encode()
    url = f"{graph_url}/v25.0/{phone_number_id}/messages"
    client: httpx.AsyncClient | None = None
    tasks: set[asyncio.Task[None]] = set()
    calls = asyncio.Semaphore(64)

    async def post(body: dict[str, Any]) -> None:
        assert client is not None
        async with calls:
            await client.post(url, json=body)

    async def answer(message: dict[str, Any]) -> None:
        if read_receipt:
            await post(
                {
                    "messaging_product": "whatsapp",
                    "status": "read",
                    "message_id": message["id"],
                    "typing_indicator": {"type": "text"},
                }
            )
        if agent_delay:
            await asyncio.sleep(agent_delay)
        await post(
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": message["from"],
                "type": "text",
                "text": {"body": f"ok {message['id']}"},
            }
        )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    client = httpx.AsyncClient(
                        headers={"Authorization": f"Bearer {access_token}"},
                        limits=httpx.Limits(max_connections=64),
                        timeout=30.0,
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if client is not None:
                        await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        signature = b""
        for name, value in scope["headers"]:
            if name == b"x-hub-signature-256":
                signature = value
        expected = b"sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        status = 200 if hmac.compare_digest(expected, signature) else 403
        if status == 200:
            data = json.loads(body)
            for entry in data.get("entry", []):
                for change in entry.get("changes", []):
                    for message in change.get("value", {}).get("messages", []):
                        if message.get("type") == "text":
                            task = asyncio.get_running_loop().create_task(answer(message))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})

    return app
