"""The SessionStore contract, run against every backend, plus backend-specific behaviour.

Time: the memory and SQLite stores take an injected clock (``FakeClock``), so expiry tests
advance it instantly. Redis expires keys by its own clock, so for Redis the same tests use
TTLs of a fraction of a second and really sleep past them (``Harness.advance``); Redis checks
expiry on every access with millisecond precision, so this is not timing-sensitive.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.redis_server import free_port
from wa_agent.agents import Turn
from wa_agent.exceptions import StoreError
from wa_agent.stores import InboxItem, MemorySessionStore, SessionStore, SQLiteSessionStore
from wa_agent.stores.base import make_item
from wa_agent.testing.clock import FakeClock

REPO = Path(__file__).resolve().parents[1]
IFACE = "WhatsApp"
T0 = 1_750_000_000.0

BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
SHARED_BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


class Harness:
    """Builds stores of one backend that share state (same file / same Redis prefix)."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.clock = FakeClock(T0)
        self.path = tmp_path / "store.db"
        self.prefix = f"test-{uuid.uuid4().hex}"
        self.url: str = request.getfixturevalue("redis_url") if kind == "redis" else ""
        self.stores: list[Any] = []

    def make(self, **kw: Any) -> Any:
        store: Any
        if self.kind == "memory":
            store = MemorySessionStore(clock=self.clock, **kw)
        elif self.kind == "sqlite":
            store = SQLiteSessionStore(self.path, clock=self.clock, **kw)
        else:
            from wa_agent.stores.redis import RedisSessionStore

            store = RedisSessionStore(self.url, prefix=self.prefix, **kw)
        self.stores.append(store)
        return store

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the store: instantly on the fake clock, really for Redis."""
        if self.kind == "redis":
            await anyio.sleep(seconds)
        else:
            self.clock.advance(seconds)

    async def aclose(self) -> None:
        for store in self.stores:
            await store.aclose()


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(request.param, tmp_path, request)
    try:
        yield h
    finally:
        await h.aclose()


@pytest.fixture
async def store(harness: Harness) -> SessionStore:
    s: SessionStore = harness.make()
    await s.open()
    return s


def item(i: int | str, sender: str = "111", payload: str | None = None) -> InboxItem:
    return InboxItem(
        id=f"wamid.{i}",
        sender=sender,
        payload=payload if payload is not None else json.dumps({"text": f"m{i}"}),
        received_at=T0 + (i if isinstance(i, int) else 0) / 1000,
    )


def turn(text: str, role: str = "user", **kw: Any) -> Turn:
    return Turn(role=role, text=text, **kw)  # type: ignore[arg-type]


# -- contract --------------------------------------------------------------------------------


async def test_backends_satisfy_the_protocol(store: SessionStore) -> None:
    """Every backend is a runtime SessionStore and open()/aclose() are idempotent."""
    assert isinstance(store, SessionStore)
    await store.open()
    await store.open()


async def test_history_append_get_limit_clear_isolated_per_sender(store: SessionStore) -> None:
    """History is per (interface, sender), oldest first, limit gives the tail, clear is local."""
    at = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    a = [turn("hi", at=at, message_id="wamid.1"), turn("hello!", role="assistant")]
    await store.append_history(IFACE, "A", a)
    await store.append_history(IFACE, "A", [turn("more")])
    await store.append_history(IFACE, "B", [turn("b only")])
    await store.append_history("Other", "A", [turn("other interface")])

    assert await store.get_history(IFACE, "A") == [*a, turn("more")]
    assert await store.get_history(IFACE, "A", limit=2) == [a[1], turn("more")]
    assert await store.get_history(IFACE, "A", limit=0) == []
    assert await store.get_history(IFACE, "B") == [turn("b only")]
    assert await store.get_history(IFACE, "nobody") == []

    await store.clear_history(IFACE, "A")
    assert await store.get_history(IFACE, "A") == []
    assert await store.get_history(IFACE, "B") == [turn("b only")]
    assert await store.get_history("Other", "A") == [turn("other interface")]


async def test_history_roundtrips_every_turn_field(store: SessionStore) -> None:
    """Role, unicode text, aware and naive times and message ids come back unchanged."""
    turns = [
        turn("héllo 👋\nline two", at=datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
        turn("x", role="assistant", at=datetime(2025, 1, 2, tzinfo=timezone(timedelta(hours=2)))),
        turn("naive", at=datetime(2025, 1, 2, 3, 4, 5), message_id="wamid.Z"),
    ]
    await store.append_history(IFACE, "A", turns)
    assert await store.get_history(IFACE, "A") == turns


async def test_last_inbound_keeps_the_later_time(store: SessionStore) -> None:
    """touch_inbound keeps the latest time; an older one does not move it back."""
    assert await store.last_inbound(IFACE, "A") is None
    t1 = datetime(2025, 6, 1, 12, 0, 0, 654321, tzinfo=UTC)
    await store.touch_inbound(IFACE, "A", t1)
    await store.touch_inbound(IFACE, "A", t1 - timedelta(hours=1))
    assert await store.last_inbound(IFACE, "A") == t1
    t2 = t1 + timedelta(seconds=1)
    await store.touch_inbound(IFACE, "A", t2)
    got = await store.last_inbound(IFACE, "A")
    assert got == t2
    assert got is not None and got.tzinfo is not None
    assert await store.last_inbound(IFACE, "B") is None


async def test_add_inbound_dedupes_within_and_across_calls(store: SessionStore) -> None:
    """The same id twice in one call and again in a later call is accepted exactly once."""
    assert await store.add_inbound(IFACE, []) == []
    assert await store.add_inbound(IFACE, [item(1), item(2), item(1)]) == [True, True, False]
    assert await store.add_inbound(IFACE, [item(2), item(3)]) == [False, True]
    assert [i.id for i in await store.pending(IFACE)] == ["wamid.1", "wamid.2", "wamid.3"]
    # Marks are per interface.
    assert await store.add_inbound("Other", [item(1)]) == [True]


async def test_add_inbound_concurrent_callers_accept_each_id_once(store: SessionStore) -> None:
    """Many tasks adding the same ids at once: each id is accepted by exactly one call."""
    results: list[list[bool]] = []

    async def deliver(ids: list[int]) -> None:
        results.append(await store.add_inbound(IFACE, [item(i) for i in ids]))

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(deliver, [n % 5, (n + 1) % 5, 100 + n])
    flat = [ok for res in results for ok in res]
    assert sum(flat) == 5 + 40  # ids 0..4 once each, 100..139 once each
    expected = {f"wamid.{i}" for i in [*range(5), *range(100, 140)]}
    assert sorted(i.id for i in await store.pending(IFACE)) == sorted(expected)


async def test_add_inbound_same_id_from_many_tasks_one_winner(store: SessionStore) -> None:
    """Fifty concurrent deliveries of one message: exactly one call answers True."""
    wins: list[bool] = []

    async def deliver() -> None:
        wins.extend(await store.add_inbound(IFACE, [item(42)]))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(deliver)
    assert wins.count(True) == 1 and len(wins) == 50
    assert len(await store.pending(IFACE)) == 1


async def test_add_inbound_result_is_durable_state(store: SessionStore) -> None:
    """An accepted item is in pending() with its payload, time, attempts 0 and no progress."""
    src = item(7, sender="222", payload='{"text": "ünïcode ✓"}')
    assert await store.add_inbound(IFACE, [src]) == [True]
    (got,) = await store.pending(IFACE, "222")
    assert (got.id, got.sender, got.payload, got.received_at) == (
        src.id,
        src.sender,
        src.payload,
        src.received_at,
    )
    assert (got.attempts, got.progress) == (0, None)
    assert got.seq > 0


async def test_dedupe_mark_expires_after_ttl(harness: Harness) -> None:
    """After the TTL an id is accepted again once completed; while still pending it is not."""
    store = harness.make(dedupe_ttl=0.3)
    assert await store.add_inbound(IFACE, [item(1), item(2)]) == [True, True]
    await store.complete(IFACE, "wamid.1", "111")
    await harness.advance(0.15)
    assert await store.add_inbound(IFACE, [item(1)]) == [False]  # within the TTL
    await harness.advance(0.3)
    assert await store.add_inbound(IFACE, [item(1)]) == [True]
    assert await store.add_inbound(IFACE, [item(2)]) == [False]  # still in the inbox
    assert await store.add_inbound(IFACE, [item(1)]) == [False]  # marked again


async def test_seen_marks_a_key_once_until_it_expires(harness: Harness) -> None:
    """seen() answers False the first time and True after, until the TTL passes."""
    store = harness.make(dedupe_ttl=0.3)
    key = "status:wamid.9:delivered"
    assert await store.seen(IFACE, key) is False
    assert await store.seen(IFACE, key) is True
    assert await store.seen("Other", key) is False
    await harness.advance(0.4)
    assert await store.seen(IFACE, key) is False
    assert await store.seen(IFACE, key) is True


async def test_pending_keeps_arrival_order_per_sender(store: SessionStore) -> None:
    """pending() is oldest first per sender and overall; pending_senders lists who waits."""
    await store.add_inbound(IFACE, [item(1, "A"), item(2, "B")])
    await store.add_inbound(IFACE, [item(3, "A")])
    await store.add_inbound(IFACE, [item(4, "C"), item(5, "B"), item(6, "A")])
    assert [i.id for i in await store.pending(IFACE, "A")] == ["wamid.1", "wamid.3", "wamid.6"]
    assert [i.id for i in await store.pending(IFACE, "B")] == ["wamid.2", "wamid.5"]
    everything = await store.pending(IFACE)
    assert [i.id for i in everything] == [f"wamid.{n}" for n in range(1, 7)]
    seqs = [i.seq for i in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    assert await store.pending_senders(IFACE) == ["A", "B", "C"]
    await store.complete(IFACE, "wamid.1", "A")
    await store.complete(IFACE, "wamid.3", "A")
    assert await store.pending_senders(IFACE) == ["B", "C", "A"]
    await store.complete(IFACE, "wamid.4", "C")
    assert await store.pending_senders(IFACE) == ["B", "A"]
    assert await store.pending(IFACE, "C") == []
    assert await store.pending("Other") == []


async def test_save_progress_stores_json_and_counts_attempts(store: SessionStore) -> None:
    """save_progress replaces the progress and adds one attempt each time; unknown ids no-op."""
    await store.add_inbound(IFACE, [item(1), item(2)])
    await store.save_progress(IFACE, "wamid.1", '{"parts": 1}')
    await store.save_progress(IFACE, "wamid.1", '{"parts": 2}')
    await store.save_progress(IFACE, "wamid.unknown", "{}")
    one, two = await store.pending(IFACE)
    assert (one.attempts, one.progress) == (2, '{"parts": 2}')
    assert (two.attempts, two.progress) == (0, None)
    assert [i.id for i in await store.pending(IFACE)] == ["wamid.1", "wamid.2"]


async def test_complete_removes_item_and_appends_history(store: SessionStore) -> None:
    """complete() takes the item out of the inbox and appends the turns; only that item."""
    await store.add_inbound(IFACE, [item(1), item(2)])
    turns = [turn("m1", message_id="wamid.1"), turn("answer", role="assistant")]
    await store.complete(IFACE, "wamid.1", "111", turns)
    assert [i.id for i in await store.pending(IFACE)] == ["wamid.2"]
    assert await store.get_history(IFACE, "111") == turns
    await store.complete(IFACE, "wamid.2", "111")  # no turns (TASK mode)
    assert await store.pending(IFACE) == []
    assert await store.pending_senders(IFACE) == []
    assert await store.get_history(IFACE, "111") == turns


async def test_complete_takes_several_items_in_one_step(store: SessionStore) -> None:
    """complete() with a sequence of ids (one coalesced turn) removes all of them and
    appends the turns once; ids already gone are skipped; the other items stay, in order."""
    await store.add_inbound(IFACE, [item(1), item(2), item(3), item(4, sender="222")])
    turns = [
        turn("m1", message_id="wamid.1"),
        turn("m2", message_id="wamid.2"),
        turn("answer", role="assistant"),
    ]
    await store.complete(IFACE, ["wamid.1", "wamid.2", "wamid.gone"], "111", turns)
    assert [i.id for i in await store.pending(IFACE)] == ["wamid.3", "wamid.4"]
    assert await store.get_history(IFACE, "111") == turns
    await store.complete(IFACE, ("wamid.3",), "111")
    assert await store.pending_senders(IFACE) == ["222"]
    assert (await store.add_inbound(IFACE, [item(1), item(2)])) == [False, False]


async def test_complete_is_atomic_for_concurrent_readers(harness: Harness) -> None:
    """A reader never sees an item gone from the inbox while its turns are not in history."""
    writer = harness.make()
    reader = harness.make() if harness.kind != "memory" else writer
    n = 30
    await writer.add_inbound(IFACE, [item(i, sender=f"s{i}") for i in range(n)])
    violations: list[int] = []
    done = anyio.Event()

    async def read() -> None:
        while not done.is_set():
            for i in range(n):
                present = {x.id for x in await reader.pending(IFACE, f"s{i}")}
                if f"wamid.{i}" not in present and not await reader.get_history(IFACE, f"s{i}"):
                    violations.append(i)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        for i in range(n):
            await writer.complete(IFACE, f"wamid.{i}", f"s{i}", [turn(f"t{i}")])
            await anyio.lowlevel.checkpoint()
        done.set()
    assert violations == []
    assert await reader.pending(IFACE) == []


async def test_advance_status_only_moves_forward(store: SessionStore) -> None:
    """sent < delivered < read < played; no downgrade, repeats refused, failed is final."""
    assert await store.get_status(IFACE, "m1") is None
    assert await store.advance_status(IFACE, "m1", "sent") is True
    assert await store.advance_status(IFACE, "m1", "read") is True
    assert await store.advance_status(IFACE, "m1", "delivered") is False
    assert await store.advance_status(IFACE, "m1", "read") is False
    assert await store.get_status(IFACE, "m1") == "read"
    assert await store.advance_status(IFACE, "m1", "played") is True

    assert await store.advance_status(IFACE, "m2", "sent") is True
    assert await store.advance_status(IFACE, "m2", "failed") is True
    for later in ("sent", "delivered", "read", "played", "failed"):
        assert await store.advance_status(IFACE, "m2", later) is False
    assert await store.get_status(IFACE, "m2") == "failed"

    assert await store.advance_status(IFACE, "m3", "bogus") is False
    assert await store.get_status(IFACE, "m3") is None
    assert await store.get_status("Other", "m1") is None


async def test_advance_status_concurrent_updates_never_downgrade(store: SessionStore) -> None:
    """Statuses arriving concurrently in any order end at the highest rank."""
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            for status in ("read", "sent", "delivered"):
                tg.start_soon(store.advance_status, IFACE, "m", status)
    assert await store.get_status(IFACE, "m") == "read"


async def test_heartbeat_recipient_is_set_once_unless_overwritten(store: SessionStore) -> None:
    """The first recipient sticks; overwrite=True replaces it; interfaces are separate."""
    assert await store.get_heartbeat_recipient(IFACE) is None
    assert await store.set_heartbeat_recipient(IFACE, "A") == "A"
    assert await store.set_heartbeat_recipient(IFACE, "B") == "A"
    assert await store.get_heartbeat_recipient(IFACE) == "A"
    assert await store.set_heartbeat_recipient(IFACE, "B", overwrite=True) == "B"
    assert await store.get_heartbeat_recipient(IFACE) == "B"
    assert await store.get_heartbeat_recipient("Other") is None


async def test_handoff_record_set_get_replace_delete(store: SessionStore) -> None:
    """A handoff record is kept per (interface, contact) as given (unicode JSON text), a new
    one replaces it, ``None`` deletes it, and deleting a missing record is no error."""
    first = json.dumps({"operator": "Zoë", "since": T0}, ensure_ascii=False)
    second = '{"operator":"Ana","note":"línea 1\nlínea 2"}'
    assert await store.get_handoff(IFACE, "A") is None
    await store.set_handoff(IFACE, "A", None)  # nothing to delete: fine
    await store.set_handoff(IFACE, "A", first)
    assert await store.get_handoff(IFACE, "A") == first
    assert await store.get_handoff(IFACE, "B") is None
    assert await store.get_handoff("Other", "A") is None
    await store.set_handoff(IFACE, "A", second)
    assert await store.get_handoff(IFACE, "A") == second
    await store.set_handoff(IFACE, "A", None)
    assert await store.get_handoff(IFACE, "A") is None
    await store.set_handoff(IFACE, "A", None)  # already gone: still fine
    assert await store.handoffs(IFACE) == {}


async def test_handoffs_lists_every_contact_of_one_interface(store: SessionStore) -> None:
    """handoffs() maps each contact with a record to its latest record, for the interface
    asked only; a deleted record leaves the listing."""
    assert await store.handoffs(IFACE) == {}
    await store.set_handoff(IFACE, "A", '{"n":1}')
    await store.set_handoff(IFACE, "B", '{"n":2}')
    await store.set_handoff(IFACE, "C", '{"n":3}')
    await store.set_handoff(IFACE, "B", '{"n":4}')
    await store.set_handoff("Other", "D", '{"n":5}')
    await store.set_handoff(IFACE, "C", None)
    assert await store.handoffs(IFACE) == {"A": '{"n":1}', "B": '{"n":4}'}
    assert await store.handoffs("Other") == {"D": '{"n":5}'}
    assert await store.handoffs("Nobody") == {}


@pytest.mark.parametrize("harness", SHARED_BACKENDS, indirect=True)
async def test_handoff_changes_are_seen_by_another_store_object(harness: Harness) -> None:
    """Two store objects on one SQLite file or one Redis server (like two workers) see each
    other's handoff changes at their next read: set, replace and delete (memory stores
    share nothing between objects, so they are not in this test)."""
    a, b = harness.make(), harness.make()
    await a.set_handoff(IFACE, "A", '{"by":"a"}')
    assert await b.get_handoff(IFACE, "A") == '{"by":"a"}'
    await b.set_handoff(IFACE, "A", '{"by":"b"}')
    await b.set_handoff(IFACE, "B", '{"by":"b"}')
    assert await a.get_handoff(IFACE, "A") == '{"by":"b"}'
    assert await a.handoffs(IFACE) == {"A": '{"by":"b"}', "B": '{"by":"b"}'}
    await a.set_handoff(IFACE, "A", None)
    assert await b.get_handoff(IFACE, "A") is None
    assert await b.handoffs(IFACE) == {"B": '{"by":"b"}'}


async def test_leases_are_exclusive_renewable_and_expire(harness: Harness) -> None:
    """Only one owner holds a lease; the owner renews it; expiry or release frees it."""
    store = harness.make()
    assert await store.acquire_lease("sender:A", "w1", 0.3) is True
    assert await store.acquire_lease("sender:A", "w2", 0.3) is False
    assert await store.acquire_lease("sender:B", "w2", 0.3) is True  # other name
    await harness.advance(0.2)
    assert await store.acquire_lease("sender:A", "w1", 0.3) is True  # renewed to +0.3
    await harness.advance(0.2)
    assert await store.acquire_lease("sender:A", "w2", 0.3) is False  # renewal held
    await harness.advance(0.2)
    assert await store.acquire_lease("sender:A", "w2", 0.3) is True  # expired: taken over
    assert await store.acquire_lease("sender:A", "w1", 0.3) is False

    await store.release_lease("sender:A", "w1")  # not the owner: no effect
    assert await store.acquire_lease("sender:A", "w1", 0.3) is False
    await store.release_lease("sender:A", "w2")
    assert await store.acquire_lease("sender:A", "w1", 0.3) is True


async def test_renew_leases_renews_many_in_one_call(harness: Harness) -> None:
    """renew_leases() is acquire_lease() for each name: held ones are renewed, expired or
    free ones taken, another owner's live lease refused; one answer per name, in order."""
    store = harness.make()
    assert await store.acquire_lease("sender:A", "w1", 0.3) is True
    assert await store.acquire_lease("sender:B", "w2", 0.3) is True
    assert await store.acquire_lease("sender:C", "w1", 0.3) is True
    await harness.advance(0.2)
    assert await store.renew_leases(["sender:A", "sender:B", "sender:D"], "w1", 0.3) == [
        True,
        False,
        True,
    ]
    await harness.advance(0.2)  # A and D renewed to +0.3; C (not renewed) expired
    assert await store.acquire_lease("sender:A", "w2", 0.3) is False
    assert await store.acquire_lease("sender:D", "w2", 0.3) is False
    assert await store.acquire_lease("sender:C", "w2", 0.3) is True
    assert await store.renew_leases([], "w1", 0.3) == []


