"""The Redis store against a real ``redis-server``: its connection pool under several hundred
concurrent callers (direct calls and signed webhooks through a real interface), and the
persistence check it makes when it opens (with servers started with and without AOF, and
restarted under the store).

The contract tests shared with the other backends are in ``tests/test_stores.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.redis_server import RedisServer
from wa_agent.agents import AgentRequest
from wa_agent.exceptions import StoreError
from wa_agent.stores import InboxItem
from wa_agent.testing import webhooks
from wa_agent.testing.simulator import Simulator

pytest.importorskip("redis")
from wa_agent.stores.redis import RedisSessionStore

pytestmark = pytest.mark.redis

IFACE = "WhatsApp"
CONCURRENT = 400


def _item(n: int, sender: str | None = None) -> InboxItem:
    return InboxItem(f"wamid.{n}", sender or f"s{n % 50}", "{}", 1.0 + n)


# -- the connection pool ------------------------------------------------------------------------


async def test_hundreds_of_concurrent_add_inbound_calls_all_succeed(redis_url: str) -> None:
    """400 add_inbound calls at once on a store opened from a URL: every one succeeds (the
    pool waits for a free connection instead of raising "Too many connections") and every
    item is in the inbox."""
    async with RedisSessionStore(redis_url, prefix=f"t{uuid.uuid4().hex}") as store:
        results = await asyncio.gather(
            *(store.add_inbound(IFACE, [_item(n)]) for n in range(CONCURRENT)),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} failed, first: {failures[0]!r}"
        assert results == [[True]] * CONCURRENT
        assert len(await store.pending(IFACE)) == CONCURRENT


async def test_small_pool_makes_callers_wait_not_fail(redis_url: str) -> None:
    """With ``max_connections=4`` the store never opens more than 4 connections, and 400
    concurrent calls still all succeed (they queue for a connection)."""
    import redis.asyncio as aioredis

    prefix = f"t{uuid.uuid4().hex}"
    async with RedisSessionStore(redis_url, prefix=prefix, max_connections=4) as store:
        results = await asyncio.gather(
            *(store.add_inbound(IFACE, [_item(n)]) for n in range(CONCURRENT))
        )
        assert results == [[True]] * CONCURRENT
        async with aioredis.Redis.from_url(redis_url) as observer:
            clients = await observer.client_list()
        # The store names its connections wa_agent:<prefix>; idle ones stay in its pool.
        ours = [c for c in clients if c.get("name") == f"wa_agent:{prefix}"]
        assert 1 <= len(ours) <= 4


async def test_borrowed_client_with_a_small_raising_pool_still_serves_every_call(
    redis_url: str,
) -> None:
    """A borrowed client whose own pool raises at 10 connections (redis-py's default pool
    type) serves 400 concurrent calls: the store queues its calls to fit the pool."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, max_connections=10)
    try:
        async with RedisSessionStore(client=client, prefix=f"t{uuid.uuid4().hex}") as store:
            results = await asyncio.gather(
                *(store.add_inbound(IFACE, [_item(n)]) for n in range(CONCURRENT)),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, f"{len(failures)} failed, first: {failures[0]!r}"
    finally:
        await client.aclose()


async def test_pool_timeout_gives_a_store_error_naming_the_pool(redis_url: str) -> None:
    """When no connection frees up within ``pool_timeout`` the call raises StoreError saying
    so (and how to raise the limit), instead of hanging."""
    async with RedisSessionStore(
        redis_url, prefix=f"t{uuid.uuid4().hex}", max_connections=1, pool_timeout=0.2
    ) as store:
        # BLPOP holds the only connection until it is cancelled.
        blocker = asyncio.ensure_future(
            store._call("block", lambda c: c.blpop([f"t{uuid.uuid4().hex}"], timeout=5))
        )
        await asyncio.sleep(0.1)
        with pytest.raises(StoreError, match="max_connections=1") as info:
            await store.add_inbound(IFACE, [_item(1)])
        assert "pool_timeout" in str(info.value)
        blocker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await blocker
        assert await store.add_inbound(IFACE, [_item(2)]) == [True]  # the slot came back


def test_pool_settings_are_validated() -> None:
    """max_connections below 1 and a negative pool_timeout are refused at construction."""
    with pytest.raises(ValueError, match="max_connections"):
        RedisSessionStore(max_connections=0)
    with pytest.raises(ValueError, match="pool_timeout"):
        RedisSessionStore(pool_timeout=-1)


async def test_hundreds_of_concurrent_signed_webhooks_on_a_redis_store(redis_url: str) -> None:
    """300 signed webhooks from 300 senders posted at once to a real interface (uvicorn) on a
    Redis store: every one is answered 200, every message is recorded and answered once."""
    n = 300

    async def agent(request: AgentRequest) -> str:
        return f"ok {request.text}"

    store = RedisSessionStore(redis_url, prefix=f"t{uuid.uuid4().hex}")
    async with Simulator(agent, storage=store, statuses=False, max_concurrency=64) as sim:
        bodies = [
            webhooks.encode(
                webhooks.envelope(
                    messages=[webhooks.text_message(f"1555{k:07d}", f"m{k}")],
                    phone_number_id=sim.phone_number_id,
                )
            )
            for k in range(n)
        ]
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        sim.webhook_url,
                        content=body,
                        headers={
                            "content-type": "application/json",
                            "x-hub-signature-256": sim.sign(body),
                        },
                    )
                    for body in bodies
                )
            )
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == n, {s: statuses.count(s) for s in set(statuses)}
        await sim.emulator.wait_for_messages(n, timeout=60)
        await sim.settle(timeout=60)
        assert sorted(m.text or "" for m in sim.emulator.messages) == sorted(
            f"ok m{k}" for k in range(n)
        )
        assert await store.pending(sim.interface.name) == []


