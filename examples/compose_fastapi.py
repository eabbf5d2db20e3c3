"""Compose your own bot in FastAPI from wa_agent's pieces: no WhatsAppInterface.

The webhook route is yours. It uses four pieces directly:

* ``SignatureVerifier`` checks ``X-Hub-Signature-256`` over the raw body bytes;
* ``MessageParser`` turns the body into events;
* a ``SessionStore`` records each new message in its durable inbox (deduplicated by wamid)
  and keeps each user's history, here used as a per-user message counter;
* ``Sender`` marks the message read and sends the answer through the Cloud API.

The route answers 200 once the message is recorded, then a background task replies. Each
user's messages are answered in order, one at a time; whatever is still in the inbox at
start-up (a crash between the 200 and the reply) is answered then. (FastAPI runs background
tasks after the response, on the same connection; when answers are slow, hand them to a
queue of workers instead: see ``worker.py``.)

Run the offline demo (a local Cloud API emulator plays Meta; nothing leaves 127.0.0.1)::

    python examples/compose_fastapi.py

Serve it for real (the four ``WHATSAPP_*`` variables set; state in ``compose_fastapi.db``)::

    uvicorn --factory compose_fastapi:app_from_env --app-dir examples --port 8000
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import BackgroundTasks, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from wa_agent import (
    BackgroundServer,
    InboxItem,
    InvalidPayload,
    InvalidSignature,
    Message,
    MessageParser,
    Sender,
    SessionStore,
    SignatureVerifier,
    SQLiteSessionStore,
    Turn,
    WhatsAppAPIError,
)

logger = logging.getLogger("compose_fastapi")

#: The name this bot's data is kept under in the store (one store can hold several bots).
BOT = "counter"


def answer(text: str, count: int) -> str:
    """The bot's own logic: number each user's messages."""
    return f"Message #{count} from you: {text!r}"


def create_app(
    *,
    app_secret: str,
    verify_token: str,
    sender: Sender,
    store: SessionStore,
) -> FastAPI:
    """A FastAPI app with ``GET``/``POST /webhook`` built from the pieces."""
    verifier = SignatureVerifier(app_secret)
    parser = MessageParser()
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def reply_to_pending(user: str) -> None:
        """Answer ``user``'s recorded messages, oldest first, one at a time."""
        async with locks[user]:  # one drain per user: answers stay in order
            for item in await store.pending(BOT, user):
                message = Message.model_validate_json(item.payload)
                history = await store.get_history(BOT, user)
                count = 1 + sum(turn.role == "user" for turn in history)
                text = message.text or f"[{message.type}]"
                reply = answer(text, count) if message.type == "text" else "I only read text."
                try:
                    await sender.mark_read(message.id)
                    await sender.send_text(user, reply, reply_to=message.id)
                except WhatsAppAPIError as exc:  # retried per Meta's codes already
                    logger.warning("could not answer %s: %s (code %s)", message.id, exc, exc.code)
                    return  # stays in the inbox; answered at the next start-up
                # Leaves the inbox and enters the history in one step.
                await store.complete(
                    BOT,
                    item.id,
                    user,
                    [
                        Turn("user", text, at=message.timestamp, message_id=message.id),
                        Turn("assistant", reply),
                    ],
                )

    async def reply_safely(user: str) -> None:
        try:
            await reply_to_pending(user)
        except Exception:
            logger.exception("answering %s failed; the message stays in the inbox", user)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        for user in await store.pending_senders(BOT):  # leftovers from a crash
            await reply_safely(user)
        try:
            yield
        finally:
            await sender.aclose()
            await store.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/webhook")
    async def verify(request: Request) -> Response:
        """Meta's handshake: echo ``hub.challenge`` if the verify token matches."""
        query = request.query_params
        token_ok = hmac.compare_digest(
            query.get("hub.verify_token", "").encode(), verify_token.encode()
        )
        if query.get("hub.mode") == "subscribe" and token_ok:
            return PlainTextResponse(query.get("hub.challenge", ""))
        return PlainTextResponse("verification failed", status_code=403)

    @app.post("/webhook")
    async def receive(request: Request, background: BackgroundTasks) -> Response:
        body = await request.body()  # the raw bytes: never re-serialised JSON
        try:
            verifier.verify(body, request.headers.get("x-hub-signature-256"))
        except InvalidSignature as exc:
            logger.warning("refused a webhook: %s", exc)
            return JSONResponse({"status": "invalid_signature"}, status_code=403)
        try:
            events = parser.parse(body)
        except InvalidPayload:
            return JSONResponse({"status": "invalid_payload"})  # 200: a 4xx makes Meta retry
        messages = [e for e in events if isinstance(e, Message)]
        items = [
            InboxItem(
                id=m.id, sender=m.sender, payload=m.model_dump_json(), received_at=time.time()
            )
            for m in messages
        ]
        # Recorded durably before the 200. A StoreError here becomes a 500: Meta redelivers.
        fresh = await store.add_inbound(BOT, items) if items else []
        new_senders = {m.sender for m, is_new in zip(messages, fresh, strict=True) if is_new}
        for message in messages:
            await store.touch_inbound(BOT, message.sender, message.timestamp)
        for user in sorted(new_senders):
            background.add_task(reply_safely, user)
        return JSONResponse({"status": "processing" if new_senders else "ignored"})

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"bot": BOT, "webhook": "/webhook"}

    return app