async def test_lease_contention_has_one_winner(store: SessionStore) -> None:
    """Many owners racing for a free lease: exactly one gets it."""
    wins: list[str] = []

    async def race(owner: str) -> None:
        if await store.acquire_lease("heartbeat:WhatsApp", owner, 30):
            wins.append(owner)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(race, f"w{n}")
    assert len(wins) == 1


# -- memory ----------------------------------------------------------------------------------


async def test_memory_history_limit_keeps_the_latest_turns() -> None:
    """history_limit caps each sender's stored history to the newest turns."""
    store = MemorySessionStore(history_limit=3)
    await store.append_history(IFACE, "A", [turn(str(n)) for n in range(5)])
    await store.complete(IFACE, "wamid.x", "A", [turn("5")])
    assert [t.text for t in await store.get_history(IFACE, "A")] == ["3", "4", "5"]
    with pytest.raises(ValueError, match="history_limit"):
        MemorySessionStore(history_limit=0)


async def test_memory_purges_expired_marks() -> None:
    """Expired dedupe marks are dropped lazily by new marks and all at once by purge."""
    clock = FakeClock(T0)
    store = MemorySessionStore(dedupe_ttl=10, clock=clock)
    for n in range(20):
        await store.seen(IFACE, f"k{n}")
    clock.advance(11)
    await store.seen(IFACE, "fresh")  # sweeps some of the expired ones
    assert len(store._marks) < 21
    assert await store.purge_expired() > 0
    assert list(store._marks) == [(IFACE, "fresh")]


