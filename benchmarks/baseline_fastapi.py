"""The baseline for the end-to-end benchmark: a FastAPI webhook the way the existing agent
framework integrations write it.

It verifies the HMAC, parses the JSON, queues one background task per text message, answers
``200`` and, in the background task, runs the agent and sends the reply with a fresh
``httpx.AsyncClient`` per reply (``async with httpx.AsyncClient() as client: ...``). No
dedupe, no durable inbox, no bound on concurrent work, no retries.

(This module deliberately has no ``from __future__ import annotations``: FastAPI reads the
endpoint's annotations at runtime.)
"""

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request


def make_app(
    app_secret: str, graph_url: str, access_token: str, phone_number_id: str, agent_delay: float
) -> FastAPI:
    """The baseline app; replies go to ``graph_url`` (the emulator)."""
    key = app_secret.encode()
    url = f"{graph_url}/v25.0/{phone_number_id}/messages"
    headers = {"Authorization": f"Bearer {access_token}"}
    app = FastAPI()

    async def answer(message: dict[str, Any]) -> None:
        if agent_delay:
            await asyncio.sleep(agent_delay)
        reply = f"ok {message['id']}"
        async with httpx.AsyncClient() as client:  # a fresh client per reply
            await client.post(
                url,
                headers=headers,
                json={
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": message["from"],
                    "type": "text",
                    "text": {"body": reply},
                },
            )

    @app.post("/whatsapp/webhook")
    async def webhook(request: Request, background_tasks: BackgroundTasks) -> dict[str, str]:
        body = await request.body()
        signature = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise HTTPException(status_code=403, detail="invalid signature")
        data = json.loads(body)
        for entry in data.get("entry", []):
            for change in entry.get("changes", []):
                for message in change.get("value", {}).get("messages", []):
                    if message.get("type") == "text":
                        background_tasks.add_task(answer, message)
        return {"status": "ok"}

    return app
