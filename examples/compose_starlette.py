"""Two ways into an existing app: the pieces in Starlette, and a whole bot mounted in FastAPI.

1. ``starlette_app()``: a Starlette app whose own ``/webhook`` routes use
   ``SignatureVerifier``, ``MessageParser``, a ``SessionStore`` and a ``Sender`` directly
   (the FastAPI version, with more comments, is ``compose_fastapi.py``).
2. ``fastapi_with_bot()``: an existing FastAPI app with its own routes, and a complete
   ``WhatsAppInterface`` (durable inbox, retries, ordering, health) mounted next to them at
   ``/bot`` through ``InterfaceManager.app``. A mounted app gets no ASGI lifespan of its
   own, so the parent's lifespan opens and closes the manager.

Run the offline demo (a local Cloud API emulator plays Meta; nothing leaves 127.0.0.1)::

    python examples/compose_starlette.py
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from wa_agent import (
    AgentRequest,
    BackgroundServer,
    InboxItem,
    InterfaceManager,
    InvalidPayload,
    InvalidSignature,
    MemorySessionStore,
    Message,
    MessageParser,
    Sender,
    SessionStore,
    SignatureVerifier,
    Turn,
    WhatsAppInterface,
)

logger = logging.getLogger("compose_starlette")

BOT = "reverser"


# --------------------------------------------------------------------------- 1. Starlette


def starlette_app(
    *, app_secret: str, verify_token: str, sender: Sender, store: SessionStore
) -> Starlette:
    """The pieces in Starlette: a bot that answers every text reversed."""
    verifier = SignatureVerifier(app_secret)
    parser = MessageParser()
    locks: dict[str, asyncio.Lock] = {}

    async def answer_pending(user: str) -> None:
        async with locks.setdefault(user, asyncio.Lock()):
            for item in await store.pending(BOT, user):
                message = Message.model_validate_json(item.payload)
                reply = (message.text or "")[::-1] or "(nothing to reverse)"
                await sender.send_text(user, reply, reply_to=message.id)
                await store.complete(
                    BOT, item.id, user, [Turn("user", message.text or ""), Turn("assistant", reply)]
                )

    async def verify(request: Request) -> Response:
        query = request.query_params
        token_ok = hmac.compare_digest(
            query.get("hub.verify_token", "").encode(), verify_token.encode()
        )
        if query.get("hub.mode") == "subscribe" and token_ok:
            return PlainTextResponse(query.get("hub.challenge", ""))
        return PlainTextResponse("verification failed", status_code=403)

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            verifier.verify(body, request.headers.get("x-hub-signature-256"))
            events = parser.parse(body)
        except InvalidSignature:
            return JSONResponse({"status": "invalid_signature"}, status_code=403)
        except InvalidPayload:
            return JSONResponse({"status": "invalid_payload"})
        messages = [e for e in events if isinstance(e, Message)]
        fresh = await store.add_inbound(
            BOT, [InboxItem(m.id, m.sender, m.model_dump_json(), time.time()) for m in messages]
        )
        users = sorted({m.sender for m, new in zip(messages, fresh, strict=True) if new})

        async def answer_all() -> None:
            for user in users:
                await answer_pending(user)

        return JSONResponse(
            {"status": "processing" if users else "ignored"},
            background=BackgroundTask(answer_all) if users else None,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.aclose()

    return Starlette(
        routes=[
            Route("/webhook", verify, methods=["GET"]),
            Route("/webhook", receive, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


# --------------------------------------------------------------------------- 2. mounted bot


async def greeter(request: AgentRequest) -> str:
    """The mounted bot's agent (CHAT mode: it sees the sender's own history)."""
    earlier = sum(turn.role == "user" for turn in request.history)
    return f"Hello {request.profile_name or request.sender}! Earlier messages: {earlier}."


def fastapi_with_bot(interface: WhatsAppInterface) -> FastAPI:
    """An existing FastAPI app, with the interface's manager mounted at ``/bot``."""
    manager = InterfaceManager([interface])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.open()  # store, Sender, heartbeat, inbox leftovers
        try:
            yield
        finally:
            await manager.close()  # finishes in-flight replies, within a bound

    app = FastAPI(lifespan=lifespan)

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:  # the app's own business
        return {"order": order_id, "status": "shipped"}

    app.mount("/bot", manager.app)  # /bot/whatsapp/webhook and /bot/whatsapp/health
    return app


# --------------------------------------------------------------------------- offline demo


async def main() -> None:
    """Serve both apps on 127.0.0.1 against the Cloud API emulator and play Meta's part."""
    from wa_agent.testing import CloudAPIEmulator, webhooks

    token, secret, verify_token = "demo-token", "demo-app-secret", "demo-verify-token"
    signer = SignatureVerifier(secret)
    emulator = CloudAPIEmulator(access_token=token)

    async def post(
        http: httpx.AsyncClient, path: str, number: str, text: str, name: str | None = None
    ) -> str:
        item = webhooks.text_message(number, text)
        profiles = {number: name} if name else None
        body = webhooks.encode(webhooks.envelope(messages=[item], profiles=profiles))
        response = await http.post(
            path,
            content=body,
            headers={"content-type": "application/json", "x-hub-signature-256": signer.sign(body)},
        )
        return f"{response.status_code} {response.json()['status']}"

    async with (
        emulator.serve() as graph_url,
        Sender(token, "100000000000001", base_url=graph_url) as sender,
        httpx.AsyncClient() as http,
    ):
        # 1. the pieces in Starlette
        store = MemorySessionStore()
        app1 = starlette_app(
            app_secret=secret, verify_token=verify_token, sender=sender, store=store
        )
        async with BackgroundServer(app1) as server:
            r = await http.get(
                f"{server.url}/webhook",
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": verify_token,
                    "hub.challenge": "42",
                },
            )
            print(f"starlette GET /webhook: {r.status_code} {r.text}")
            print(
                f"starlette POST 'stressed': "
                f"{await post(http, f'{server.url}/webhook', '15551230001', 'stressed')}"
            )
            await emulator.wait_for_messages(1, timeout=10)
            print(f"starlette reply: {emulator.messages[-1].text}")

        # 2. a WhatsAppInterface mounted inside an existing FastAPI app
        interface = WhatsAppInterface(
            greeter, mode="chat", app_secret=secret, verify_token=verify_token, sender=sender
        )
        app2 = fastapi_with_bot(interface)
        async with BackgroundServer(app2) as server:
            r = await http.get(f"{server.url}/orders/7")
            print(f"fastapi GET /orders/7: {r.status_code} {r.json()}")
            webhook = f"{server.url}/bot/whatsapp/webhook"
            r = await http.get(
                webhook,
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": verify_token,
                    "hub.challenge": "43",
                },
            )
            print(f"fastapi GET /bot/whatsapp/webhook: {r.status_code} {r.text}")
            for text in ("hi", "me again"):
                status = await post(http, webhook, "15551230002", text, name="Bea")
                print(f"fastapi POST {text!r}: {status}")
                await interface.drain(10)
            for message in emulator.sent_to("15551230002"):
                print(f"mounted bot reply: {message.text}")
            health = (await http.get(f"{server.url}/bot/whatsapp/health")).json()
            print(
                f"mounted bot health: received={health['received']} "
                f"processed={health['processed']} mode={health['mode']}"
            )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