# -- persistence ------------------------------------------------------------------------------

Servers = Callable[..., RedisServer]
LOGGER = "wa_agent.stores.redis"


@pytest.fixture(autouse=True)
def _fresh_persistence_log() -> None:
    """The store logs its persistence finding once per server URL and process; a port an
    earlier test's server used may come back, so each test starts with none logged."""
    import wa_agent.stores.redis as module

    module._persistence_logged.clear()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


async def _acknowledge(store: RedisSessionStore, n: int) -> list[str]:
    """Record n messages as the webhook path does; answer the ids acknowledged (True)."""
    items = [_item(k) for k in range(n)]
    results = await asyncio.gather(*(store.add_inbound(IFACE, [it]) for it in items))
    assert results == [[True]] * n
    return [it.id for it in items]


async def test_restart_without_aof_loses_acknowledged_messages_and_was_warned_about(
    redis_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """A server without persistence (Redis's default ``appendonly no``, no snapshots): the
    store warns once when it opens, naming the risk and ``appendonly yes``; after a crash
    and restart the acknowledged inbox items are gone and a redelivery is accepted as new
    (it would be answered twice) — what the warning is about."""
    server = redis_servers()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    prefix = f"t{uuid.uuid4().hex}"
    async with RedisSessionStore(server.url, prefix=prefix) as store:
        assert store.durability == "none"
        [warning] = _warnings(caplog)
        assert "appendonly yes" in warning
        assert "acknowledged" in warning and "restart" in warning
        assert server.url in warning
        acked = await _acknowledge(store, 50)
        server.restart()  # SIGKILL and start again on the same files
        assert await store.pending(IFACE) == []  # every acknowledged message is lost
        assert await store.add_inbound(IFACE, [_item(0)]) == [True]  # Meta's redelivery
    async with RedisSessionStore(server.url, prefix=prefix):
        pass
    assert len(_warnings(caplog)) == 1, "warned once per server, not per store"
    assert acked


async def test_restart_with_aof_keeps_every_acknowledged_message(
    redis_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``appendonly yes`` (appendfsync everysec) no warning is logged, and after a
    SIGKILL and restart every acknowledged item is still in the inbox and redeliveries are
    still recognised as duplicates."""
    server = redis_servers("--appendonly", "yes")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with RedisSessionStore(
        server.url, prefix=f"t{uuid.uuid4().hex}", persistence="require"
    ) as store:
        assert store.durability == "aof"
        acked = await _acknowledge(store, 50)
        server.restart()
        assert sorted(i.id for i in await store.pending(IFACE)) == sorted(acked)
        assert await store.add_inbound(IFACE, [_item(0)]) == [False]
    assert _warnings(caplog) == []


async def test_snapshots_only_is_named_in_the_warning(
    redis_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """RDB snapshots without AOF still lose what came after the last snapshot: the warning
    says so and quotes the save schedule."""
    server = redis_servers("--save", "3600 1")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with RedisSessionStore(server.url, prefix="p") as store:
        assert store.durability == "snapshots"
    [warning] = _warnings(caplog)
    assert "3600 1" in warning and "appendonly yes" in warning


async def test_require_refuses_a_server_without_aof(redis_servers: Servers) -> None:
    """``persistence="require"`` refuses to open on a server without AOF, with a StoreError
    that names the fix; nothing is left open."""
    server = redis_servers()
    store = RedisSessionStore(server.url, prefix="p", persistence="require")
    with pytest.raises(StoreError, match="appendonly yes") as info:
        await store.open()
    assert "persistence='require'" in str(info.value)
    with pytest.raises(StoreError, match="appendonly yes"):
        await store.add_inbound(IFACE, [_item(1)])
    await store.aclose()


async def test_ignore_checks_nothing(
    redis_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """``persistence="ignore"`` (a deliberately volatile store) logs nothing and does not
    ask the server."""
    server = redis_servers(
        "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-config", "-info"
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with RedisSessionStore(server.url, prefix="p", persistence="ignore") as store:
        assert store.durability is None
        assert await store.add_inbound(IFACE, [_item(1)]) == [True]
    assert _warnings(caplog) == []


async def test_managed_redis_without_config_is_checked_through_info(
    redis_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that refuses CONFIG (as managed services do) is checked through INFO
    persistence: AOF on passes quietly, AOF off warns."""
    acl = ("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-config")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with_aof = redis_servers(*acl, "--appendonly", "yes")
    async with RedisSessionStore(with_aof.url, prefix="p", persistence="require") as store:
        assert store.durability == "aof"
    assert _warnings(caplog) == []
    without = redis_servers(*acl)
    async with RedisSessionStore(without.url, prefix="p") as store:
        assert store.durability == "no-aof"
    [warning] = _warnings(caplog)
    assert "appendonly yes" in warning


async def test_unreadable_configuration_is_logged_once_and_refused_under_require(
    redis_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """A server refusing both CONFIG and INFO: the store says once that persistence could
    not be checked and works; under ``persistence="require"`` it refuses to open."""
    server = redis_servers(
        "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-config", "-info"
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(2):
        async with RedisSessionStore(server.url, prefix="p") as store:
            assert store.durability == "unknown"
            assert await store.add_inbound(IFACE, [_item(uuid.uuid4().int)]) == [True]
    [warning] = _warnings(caplog)
    assert "could not check" in warning and "appendonly yes" in warning
    with pytest.raises(StoreError, match="cannot check"):
        await RedisSessionStore(server.url, prefix="p", persistence="require").open()


def test_persistence_setting_is_validated() -> None:
    """An unknown ``persistence`` value is refused at construction."""
    with pytest.raises(ValueError, match="persistence"):
        RedisSessionStore(persistence="maybe")  # type: ignore[arg-type]