# -- SQLite ----------------------------------------------------------------------------------


async def _fill(store: SessionStore) -> None:
    await store.add_inbound(IFACE, [item(1, "A"), item(2, "B")])
    await store.save_progress(IFACE, "wamid.1", '{"p": 1}')
    await store.append_history(IFACE, "A", [turn("hi")])
    await store.touch_inbound(IFACE, "A", datetime(2025, 1, 1, tzinfo=UTC))
    await store.advance_status(IFACE, "out.1", "delivered")
    await store.set_heartbeat_recipient(IFACE, "A")
    await store.seen(IFACE, "status:x:read")
    assert await store.acquire_lease("L", "w1", 60)


async def test_sqlite_survives_close_and_reopen(tmp_path: Path) -> None:
    """A new store object on the same file sees inbox, history, marks, statuses and leases."""
    path = tmp_path / "db" / "state.sqlite"  # the directory is created
    async with SQLiteSessionStore(path) as first:
        await _fill(first)
    async with SQLiteSessionStore(path) as second:
        pending = await second.pending(IFACE)
        assert [(i.id, i.attempts, i.progress) for i in pending] == [
            ("wamid.1", 1, '{"p": 1}'),
            ("wamid.2", 0, None),
        ]
        assert await second.add_inbound(IFACE, [item(1), item(3)]) == [False, True]
        assert await second.get_history(IFACE, "A") == [turn("hi")]
        assert await second.last_inbound(IFACE, "A") == datetime(2025, 1, 1, tzinfo=UTC)
        assert await second.get_status(IFACE, "out.1") == "delivered"
        assert await second.get_heartbeat_recipient(IFACE) == "A"
        assert await second.seen(IFACE, "status:x:read") is True
        assert await second.acquire_lease("L", "w2", 60) is False
        assert [i.seq for i in await second.pending(IFACE)] == sorted(
            i.seq for i in await second.pending(IFACE)
        )


