"""One heartbeat worker for the scale-out test: ``python -m tests.heartbeat_process ...``.

It runs a :class:`~wa_agent.WhatsAppInterface` (no web server: the heartbeat needs none) on a
shared :class:`~wa_agent.stores.redis.RedisSessionStore`, with an agent shaped like the seed's
(``heartbeat=True``, ``heartbeat_period`` in minutes, ``heartbeat_message``). Every beat it
delivers says ``beat from <pid>``, so the test, which owns the Cloud API emulator the beats
go to, can tell which worker sent each one. It prints ``ready <pid>`` once started and runs
until it is killed (``SIGKILL`` in the takeover test) or gets ``SIGTERM``/``SIGINT`` (then it
stops the interface, which hands the heartbeat lease over).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from wa_agent.interface import WhatsAppInterface
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.stores.redis import RedisSessionStore

PHONE_NUMBER_ID = "100000000000001"
ACCESS_TOKEN = "test-token"
INTERFACE_NAME = "beats"


class SeedShapedAgent:
    """An agent object like the seed's autonomous agent: heartbeat settings as attributes."""

    heartbeat = True
    heartbeat_message = "Write the user a short check-in."

    def __init__(self, period_s: float) -> None:
        self.heartbeat_period = period_s / 60  # minutes, as in the seed

    async def do_async(self, task: str) -> str:
        """Answer a heartbeat with a line naming this process."""
        return f"beat from {os.getpid()}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--redis", required=True, help="redis://host:port/db")
    p.add_argument("--prefix", required=True)
    p.add_argument("--emulator", required=True, help="base URL of the Cloud API emulator")
    p.add_argument("--recipient", required=True)
    p.add_argument("--period", type=float, required=True, help="seconds between beats")
    p.add_argument("--lease-ttl", type=float, required=True, help="heartbeat lease, seconds")
    return p.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    """Run one worker until a signal (or SIGKILL)."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {os.getpid()} %(name)s %(levelname)s %(message)s",
    )
    sender = Sender(
        ACCESS_TOKEN, PHONE_NUMBER_ID, base_url=args.emulator, retry=RetryPolicy(scale=0.01)
    )
    interface = WhatsAppInterface(
        SeedShapedAgent(args.period),
        name=INTERFACE_NAME,
        storage=RedisSessionStore(args.redis, prefix=args.prefix),
        heartbeat_recipient=args.recipient,
        heartbeat_lease_ttl=args.lease_ttl,
        sender=sender,
        verify_token="unused",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with interface:
            print(f"ready {os.getpid()}", flush=True)
            await stop.wait()
    finally:
        await sender.aclose()


if __name__ == "__main__":
    asyncio.run(main())
