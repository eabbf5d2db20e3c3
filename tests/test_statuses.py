"""Status webhooks: delivery state only moves forward, and redeliveries are dropped."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from wa_agent import AgentRequest, StatusUpdate, WhatsAppInterface
from wa_agent.testing import Simulator, webhooks


async def echo(request: AgentRequest) -> str:
    return request.text


class Recorder:
    """A ConversationListener that keeps the status updates it is told about."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, str]] = []

    def status(self, update: StatusUpdate) -> None:
        self.statuses.append((update.id, update.status))

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


async def test_redelivered_and_overtaken_statuses_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A status delivered twice reaches listeners once; one that arrives after a later
    state (delivered after read) is dropped; a failed status is logged once even if Meta
    delivers it three times."""
    interface = WhatsAppInterface(echo)
    recorder = Recorder()
    interface.listeners.append(recorder)
    async with Simulator(interface, statuses=False) as sim:
        reply = await sim.user("15551230001").ask("hi")

        def body(status: str, wamid: str = reply.wamid) -> dict[str, Any]:
            errors = (
                [{"code": 131026, "title": "Message undeliverable"}] if status == "failed" else None
            )
            return webhooks.envelope(
                statuses=[webhooks.status_item(wamid, status, "15551230001", errors=errors)]
            )

        await sim.deliver(body("sent"), times=2, concurrently=False)
        await sim.deliver(body("read"))
        await sim.deliver(body("delivered"))  # overtaken by "read"
        await sim.settle()
        assert recorder.statuses == [(reply.wamid, "sent"), (reply.wamid, "read")]
        assert await interface.store.get_status(interface.name, reply.wamid) == "read"

        other = await sim.user("15551230002").ask("hello")
        with caplog.at_level(logging.WARNING, logger="wa_agent.interface"):
            await sim.deliver(body("failed", other.wamid), times=3, concurrently=False)
            await sim.settle()
        failed_logs = [r for r in caplog.records if "failed (codes 131026)" in r.getMessage()]
        assert len(failed_logs) == 1
        assert recorder.statuses[-1] == (other.wamid, "failed")
        assert recorder.statuses.count((other.wamid, "failed")) == 1