async def test_sqlite_handoffs_survive_close_and_reopen(tmp_path: Path) -> None:
    """Handoff records written before aclose() are there for a new store on the file."""
    path = tmp_path / "handoff.db"
    async with SQLiteSessionStore(path) as first:
        await first.set_handoff(IFACE, "A", '{"operator":"ana"}')
        await first.set_handoff(IFACE, "B", '{"operator":"bo"}')
        await first.set_handoff(IFACE, "B", None)
    async with SQLiteSessionStore(path) as second:
        assert await second.get_handoff(IFACE, "A") == '{"operator":"ana"}'
        assert await second.handoffs(IFACE) == {"A": '{"operator":"ana"}'}


async def test_sqlite_file_without_the_handoffs_table_gets_it(tmp_path: Path) -> None:
    """A file written before handoffs existed (no such table, same schema version) opens,
    gains the table and keeps its other state."""
    path = tmp_path / "old.db"
    async with SQLiteSessionStore(path) as store:
        await store.append_history(IFACE, "A", [turn("hi")])
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TABLE handoffs")
        conn.commit()
    finally:
        conn.close()
    async with SQLiteSessionStore(path) as store:
        await store.set_handoff(IFACE, "A", "{}")
        assert await store.handoffs(IFACE) == {"A": "{}"}
        assert await store.get_history(IFACE, "A") == [turn("hi")]


