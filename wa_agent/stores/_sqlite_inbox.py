"""The durable inbox, dedupe marks and delivery states of
:class:`~wa_agent.stores.sqlite.SQLiteSessionStore` (one mixin of its methods), with the
multi-row statements that record a burst of webhooks together."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final

from ..agents import Turn
from ._common import status_advances
from ._sqlite_engine import GroupedOp, SQLiteEngine
from ._sqlite_history import INSERT_TURN, turn_rows
from .base import InboxItem

_MARK = (
    "INSERT INTO dedupe (interface, key, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (interface, key) DO UPDATE SET expires = excluded.expires "
    "WHERE dedupe.expires <= ?"
)
_ENQUEUE = (
    "INSERT INTO inbox (interface, id, sender, payload, received_at, attempts, progress) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (interface, id) DO NOTHING"
)
_ITEM_COLUMNS = "id, sender, payload, received_at, seq, attempts, progress"

# The same statements for many rows at once: (head, one row's placeholders, tail).
_REPEATS = (
    "WITH v (interface, key, now) AS (VALUES",
    "(?, ?, ?)",
    (
        ") SELECT 'mark', v.interface, v.key FROM v JOIN dedupe d ON d.interface = v.interface "
        "AND d.key = v.key WHERE d.expires > v.now UNION ALL SELECT 'inbox', v.interface, v.key "
        "FROM v JOIN inbox i ON i.interface = v.interface AND i.id = v.key"
    ),
)
_LIVE_MARK = "SELECT 1 FROM dedupe WHERE interface = ? AND key = ? AND expires > ?"
_MARK_SET = (
    "INSERT INTO dedupe (interface, key, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (interface, key) DO UPDATE SET expires = excluded.expires"
)
_ENQUEUE_MANY = (
    ("INSERT INTO inbox (interface, id, sender, payload, received_at, attempts, progress) VALUES"),
    "(?, ?, ?, ?, ?, ?, ?)",
    "ON CONFLICT (interface, id) DO NOTHING",
)


#: Row-value VALUES in a WITH clause and upserts need SQLite 3.24; older libraries run each
#: call alone.
_GROUPED: Final = sqlite3.sqlite_version_info >= (3, 24, 0)
_CHUNK_ROWS: Final = 64  # rows per statement: 448 variables at most (every SQLite allows 999)


def _chunks(rows: list[Any]) -> Iterator[list[Any]]:
    """``rows`` in chunks of 64, 32, ... 1: a handful of distinct statements, all of them in
    the connection's statement cache (compiling one costs more than running it)."""
    start = 0
    while start < len(rows):
        size = _CHUNK_ROWS
        while size > len(rows) - start:
            size //= 2
        yield rows[start : start + size]
        start += size


def _sql(statement: tuple[str, str, str], rows: int) -> str:
    head, one, tail = statement
    return f"{head} {', '.join([one] * rows)} {tail}"


def _run_chunks(
    conn: sqlite3.Connection, statement: tuple[str, str, str], rows: list[tuple[Any, ...]]
) -> Iterator[sqlite3.Cursor]:
    """A multi-row statement (``statement`` = head, one row's placeholders, tail) over
    ``rows``, in chunks: one step each; yields each chunk's cursor."""
    for chunk in _chunks(rows):
        yield conn.execute(_sql(statement, len(chunk)), [v for row in chunk for v in row])


def _insert_rows(
    conn: sqlite3.Connection, statement: tuple[str, str, str], rows: list[tuple[Any, ...]]
) -> None:
    for _cursor in _run_chunks(conn, statement, rows):
        pass


def _select_rows(
    conn: sqlite3.Connection, statement: tuple[str, str, str], rows: list[tuple[Any, ...]]
) -> list[tuple[str, str, str]]:
    """:func:`_run_chunks` for a query; answers its ``(kind, interface, key)`` rows."""
    return [row for cursor in _run_chunks(conn, statement, rows) for row in cursor.fetchall()]


class _AddInbound(GroupedOp):
    """One ``add_inbound`` call: run alone, or grouped with the others of its batch."""

    __slots__ = ("interface", "now", "rows")

    groupable = _GROUPED

    def __init__(self, interface: str, rows: list[tuple[Any, ...]], now: float) -> None:
        self.interface = interface
        self.rows = rows
        self.now = now

    def __call__(self, conn: sqlite3.Connection) -> list[bool]:
        out: list[bool] = []
        for item_id, sender, payload, received_at, attempts, progress in self.rows:
            if conn.execute(_LIVE_MARK, (self.interface, item_id, self.now)).fetchone():
                out.append(False)
                continue
            cur = conn.execute(
                _ENQUEUE,
                (self.interface, item_id, sender, payload, received_at, attempts, progress),
            )
            out.append(cur.rowcount == 1)
        return out

    @classmethod
    def run_group(
        cls, conn: sqlite3.Connection, ops: list[_AddInbound], savepoint: bool
    ) -> list[Any] | None:
        """Every ``add_inbound`` of a batch in a few multi-row statements instead of two per
        item plus a savepoint per call. Each statement step hands the GIL over (and waits up
        to the interpreter's switch interval to get it back while the event loop is busy),
        so the steps are what bounds a burst: one lookup that returns rows only for the rare
        repeats (a live dedupe mark, an id still in the inbox), then one insert of the inbox
        rows. Same answers as the calls one after the other (the first copy of an id wins).
        On an SQLite error it gives up and answers ``None``: inside its own ``savepoint``
        after undoing itself (the calls then run one by one); without one the caller rolls
        the transaction back."""
        wanted = [(op.interface, row[0], op.now) for op in ops for row in op.rows]
        if savepoint:
            conn.execute("SAVEPOINT inbound")
        try:
            live: set[tuple[str, str]] = set()
            queued_before: set[tuple[str, str]] = set()
            for kind, iface, wamid in _select_rows(conn, _REPEATS, wanted):
                (live if kind == "mark" else queued_before).add((iface, wamid))
            new: dict[tuple[str, str], tuple[Any, ...]] = {}
            for op in ops:
                for row in op.rows:
                    key = (op.interface, row[0])
                    if key not in live and key not in new:
                        new[key] = (op.interface, *row)
            _insert_rows(
                conn, _ENQUEUE_MANY, [row for key, row in new.items() if key not in queued_before]
            )
        except sqlite3.Error:
            if not conn.in_transaction:
                raise
            if not savepoint:
                return None
            conn.execute("ROLLBACK TO inbound")
            conn.execute("RELEASE inbound")
            return None
        if savepoint:
            conn.execute("RELEASE inbound")
        out: list[Any] = []
        taken: set[tuple[str, str]] = set()
        for op in ops:
            answers = []
            for row in op.rows:
                key = (op.interface, row[0])
                answers.append(key in new and key not in queued_before and key not in taken)
                taken.add(key)
            out.append(answers)
        return out


