"""Proactive messages from your own app: ``HeartbeatScheduler`` and ``Sender``, no interface.

The scheduler knows nothing about WhatsApp. It is given three callables: ``run`` writes the
message (an agent, a model, a template engine, a database query...), ``deliver`` sends it,
and ``recipient`` says to whom. This app keeps the recipient and each user's last message
time in a ``SessionStore`` and respects WhatsApp's 24-hour rule: inside the window it sends
free text; outside, an approved template, or it skips the beat. A ``StoreLease`` makes sure
only one process beats when several run the same app on a shared store (Redis).

Beats are due on a fixed grid. For a daily 09:00 UTC message::

    HeartbeatScheduler(timedelta(days=1), ..., first_beat_after=until(time(9, 0)))

Run the offline demo (a local Cloud API emulator plays Meta; nothing leaves 127.0.0.1)::

    python examples/heartbeat_only.py
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any

import anyio

from wa_agent import (
    HeartbeatScheduler,
    MemorySessionStore,
    Sender,
    SessionStore,
    SkipBeat,
    StoreLease,
    within_service_window,
)

logger = logging.getLogger("heartbeat_only")

BOT = "reminders"  # the store namespace
TIPS = ["drink a glass of water", "stand up and stretch", "look out of the window"]


def until(at: time, now: datetime | None = None) -> timedelta:
    """Time from ``now`` (UTC) to the next ``at`` (UTC): a daily beat's ``first_beat_after``."""
    now = now or datetime.now(UTC)
    due = datetime.combine(now.date(), at, tzinfo=UTC)
    if due <= now:
        due += timedelta(days=1)
    return due - now


class Reminders:
    """The app's part: what to send, and how, to whom."""

    def __init__(
        self, store: SessionStore, sender: Sender, template: dict[str, Any] | None = None
    ) -> None:
        self.store = store
        self.sender = sender
        self.template = template  # {"name": ..., "language": ...}: used outside the window
        self._tips = itertools.cycle(TIPS)

    async def write(self, message: str, recipient: str) -> str:
        """``run``: write the message (an agent could be asked ``message`` here)."""
        return f"Reminder: {next(self._tips)}."

    async def send(self, recipient: str, text: str) -> None:
        """``deliver``: free text inside the 24-hour window, else a template, else skip."""
        last = await self.store.last_inbound(BOT, recipient)
        if within_service_window(last, margin=timedelta(minutes=1)):
            await self.sender.send_text(recipient, text)
        elif self.template is not None:
            await self.sender.send_template(
                recipient, self.template["name"], self.template.get("language", "en_US")
            )
        else:
            raise SkipBeat("outside the 24-hour window and no template configured")

    async def recipient(self) -> str | None:
        """``recipient``: whoever subscribed (kept in the store, shared by every process)."""
        return await self.store.get_heartbeat_recipient(BOT)

    def scheduler(
        self,
        period: float | timedelta,
        *,
        first_beat_after: float | timedelta = 0,
        owner: str | None = None,
    ) -> HeartbeatScheduler[str]:
        """A scheduler for this app; ``owner`` names the process holding the lease."""
        seconds = period.total_seconds() if isinstance(period, timedelta) else period
        return HeartbeatScheduler(
            period,
            "Write today's reminder.",
            run=self.write,
            deliver=self.send,
            recipient=self.recipient,
            name=f"{BOT} heartbeat",
            lease=StoreLease(
                self.store, f"heartbeat:{BOT}", ttl=max(2 * seconds, 1.0), owner=owner
            ),
            first_beat_after=first_beat_after,
            timeout=30,
        )


# --------------------------------------------------------------------------- offline demo


async def main() -> None:
    """Beat a few times into the emulator, then show the 24-hour rule and the lease."""
    from wa_agent.testing import CloudAPIEmulator

    alice, bob = "15551230001", "15551230002"
    emulator = CloudAPIEmulator(access_token="demo-token")
    async with (
        emulator.serve() as graph_url,
        Sender("demo-token", "100000000000001", base_url=graph_url) as sender,
        MemorySessionStore() as store,
    ):
        await store.set_heartbeat_recipient(BOT, alice)
        await store.touch_inbound(BOT, alice, datetime.now(UTC) - timedelta(hours=1))
        app = Reminders(store, sender, template={"name": "daily_reminder"})

        # 1. The loop: every 0.2 s here (timedelta(days=1) for real), in a task group.
        scheduler = app.scheduler(0.2, owner="process-1")
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            await emulator.wait_for_messages(3, to=alice, timeout=10)
            tg.cancel_scope.cancel()
        for message in emulator.sent_to(alice)[:3]:
            print(f"beat -> {message.to}: {message.text}")

        # 2. The recipient is now Bob, who last wrote 25 hours ago: free text is not
        #    allowed (131047), so the template goes out.
        await store.set_heartbeat_recipient(BOT, bob, overwrite=True)
        await store.touch_inbound(BOT, bob, datetime.now(UTC) - timedelta(hours=25))
        result = await scheduler.beat_once()
        sent = emulator.sent_to(bob)
        print(
            f"outside the window: {result.summary}, sent a {sent[0].type} "
            f"{sent[0].content['name']!r}"
        )

        # 3. Without a template the beat is skipped (and logged), not failed.
        app.template = None
        print(f"outside the window, no template: {(await scheduler.beat_once()).summary}")

        # 4. A second process of the same app on the same store: the lease is held.
        other = app.scheduler(0.2, owner="process-2")
        print(f"second process: {(await other.beat_once()).summary}")
        state = scheduler.state()
        print(
            f"first process: delivered={state['delivered']} skipped={state['skipped']} "
            f"failures={state['failures']}"
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