async def test_sqlite_handoff_write_failure_raises_store_error(tmp_path: Path) -> None:
    """While another connection holds the write lock past busy_timeout, set_handoff raises
    StoreError (cause chained) and stores nothing; reads still answer; once the lock is
    gone the write goes through."""
    path = tmp_path / "locked.db"
    async with SQLiteSessionStore(path, busy_timeout=0.1) as store:
        await store.set_handoff(IFACE, "A", '{"v":1}')
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError) as info:
                await store.set_handoff(IFACE, "A", '{"v":2}')
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            assert await store.get_handoff(IFACE, "A") == '{"v":1}'
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        await store.set_handoff(IFACE, "A", '{"v":2}')
        assert await store.get_handoff(IFACE, "A") == '{"v":2}'


async def test_sqlite_reopen_after_aclose(tmp_path: Path) -> None:
    """After aclose() calls are refused until open() is called again."""
    store = SQLiteSessionStore(tmp_path / "s.db")
    assert await store.add_inbound(IFACE, [item(1)]) == [True]  # opens itself
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.pending(IFACE)
    await store.open()
    try:
        assert [i.id for i in await store.pending(IFACE)] == ["wamid.1"]
    finally:
        await store.aclose()


async def test_sqlite_two_objects_on_one_file_dedupe_against_each_other(tmp_path: Path) -> None:
    """Two stores on one file (like two processes) accept each id exactly once between them."""
    path = tmp_path / "shared.db"
    async with SQLiteSessionStore(path) as a, SQLiteSessionStore(path) as b:
        results: list[bool] = []

        async def deliver(store: SQLiteSessionStore, n: int) -> None:
            results.extend(await store.add_inbound(IFACE, [item(n % 50)]))

        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(deliver, a if n % 2 else b, n)
        assert sum(results) == 50
        assert len(await a.pending(IFACE)) == 50
        assert await b.seen(IFACE, "k") is False
        assert await a.seen(IFACE, "k") is True


async def test_sqlite_second_process_sees_the_marks(tmp_path: Path) -> None:
    """A separate Python process on the same file sees our marks, and we see its inserts."""
    path = tmp_path / "proc.db"
    async with SQLiteSessionStore(path) as store:
        assert await store.add_inbound(IFACE, [item(1)]) == [True]
        code = (
            "import asyncio, json, sys\n"
            "from wa_agent.stores import InboxItem, SQLiteSessionStore\n"
            "async def main():\n"
            "    async with SQLiteSessionStore(sys.argv[1]) as s:\n"
            "        r = await s.add_inbound('WhatsApp', [\n"
            "            InboxItem(id='wamid.1', sender='111', payload='{}', received_at=1.0),\n"
            "            InboxItem(id='wamid.2', sender='111', payload='{}', received_at=2.0)])\n"
            "        print(json.dumps(r))\n"
            "asyncio.run(main())\n"
        )
        result = await anyio.run_process([sys.executable, "-c", code, str(path)], cwd=REPO)
        assert json.loads(result.stdout) == [False, True]
        assert await store.add_inbound(IFACE, [item(2)]) == [False]
        assert [i.id for i in await store.pending(IFACE)] == ["wamid.1", "wamid.2"]


