"""What the webhook app logs when the store fails: one line per failure, a periodic summary,
the traceback only at DEBUG, and a line when webhooks are recorded again (issue 22.9)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.helpers import sign, text_webhook
from wa_agent import Event, StoreError
from wa_agent.asgi import WebhookApp

SECRET = "test-app-secret"
LOGGER = "wa_agent.asgi"


class FlakyStore:
    """A consumer whose recording fails (StoreError) while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = True

    async def accept_body(self, body: bytes) -> str | None:
        return None

    async def accept(self, events: list[Event]) -> str:
        if self.failing:
            raise StoreError("database is locked\n  (while writing /var/lib/bot/state.db)")
        return "processing"

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def post(client: httpx.AsyncClient) -> int:
    body = text_webhook("15551230001", "hi")
    headers = {"content-type": "application/json", "x-hub-signature-256": sign(body, SECRET)}
    return (await client.post("/webhook", content=body, headers=headers)).status_code


async def test_store_failures_log_one_line_each_and_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five store failures 20 s apart: five single-line ERRORs naming the exception type
    and message (no traceback above DEBUG), one WARNING summary once 60 s of failures have
    passed, the tracebacks at DEBUG only; the next recorded webhook logs one INFO line."""
    consumer = FlakyStore()
    app = WebhookApp(consumer, app_secret=SECRET)
    clock = Clock()
    app._store_failures.clock = clock
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        for _ in range(5):
            assert await post(client) == 500
            clock.now += 20
        assert app.store_failures == 5
        consumer.failing = False
        assert await post(client) == 200
        assert await post(client) == 200
        assert app.store_failures == 5
    ours = [r for r in caplog.records if r.name == LOGGER]
    errors = [r.getMessage() for r in ours if r.levelno == logging.ERROR]
    assert (
        errors
        == [
            (
                "could not record a webhook (StoreError: database is locked (while "
                "writing /var/lib/bot/state.db)); answered 500 so Meta redelivers it"
            )
        ]
        * 5
    )
    assert all(r.exc_info is None for r in ours if r.levelno >= logging.INFO)
    assert sum(1 for r in ours if r.levelno == logging.DEBUG and r.exc_info) == 5
    summaries = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert summaries == [
        (
            "4 store failures in the last 60 s (4 since start); webhooks are "
            "answered 500 and redelivered by Meta"
        )
    ]
    infos = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    assert infos == ["recording webhooks again after 5 store failure(s)"]


async def test_a_store_failure_logs_no_traceback_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """At INFO (a production level) one store failure is one log line, not a traceback
    of dozens of lines."""
    app = WebhookApp(FlakyStore(), app_secret=SECRET)
    caplog.set_level(logging.INFO)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        assert await post(client) == 500
    ours = [r for r in caplog.records if r.name.startswith("wa_agent")]
    assert len(ours) == 1 and ours[0].exc_info is None
    assert "Traceback" not in caplog.text