def app_from_env() -> FastAPI:
    """The app for real WhatsApp traffic, configured from ``WHATSAPP_*`` variables."""
    env = os.environ
    return create_app(
        app_secret=env["WHATSAPP_APP_SECRET"],
        verify_token=env["WHATSAPP_VERIFY_TOKEN"],
        sender=Sender(env["WHATSAPP_ACCESS_TOKEN"], env["WHATSAPP_PHONE_NUMBER_ID"]),
        store=SQLiteSessionStore(env.get("COMPOSE_FASTAPI_DB", "compose_fastapi.db")),
    )


# --------------------------------------------------------------------------- offline demo


async def main() -> None:
    """Run the app on 127.0.0.1 against the Cloud API emulator and play Meta's part."""
    from wa_agent import MemorySessionStore
    from wa_agent.testing import CloudAPIEmulator, webhooks

    token, secret, verify_token = "demo-token", "demo-app-secret", "demo-verify-token"
    emulator = CloudAPIEmulator(access_token=token)
    async with emulator.serve() as graph_url:
        sender = Sender(token, "100000000000001", base_url=graph_url)
        store = MemorySessionStore()
        app = create_app(app_secret=secret, verify_token=verify_token, sender=sender, store=store)
        async with BackgroundServer(app) as server, httpx.AsyncClient(base_url=server.url) as http:
            handshake = {
                "hub.mode": "subscribe",
                "hub.verify_token": verify_token,
                "hub.challenge": "1158201444",
            }
            r = await http.get("/webhook", params=handshake)
            print(f"GET /webhook, right token: {r.status_code} {r.text}")
            r = await http.get("/webhook", params=handshake | {"hub.verify_token": "guess"})
            print(f"GET /webhook, wrong token: {r.status_code}")

            signer = SignatureVerifier(secret)

            async def post(item: dict[str, object], *, signed: bool = True) -> str:
                body = webhooks.encode(webhooks.envelope(messages=[item]))  # Meta's bytes
                headers = {"content-type": "application/json"}
                if signed:
                    headers["x-hub-signature-256"] = signer.sign(body)
                response = await http.post("/webhook", content=body, headers=headers)
                return f"{response.status_code} {response.json()['status']}"

            alice, bob = "15551230001", "15551230002"
            first = webhooks.text_message(alice, "hello")
            print(f"POST Alice 'hello': {await post(first)}")
            print(f"POST Alice 'hello' again (Meta redelivers): {await post(first)}")
            print(f"POST Bob 'Grüße 👋': {await post(webhooks.text_message(bob, 'Grüße 👋'))}")
            print(f"POST Alice 'again': {await post(webhooks.text_message(alice, 'again'))}")
            forged = webhooks.text_message(alice, "forged")
            print(f"POST unsigned: {await post(forged, signed=False)}")

            for _ in range(500):  # until every recorded message is answered (at most 5 s)
                if not await store.pending_senders(BOT):
                    break
                await asyncio.sleep(0.01)
            for message in emulator.messages:
                print(f"reply to {message.to}: {message.text}")
            print(f"messages marked read: {len(emulator.reads)}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