async def test_sqlite_unwritable_path_raises_store_error(tmp_path: Path) -> None:
    """A path that cannot hold a database gives StoreError (with the cause chained)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = SQLiteSessionStore(blocker / "state.db")
    with pytest.raises(StoreError, match="cannot open the SQLite store") as info:
        await store.open()
    assert info.value.__cause__ is not None
    with pytest.raises(StoreError):
        await store.add_inbound(IFACE, [item(1)])
    await store.aclose()


async def test_sqlite_corrupt_file_raises_store_error(tmp_path: Path) -> None:
    """A file that is not a SQLite database gives StoreError on open."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    store = SQLiteSessionStore(garbage)
    with pytest.raises(StoreError) as info:
        await store.open()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


async def test_sqlite_group_commit_batches_concurrent_calls(tmp_path: Path) -> None:
    """500 concurrent add_inbound calls are committed in far fewer transactions."""
    async with SQLiteSessionStore(tmp_path / "gc.db") as store:
        await store.open()
        before = store.commits
        async with anyio.create_task_group() as tg:
            for n in range(500):
                tg.start_soon(store.add_inbound, IFACE, [item(n, sender=f"s{n % 7}")])
        commits = store.commits - before
        assert 1 <= commits <= 50
        assert len(await store.pending(IFACE)) == 500
    async with SQLiteSessionStore(tmp_path / "gc.db") as reopened:
        assert len(await reopened.pending(IFACE)) == 500  # every acknowledged item is on disk


async def test_sqlite_failing_call_does_not_spoil_its_batch(tmp_path: Path) -> None:
    """One call failing inside a group commit raises StoreError; the others still commit."""
    async with SQLiteSessionStore(tmp_path / "b.db") as store:
        await store.open()
        # payload=None breaks the NOT NULL constraint inside the transaction.
        bad = InboxItem("wamid.bad", "1", None, 1.0)  # type: ignore[arg-type]
        outcomes: dict[str, Any] = {}

        async def call(name: str, items: list[InboxItem]) -> None:
            try:
                outcomes[name] = await store.add_inbound(IFACE, items)
            except StoreError as exc:
                outcomes[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "good1", [item(1)])
            tg.start_soon(call, "bad", [item(2), bad])
            tg.start_soon(call, "good2", [item(3)])
        assert outcomes["good1"] == [True] and outcomes["good2"] == [True]
        assert isinstance(outcomes["bad"], StoreError)
        assert isinstance(outcomes["bad"].__cause__, sqlite3.IntegrityError)
        # The failed call left nothing behind, not even its first item's dedupe mark.
        assert [i.id for i in await store.pending(IFACE)] == ["wamid.1", "wamid.3"]
        assert await store.add_inbound(IFACE, [item(2)]) == [True]


async def test_sqlite_failing_write_is_undone_alone_among_other_writes(tmp_path: Path) -> None:
    """Writes of one batch run without a savepoint each; when one fails the batch runs
    again with savepoints: the failing call gets StoreError and leaves nothing, the other
    writes (a completion with history, a progress save) and reads of the batch take effect
    exactly once."""
    async with SQLiteSessionStore(tmp_path / "w.db") as store:
        await store.add_inbound(IFACE, [item(1), item(2)])
        bad = InboxItem("wamid.bad", "1", None, 1.0)  # type: ignore[arg-type]
        outcomes: dict[str, Any] = {}

        async def call(name: str, coro: Any) -> None:
            try:
                outcomes[name] = await coro
            except StoreError as exc:
                outcomes[name] = exc

        before = store.commits
        async with anyio.create_task_group() as tg:
            # Keep the writer thread busy while the four calls queue up: one batch.
            tg.start_soon(call, "hold", store._submit(lambda c: time.sleep(0.1), write=False))
            await anyio.sleep(0.02)
            tg.start_soon(
                call, "complete", store.complete(IFACE, "wamid.1", "111", [turn("q"), turn("a")])
            )
            # Its first item is written before the second fails: that must be undone too.
            tg.start_soon(call, "bad", store.add_inbound(IFACE, [item(5), bad]))
            tg.start_soon(call, "progress", store.save_progress(IFACE, "wamid.2", '{"p":1}'))
            tg.start_soon(call, "read", store.pending(IFACE))
        assert store.commits - before == 1  # one batch, committed once
        assert isinstance(outcomes["bad"], StoreError)
        assert isinstance(outcomes["bad"].__cause__, sqlite3.IntegrityError)
        assert [t.text for t in await store.get_history(IFACE, "111")] == ["q", "a"]
        (left,) = await store.pending(IFACE)
        assert (left.id, left.attempts, left.progress) == ("wamid.2", 1, '{"p":1}')
        assert await store.add_inbound(IFACE, [item(1)]) == [False]  # completed: marked


async def test_sqlite_purges_expired_marks(tmp_path: Path) -> None:
    """Expired dedupe marks and statuses are deleted by writes after the purge interval."""
    clock = FakeClock(T0)
    path = tmp_path / "p.db"
    async with SQLiteSessionStore(path, dedupe_ttl=10, clock=clock) as store:
        await store.add_inbound(IFACE, [item(n) for n in range(5)])
        for n in range(3):  # completed items leave their marks behind
            await store.complete(IFACE, f"wamid.{n}", "111")
        await store.advance_status(IFACE, "out", "sent")
        clock.advance(11)
        assert await store.seen(IFACE, "new") is False  # a write, but within the interval
        assert _count(path, "dedupe") == 4
        clock.advance(60)
        assert await store.seen(IFACE, "newer") is False  # interval passed: purged
        assert _count(path, "dedupe") == 1
        assert _count(path, "status") == 0
        assert len(await store.pending(IFACE)) == 2  # the inbox is never purged
        clock.advance(11)
        assert await store.purge_expired() == 1
        assert _count(path, "dedupe") == 0