class InboxOps(SQLiteEngine):
    """The inbox, dedupe marks and delivery states."""

    # -- inbox and dedupe ---------------------------------------------------------------------
    async def add_inbound(self, interface: str, items: Sequence[InboxItem]) -> list[bool]:
        """Dedupe and enqueue durably; see :meth:`SessionStore.add_inbound`.

        Concurrent calls share one transaction; each returns after that commit.
        """
        if not items:
            return []
        now = self._clock()
        rows = [
            (it.id, it.sender, it.payload, it.received_at, it.attempts, it.progress) for it in items
        ]
        result: list[bool] = await self._submit(_AddInbound(interface, rows, now), write=True)
        return result

    async def pending(self, interface: str, sender: str | None = None) -> list[InboxItem]:
        """Inbox items of one sender (or all), oldest first."""
        if sender is None:
            sql = f"SELECT {_ITEM_COLUMNS} FROM inbox WHERE interface = ? ORDER BY seq"
            args: tuple[str, ...] = (interface,)
        else:
            sql = (
                f"SELECT {_ITEM_COLUMNS} FROM inbox WHERE interface = ? AND sender = ? ORDER BY seq"
            )
            args = (interface, sender)

        def op(conn: sqlite3.Connection) -> list[InboxItem]:
            return [
                InboxItem(
                    id=r[0],
                    sender=r[1],
                    payload=r[2],
                    received_at=r[3],
                    seq=r[4],
                    attempts=r[5],
                    progress=r[6],
                )
                for r in conn.execute(sql, args)
            ]

        result: list[InboxItem] = await self._submit(op, write=False)
        return result

    async def pending_senders(self, interface: str) -> list[str]:
        """Senders with at least one item, the one waiting longest first."""

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT sender, MIN(seq) AS head FROM inbox WHERE interface = ? "
                "GROUP BY sender ORDER BY head",
                (interface,),
            )
            return [r[0] for r in rows]

        result: list[str] = await self._submit(op, write=False)
        return result

    async def save_progress(self, interface: str, item_id: str, progress: str) -> None:
        """Store the progress JSON and count one attempt (no-op for an unknown item)."""
        await self._submit(
            lambda c: c.execute(
                "UPDATE inbox SET progress = ?, attempts = attempts + 1 "
                "WHERE interface = ? AND id = ?",
                (progress, interface, item_id),
            ),
            write=True,
        )

    async def complete(
        self,
        interface: str,
        item_id: str | Sequence[str],
        sender: str,
        turns: Sequence[Turn] = (),
    ) -> None:
        """Remove the item(s) (if present) and append ``turns`` to the history, atomically."""
        rows = turn_rows(interface, sender, turns)
        ids = (item_id,) if isinstance(item_id, str) else tuple(item_id)
        expires = self._clock() + self._ttl

        def op(conn: sqlite3.Connection) -> None:
            for one in ids:
                if conn.execute(
                    "DELETE FROM inbox WHERE interface = ? AND id = ?", (interface, one)
                ).rowcount:
                    # Its dedupe mark, from now on (the inbox row was the mark until now).
                    conn.execute(_MARK_SET, (interface, one, expires))
            if rows:
                conn.executemany(INSERT_TURN, rows)

        await self._submit(op, write=True)

    async def seen(self, interface: str, key: str) -> bool:
        """``True`` if ``key`` was marked within the TTL; otherwise mark it and answer ``False``."""
        now = self._clock()
        args = (interface, key, now + self._ttl, now)
        marked: bool = await self._submit(
            lambda c: c.execute(_MARK, args).rowcount == 1, write=True
        )
        return not marked

    # -- statuses -----------------------------------------------------------------------------
    async def advance_status(self, interface: str, message_id: str, status: str) -> bool:
        """Move the delivery state forward only; see :meth:`SessionStore.advance_status`."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT status FROM status WHERE interface = ? AND message_id = ? AND expires > ?",
                (interface, message_id, now),
            ).fetchone()
            if not status_advances(row[0] if row else None, status):
                return False
            conn.execute(
                "INSERT OR REPLACE INTO status (interface, message_id, status, expires) "
                "VALUES (?, ?, ?, ?)",
                (interface, message_id, status, now + self._ttl),
            )
            return True

        result: bool = await self._submit(op, write=True)
        return result

    async def get_status(self, interface: str, message_id: str) -> str | None:
        """The delivery state last recorded (within the TTL), or ``None``."""
        status = await self._value(
            "SELECT status FROM status WHERE interface = ? AND message_id = ? AND expires > ?",
            (interface, message_id, self._clock()),
        )
        return None if status is None else str(status)