async def test_sqlite_acknowledged_items_survive_sigkill(tmp_path: Path) -> None:
    """Every add_inbound that returned True in a process killed with SIGKILL mid-stream is
    in the inbox when the file is opened again."""
    path = tmp_path / "crash.db"
    code = (
        "import asyncio, sys\n"
        "from wa_agent.stores import InboxItem, SQLiteSessionStore\n"
        "async def main():\n"
        "    store = SQLiteSessionStore(sys.argv[1])\n"
        "    await store.open()\n"
        "    async def worker(w):\n"
        "        for i in range(10**6):\n"
        "            mid = f'wamid.{w}.{i}'\n"
        "            item = InboxItem(mid, f's{w}', '{}', 1.0)\n"
        "            if await store.add_inbound('WhatsApp', [item]) == [True]:\n"
        "                sys.stdout.write(mid + '\\n')\n"
        "                sys.stdout.flush()\n"
        "    await asyncio.gather(*(worker(w) for w in range(16)))\n"
        "asyncio.run(main())\n"
    )
    acked: list[str] = []
    buffer = b""
    async with await anyio.open_process(
        [sys.executable, "-c", code, str(path)], cwd=REPO, stderr=None
    ) as proc:
        assert proc.stdout is not None
        with anyio.fail_after(30):
            async for chunk in proc.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                acked += [line.decode() for line in lines]
                if len(acked) >= 400:
                    break
        proc.kill()  # SIGKILL: no cleanup, no checkpoint
        await proc.wait()
    async with SQLiteSessionStore(path) as store:
        stored = {i.id for i in await store.pending(IFACE)}
        assert set(acked) <= stored
        assert await store.add_inbound(IFACE, [InboxItem(acked[-1], "s0", "{}", 1.0)]) == [False]
        for w in range(16):  # per-sender order survived too
            ids = [i.id for i in await store.pending(IFACE, f"s{w}")]
            assert ids == sorted(ids, key=lambda x: int(x.rsplit(".", 1)[1]))


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        count: int = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return count
    finally:
        conn.close()


# -- Redis -----------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_second_process_sees_the_marks(redis_url: str) -> None:
    """A separate Python process on the same Redis sees our marks and inbox, and we see its."""
    from wa_agent.stores.redis import RedisSessionStore

    prefix = f"test-{uuid.uuid4().hex}"
    async with RedisSessionStore(redis_url, prefix=prefix) as store:
        assert await store.add_inbound(IFACE, [item(1)]) == [True]
        assert await store.acquire_lease("sender:111", "parent", 30)
        code = (
            "import asyncio, json, sys\n"
            "from wa_agent.stores import InboxItem\n"
            "from wa_agent.stores.redis import RedisSessionStore\n"
            "async def main():\n"
            "    async with RedisSessionStore(sys.argv[1], prefix=sys.argv[2]) as s:\n"
            "        r = await s.add_inbound('WhatsApp', [\n"
            "            InboxItem(id='wamid.1', sender='111', payload='{}', received_at=1.0),\n"
            "            InboxItem(id='wamid.2', sender='111', payload='{}', received_at=2.0)])\n"
            "        lease = await s.acquire_lease('sender:111', 'child', 30)\n"
            "        print(json.dumps([r, lease]))\n"
            "asyncio.run(main())\n"
        )
        result = await anyio.run_process([sys.executable, "-c", code, redis_url, prefix], cwd=REPO)
        assert json.loads(result.stdout) == [[False, True], False]
        assert [i.id for i in await store.pending(IFACE, "111")] == ["wamid.1", "wamid.2"]


@pytest.mark.redis
async def test_redis_two_clients_dedupe_against_each_other(redis_url: str) -> None:
    """Two stores with separate connections accept each id exactly once between them."""
    from wa_agent.stores.redis import RedisSessionStore

    prefix = f"test-{uuid.uuid4().hex}"
    async with (
        RedisSessionStore(redis_url, prefix=prefix) as a,
        RedisSessionStore(redis_url, prefix=prefix) as b,
    ):
        results: list[bool] = []

        async def deliver(store: RedisSessionStore, n: int) -> None:
            results.extend(await store.add_inbound(IFACE, [item(n % 50)]))

        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(deliver, a if n % 2 else b, n)
        assert sum(results) == 50
        assert len(await b.pending(IFACE)) == 50


@pytest.mark.redis
async def test_redis_resent_scripts_answer_like_the_first_attempt(
    redis_url: str,
) -> None:
    """A script call redis-py resends after a lost reply (same token) gives the same answer
    for add_inbound and does not append history twice for complete."""
    from wa_agent.stores.redis import RedisSessionStore

    async with RedisSessionStore(redis_url, prefix=f"test-{uuid.uuid4().hex}") as store:
        base = store._base(IFACE)
        add = store._scripts["add_inbound"]
        args = [base, 60_000, "token-1", "wamid.1", "111", "{}", "1.0", 0, "0", ""]
        assert await add(keys=[], args=args) == [1]
        assert await add(keys=[], args=args) == [1]  # the resend
        args[2] = "token-2"  # a different call: a duplicate
        assert await add(keys=[], args=args) == [0]
        assert len(await store.pending(IFACE)) == 1

        complete = store._scripts["complete"]
        t = '{"role":"user","text":"hi","at":null,"message_id":null}'
        cargs = [base, "111", "token-3", 60_000, 1, "wamid.1", t]
        await complete(keys=[], args=cargs)
        await complete(keys=[], args=cargs)  # the resend
        assert await store.get_history(IFACE, "111") == [turn("hi")]
        assert await store.pending(IFACE) == []


async def test_redis_down_raises_store_error() -> None:
    """With no server listening, open() and calls raise StoreError naming the URL."""
    pytest.importorskip("redis")
    from wa_agent.stores.redis import RedisSessionStore

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    store = RedisSessionStore(url)
    assert "hunter2" not in repr(store)
    with pytest.raises(StoreError, match="cannot reach Redis") as info:
        await store.open()
    assert "hunter2" not in str(info.value)
    assert info.value.__cause__ is not None
    with pytest.raises(StoreError):
        await store.add_inbound(IFACE, [item(1)])
    await store.aclose()


@pytest.mark.redis
async def test_redis_handoff_errors_raise_store_error(redis_url: str) -> None:
    """A server error on the handoff hash (here: the key holds a string, so Redis answers
    WRONGTYPE) raises StoreError naming what failed, for each of the three calls."""
    import redis.asyncio as aioredis

    from wa_agent.stores.redis import RedisSessionStore

    prefix = f"test-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with RedisSessionStore(redis_url, prefix=prefix) as store:
            await client.set(f"{prefix}:i:{IFACE}:handoffs", "not a hash")
            with pytest.raises(StoreError, match="store a handoff"):
                await store.set_handoff(IFACE, "A", "{}")
            with pytest.raises(StoreError, match="delete a handoff"):
                await store.set_handoff(IFACE, "A", None)
            with pytest.raises(StoreError, match="read a handoff"):
                await store.get_handoff(IFACE, "A")
            with pytest.raises(StoreError, match="read the handoffs"):
                await store.handoffs(IFACE)
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_borrowed_client_is_not_closed(redis_url: str) -> None:
    """A client passed in is used (its bytes answers decoded, handoff records too) and left
    open by aclose()."""
    import redis.asyncio as aioredis

    from wa_agent.stores.redis import RedisSessionStore

    client = aioredis.Redis.from_url(redis_url)  # bytes responses: the store copes
    try:
        store = RedisSessionStore(client=client, prefix=f"test-{uuid.uuid4().hex}")
        async with store:
            assert await store.add_inbound(IFACE, [item(1)]) == [True]
            assert [i.id for i in await store.pending(IFACE)] == ["wamid.1"]
            assert await store.set_heartbeat_recipient(IFACE, "A") == "A"
            assert await store.pending_senders(IFACE) == ["111"]
            await store.set_handoff(IFACE, "A", '{"op":"Zoë"}')
            assert await store.get_handoff(IFACE, "A") == '{"op":"Zoë"}'
            assert await store.handoffs(IFACE) == {"A": '{"op":"Zoë"}'}
        assert await client.ping()
    finally:
        await client.aclose()


async def test_importing_wa_agent_never_imports_redis() -> None:
    """``import wa_agent`` and the stores package leave redis alone; without redis the Redis
    store module says how to install it."""
    code = (
        "import sys\n"
        "import wa_agent, wa_agent.stores\n"
        "from wa_agent import SQLiteSessionStore, MemorySessionStore\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
        "sys.modules['redis'] = None\n"
        "sys.modules['redis.asyncio'] = None\n"
        "try:\n"
        "    import wa_agent.stores.redis\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = await anyio.run_process([sys.executable, "-c", code], cwd=REPO)
    assert "pip install 'wa-agent-host[redis]'" in result.stdout.decode()


async def test_sqlite_grouped_adds_answer_like_one_call_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent add_inbound calls (grouped into two multi-row statements per batch) answer
    exactly what the same calls made one after the other answer: the first copy of an id
    wins, also across calls of one batch; an expired mark is taken again, but an id still in
    the inbox is not queued twice; and the inbox ends up the same."""
    import asyncio

    calls = [
        [item(1)],
        [item(1), item(3)],
        [item(2)],
        [item(3)],
        [item(4), item(4)],
        [item(5, sender="222")],
    ]
    from wa_agent.stores._sqlite_inbox import _AddInbound

    grouped_calls: list[int] = []
    group = _AddInbound.run_group

    def counting(cls: type, conn: sqlite3.Connection, ops: list[Any], savepoint: bool) -> Any:
        grouped_calls.append(len(ops))
        return group(conn, ops, savepoint)

    monkeypatch.setattr(_AddInbound, "run_group", classmethod(counting))

    async def run(name: str, *, together: bool) -> tuple[list[list[bool]], list[str]]:
        clock = FakeClock(T0)
        async with SQLiteSessionStore(tmp_path / name, clock=clock, dedupe_ttl=10) as store:
            assert await store.add_inbound(IFACE, [item(1), item(2)]) == [True, True]
            await store.complete(IFACE, "wamid.1", "111")  # answered; its mark lives on
            clock.advance(11)  # both marks expired; wamid.2 is still in the inbox
            if together:
                results = list(await asyncio.gather(*(store.add_inbound(IFACE, c) for c in calls)))
            else:
                results = [await store.add_inbound(IFACE, c) for c in calls]
            return results, [i.id for i in await store.pending(IFACE)]

    serial = await run("serial.db", together=False)
    assert grouped_calls == []
    grouped = await run("grouped.db", together=True)
    assert grouped == serial
    assert sum(grouped_calls) >= 2  # some calls did share a batch
    assert serial[0] == [[True], [False, True], [False], [False], [True, False], [True]]


@settings(max_examples=200, deadline=None)
@given(
    id=st.text(),
    sender=st.text(),
    payload=st.text(),
    received_at=st.floats(allow_nan=False),
    seq=st.integers(),
    attempts=st.integers(),
    progress=st.none() | st.text(),
)
def test_make_item_builds_the_same_item_as_the_constructor(
    id: str,
    sender: str,
    payload: str,
    received_at: float,
    seq: int,
    attempts: int,
    progress: str | None,
) -> None:
    """The ack path's fast InboxItem constructor gives an item equal to (and as frozen as)
    the dataclass constructor's, every field in its place."""
    fast = make_item(id, sender, payload, received_at, seq, attempts, progress)
    assert fast == InboxItem(id, sender, payload, received_at, seq, attempts, progress)
    assert type(fast) is InboxItem
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.seq = 1  # type: ignore[misc]
    assert make_item(id, sender, payload, received_at) == InboxItem(
        id, sender, payload, received_at
    )
