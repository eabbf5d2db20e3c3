"""A durable :class:`~wa_agent.stores.SessionStore` on one SQLite file (standard library only).

Design:

* One dedicated thread owns one connection; coroutines hand it operations through a queue
  and await a future, so no SQLite call ever runs on the event loop.
* **Group commit.** The thread takes every operation waiting in the queue and runs them in
  one transaction; operations that arrive while a commit runs go into the next one. If a
  write fails, the batch is rolled back and run again with each write in its own savepoint,
  so one failing operation does not undo the others. A caller
  resumes only after the commit that holds its writes, so :meth:`add_inbound` is durable
  when it returns, at the cost of one ``fsync`` per batch instead of one per message. The
  batch's :meth:`add_inbound` calls (a burst of webhooks) run together as a few multi-row
  statements; if those fail, each call runs alone as above.
* **One row per acknowledged message.** While a message waits in the inbox, its inbox row
  is its dedupe mark; :meth:`complete` deletes the row and writes the mark (TTL from then)
  in the same transaction, so the ack path inserts one row instead of two.
* WAL journal, ``BEGIN IMMEDIATE`` for writes and a busy timeout, so several processes can
  share the file: dedupe, the inbox, statuses and leases hold across them.
* ``synchronous="NORMAL"`` (the default) survives a crash of the process (``SIGKILL``) but
  may lose the last commits on a power failure; ``"FULL"`` survives that too, slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Self, TypeVar

from ..agents import Turn
from ..exceptions import StoreError
from ._common import check_ttl, from_micros, status_advances, to_micros
from .base import DEFAULT_DEDUPE_TTL, InboxItem

__all__ = ["SQLiteSessionStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]

SCHEMA_VERSION: Final = 1
#: At most this many operations share one transaction.
MAX_BATCH: Final = 1024
#: Expired dedupe marks and statuses are purged at most this often (seconds) ...
PURGE_INTERVAL: Final = 60.0
#: ... and at most this many rows at a time, so a purge never stalls a commit for long.
PURGE_CHUNK: Final = 2000
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedupe (
    interface TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (interface, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_expires ON dedupe (expires);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    interface TEXT NOT NULL, id TEXT NOT NULL, sender TEXT NOT NULL, payload TEXT NOT NULL,
    received_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, progress TEXT,
    UNIQUE (interface, id));
CREATE INDEX IF NOT EXISTS inbox_sender ON inbox (interface, sender, seq);
CREATE TABLE IF NOT EXISTS status (
    interface TEXT NOT NULL, message_id TEXT NOT NULL, status TEXT NOT NULL,
    expires REAL NOT NULL, PRIMARY KEY (interface, message_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS status_expires ON status (expires);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    interface TEXT NOT NULL, sender TEXT NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    at TEXT, message_id TEXT);
CREATE INDEX IF NOT EXISTS history_sender ON history (interface, sender, id);
CREATE TABLE IF NOT EXISTS last_inbound (
    interface TEXT NOT NULL, sender TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (interface, sender)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heartbeat (interface TEXT PRIMARY KEY, recipient TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
"""

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
    "WITH v (interface, key, now) AS (VALUES", "(?, ?, ?)",
    (") SELECT 'mark', v.interface, v.key FROM v JOIN dedupe d ON d.interface = v.interface "
     "AND d.key = v.key WHERE d.expires > v.now UNION ALL SELECT 'inbox', v.interface, v.key "
     "FROM v JOIN inbox i ON i.interface = v.interface AND i.id = v.key"),
)
_LIVE_MARK = "SELECT 1 FROM dedupe WHERE interface = ? AND key = ? AND expires > ?"
_MARK_SET = (
    "INSERT INTO dedupe (interface, key, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (interface, key) DO UPDATE SET expires = excluded.expires"
)
_ENQUEUE_MANY = (
    ("INSERT INTO inbox (interface, id, sender, payload, received_at, attempts, progress) "
     "VALUES"), "(?, ?, ?, ?, ?, ?, ?)", "ON CONFLICT (interface, id) DO NOTHING",
)


class _Request:
    __slots__ = ("future", "loop", "op", "write")

    def __init__(
        self, op: _Op, write: bool, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.op = op
        self.write = write
        self.loop = loop
        self.future = future


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Runs on the caller's loop: resolve the futures of one batch."""
    for future, value, exc in results:
        if future.done():  # the caller was cancelled; nothing to tell
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


_LEASE = ("INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?) "
          "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
          "expires = excluded.expires "
          "WHERE leases.owner = excluded.owner OR leases.expires <= ?")


class SQLiteSessionStore:
    """Durable store on a SQLite file; the default wherever state must survive a restart.

    ``path`` is the database file (its directory is created if missing; ``":memory:"``
    gives a private in-memory database). ``dedupe_ttl`` is how long message ids, :meth:`seen`
    keys and delivery states are remembered; ``clock`` gives the time in seconds (inject one
    in tests; processes sharing a file must share a clock, i.e. keep :func:`time.time`);
    ``synchronous`` is SQLite's durability level (see the module docstring);
    ``busy_timeout`` is how long to wait for another process's write lock before failing.

    The store opens itself on first use; :meth:`aclose` stops its thread (a later
    :meth:`open` starts it again). Errors from SQLite raise :class:`~wa_agent.StoreError`.
    :attr:`commits` counts write transactions, which shows group commit at work.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
        self._path = os.fspath(path)
        self._ttl = check_ttl("dedupe_ttl", dedupe_ttl)
        self._clock = clock
        self._synchronous = synchronous.upper()
        self._busy_timeout = check_ttl("busy_timeout", busy_timeout)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._state = "new"  # new -> open -> closed -> open ...
        self._open_lock = asyncio.Lock()
        self._commits = 0
        self._next_purge = 0.0

    def __repr__(self) -> str:
        return f"SQLiteSessionStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def commits(self) -> int:
        """How many write transactions this object committed (a group commit counts once)."""
        return self._commits

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Start the database thread and create the tables. Idempotent.

        Raises :class:`~wa_agent.StoreError` if the file cannot be opened or written.
        """
        async with self._open_lock:
            if self._state == "open":
                return
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            stopped: asyncio.Future[None] = loop.create_future()
            requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._run,
                args=(requests, loop, ready, stopped),
                name=f"wa_agent-sqlite:{Path(self._path).name}",
                daemon=True,
            )
            thread.start()
            try:
                await asyncio.shield(ready)
            except asyncio.CancelledError:
                requests.put(None)  # the thread stops once it has finished starting
                raise
            except BaseException:
                await stopped  # opening failed: the thread is on its way out
                thread.join()
                raise
            self._queue = requests
            self._thread = thread
            self._stopped = stopped
            self._state = "open"
            logger.debug("SQLite store opened at %s", self._path)

    async def aclose(self) -> None:
        """Finish the queued operations, close the connection and stop the thread. Idempotent."""
        async with self._open_lock:
            if self._state != "open":
                self._state = "closed"
                return
            self._state = "closed"
            thread, stopped = self._thread, self._stopped
            self._thread = self._stopped = None
            self._queue.put(None)
            if stopped is not None:
                await asyncio.shield(stopped)
            if thread is not None:
                thread.join()

    async def _submit(self, op: _Op, *, write: bool) -> Any:
        if self._state != "open":
            if self._state == "closed":
                raise RuntimeError(
                    "This SQLiteSessionStore is closed; call open() to use it again."
                )
            await self.open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Request(op, write, loop, future))
        return await future

    # -- the database thread ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:" and not self._path.startswith("file:"):
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=self._path.startswith("file:"),
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            if self._path != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"could not switch to WAL (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(
                        f"the file has schema version {version}; this wa_agent knows "
                        f"{SCHEMA_VERSION}: upgrade wa_agent"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(
        self,
        requests: queue.SimpleQueue[_Request | None],
        loop: asyncio.AbstractEventLoop,
        ready: asyncio.Future[None],
        stopped: asyncio.Future[None],
    ) -> None:
        try:
            try:
                conn = self._connect()
            except (sqlite3.Error, OSError) as exc:
                error = StoreError(f"cannot open the SQLite store at {self._path!r}: {exc}")
                error.__cause__ = exc
                _post(loop, [(ready, None, error)])
                return
            _post(loop, [(ready, None, None)])
            try:
                self._serve(conn, requests)
            finally:
                conn.close()
        finally:
            # Whatever is still queued (only after a crash of this thread) must not hang.
            while True:
                try:
                    r = requests.get_nowait()
                except queue.Empty:
                    break
                if r is not None:
                    _post(r.loop, [(r.future, None, StoreError("the SQLite store was closed"))])
            _post(loop, [(stopped, None, None)])

    def _serve(
        self, conn: sqlite3.Connection, requests: queue.SimpleQueue[_Request | None]
    ) -> None:
        while True:
            first = requests.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = requests.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._execute(conn, batch)
            if stop:
                return

    def _execute(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        write = any(r.write for r in batch)
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] | None
        try:
            outcomes = self._attempt(conn, batch, write, isolate=False)
            if outcomes is None:  # a write failed: again, each write in its own savepoint
                outcomes = self._attempt(conn, batch, write, isolate=True)
                assert outcomes is not None
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets told
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            logger.warning("SQLite store transaction failed at %s: %s", self._path, exc)
            outcomes = []
            for r in batch:
                error = StoreError(f"SQLite store at {self._path!r}: transaction failed: {exc}")
                error.__cause__ = exc
                outcomes.append((r.future, None, error))
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for r, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(r.loop, []).append(outcome)
        for loop, results in by_loop.items():
            _post(loop, results)

    def _attempt(
        self, conn: sqlite3.Connection, batch: list[_Request], write: bool, isolate: bool
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]] | None:
        """Run the batch in one transaction (none for reads only) and commit it.

        Without ``isolate`` the writes (the ``add_inbound`` group first) run back to back,
        and the first one that fails rolls the whole transaction back and answers ``None``
        (the caller then runs the batch again with ``isolate``): a savepoint around every
        write costs two more statements, and each statement hands the GIL over and waits to
        get it back from a busy event loop, so under load the savepoints were most of a
        batch's time. With ``isolate`` each write runs in its own savepoint, so one failing
        write undoes only itself.
        """
        if write:
            conn.execute("BEGIN IMMEDIATE")
        inbound = [r for r in batch if isinstance(r.op, _AddInbound)] if _GROUPED else []
        grouped = (self._add_inbound_group(conn, inbound, savepoint=isolate)
                   if len(inbound) > 1 else {})
        if grouped is None:
            conn.execute("ROLLBACK")
            return None
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for r in batch:
            outcome = grouped.get(id(r))
            if outcome is None and (not r.write or not isolate):
                outcome = self._apply(r, conn)  # a read has nothing to roll back
                if r.write and outcome[2] is not None:
                    conn.execute("ROLLBACK")
                    return None
            elif outcome is None:
                conn.execute("SAVEPOINT op")
                outcome = self._apply(r, conn)
                if outcome[2] is not None:
                    conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            outcomes.append(outcome)
        if write:
            self._maybe_purge(conn)
            conn.execute("COMMIT")
            self._commits += 1
        return outcomes

    @staticmethod
    def _add_inbound_group(
        conn: sqlite3.Connection, requests: list[_Request], savepoint: bool
    ) -> dict[int, tuple[asyncio.Future[Any], Any, BaseException | None]] | None:
        """Every ``add_inbound`` of a batch in a few multi-row statements instead of two per
        item plus a savepoint per call. Each statement step hands the GIL over (and waits up
        to the interpreter's switch interval to get it back while the event loop is busy),
        so the steps are what bounds a burst: one lookup that returns rows only for the rare
        repeats (a live dedupe mark, an id still in the inbox), then one insert of the inbox
        rows. Same answers as the calls one after the other (the first copy of an id wins).
        On an SQLite error it gives up: inside its own ``savepoint`` it undoes itself and
        answers ``{}`` (the calls then run one by one); without one it answers ``None``
        and the caller rolls the transaction back."""
        ops: list[_AddInbound] = []
        for r in requests:
            assert isinstance(r.op, _AddInbound)
            ops.append(r.op)
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
            _insert_rows(conn, _ENQUEUE_MANY,
                         [row for key, row in new.items() if key not in queued_before])
        except sqlite3.Error:
            if not conn.in_transaction:
                raise
            if not savepoint:
                return None
            conn.execute("ROLLBACK TO inbound")
            conn.execute("RELEASE inbound")
            return {}
        if savepoint:
            conn.execute("RELEASE inbound")
        out: dict[int, tuple[asyncio.Future[Any], Any, BaseException | None]] = {}
        taken: set[tuple[str, str]] = set()
        for r, op in zip(requests, ops, strict=True):
            answers = []
            for row in op.rows:
                key = (op.interface, row[0])
                answers.append(key in new and key not in queued_before and key not in taken)
                taken.add(key)
            out[id(r)] = (r.future, answers, None)
        return out

    def _apply(
        self, r: _Request, conn: sqlite3.Connection
    ) -> tuple[asyncio.Future[Any], Any, BaseException | None]:
        try:
            return (r.future, r.op(conn), None)
        except sqlite3.Error as exc:
            if not conn.in_transaction:  # SQLite rolled the whole transaction back
                raise
            error = StoreError(f"SQLite store at {self._path!r} failed: {exc}")
            error.__cause__ = exc
            return (r.future, None, error)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            return (r.future, None, exc)

    def _maybe_purge(self, conn: sqlite3.Connection) -> None:
        now = self._clock()
        if now < self._next_purge:
            return
        conn.execute("SAVEPOINT purge")
        try:
            removed = self._purge(conn, now, PURGE_CHUNK)
        except sqlite3.Error:  # housekeeping must never fail the writes it rides along with
            logger.warning("SQLite store at %s: purging expired marks failed", self._path,
                           exc_info=True)
            conn.execute("ROLLBACK TO purge")
            removed = 0
        conn.execute("RELEASE purge")
        # A full chunk means more is waiting: come back on the next write.
        self._next_purge = now if removed >= PURGE_CHUNK else now + PURGE_INTERVAL

    @staticmethod
    def _purge(conn: sqlite3.Connection, now: float, chunk: int | None) -> int:
        limit = "" if chunk is None else f" LIMIT {int(chunk)}"
        removed = conn.execute(
            "DELETE FROM dedupe WHERE (interface, key) IN "
            f"(SELECT interface, key FROM dedupe WHERE expires <= ?{limit})",
            (now,),
        ).rowcount
        removed += conn.execute(
            "DELETE FROM status WHERE (interface, message_id) IN "
            f"(SELECT interface, message_id FROM status WHERE expires <= ?{limit})",
            (now,),
        ).rowcount
        conn.execute("DELETE FROM leases WHERE expires <= ?", (now,))
        return removed

    async def purge_expired(self) -> int:
        """Delete every expired dedupe mark and delivery state now; answer how many.

        Writes also purge (in chunks, at most once a minute), so calling this is optional.
        """
        now = self._clock()
        removed: int = await self._submit(lambda c: self._purge(c, now, None), write=True)
        return removed

    # -- inbox and dedupe ---------------------------------------------------------------------
    async def add_inbound(self, interface: str, items: Sequence[InboxItem]) -> list[bool]:
        """Dedupe and enqueue durably; see :meth:`SessionStore.add_inbound`.

        Concurrent calls share one transaction; each returns after that commit.
        """
        if not items:
            return []
        now = self._clock()
        rows = [
            (it.id, it.sender, it.payload, it.received_at, it.attempts, it.progress)
            for it in items
        ]
        result: list[bool] = await self._submit(
            _AddInbound(interface, rows, now), write=True)
        return result

    async def pending(self, interface: str, sender: str | None = None) -> list[InboxItem]:
        """Inbox items of one sender (or all), oldest first."""
        if sender is None:
            sql = f"SELECT {_ITEM_COLUMNS} FROM inbox WHERE interface = ? ORDER BY seq"
            args: tuple[str, ...] = (interface,)
        else:
            sql = (
                f"SELECT {_ITEM_COLUMNS} FROM inbox WHERE interface = ? AND sender = ? "
                "ORDER BY seq"
            )
            args = (interface, sender)

        def op(conn: sqlite3.Connection) -> list[InboxItem]:
            return [
                InboxItem(
                    id=r[0], sender=r[1], payload=r[2], received_at=r[3], seq=r[4],
                    attempts=r[5], progress=r[6],
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
        self, interface: str, item_id: str | Sequence[str], sender: str,
        turns: Sequence[Turn] = (),
    ) -> None:
        """Remove the item(s) (if present) and append ``turns`` to the history, atomically."""
        rows = _turn_rows(interface, sender, turns)
        ids = (item_id,) if isinstance(item_id, str) else tuple(item_id)
        expires = self._clock() + self._ttl

        def op(conn: sqlite3.Connection) -> None:
            for one in ids:
                if conn.execute("DELETE FROM inbox WHERE interface = ? AND id = ?",
                                (interface, one)).rowcount:
                    # Its dedupe mark, from now on (the inbox row was the mark until now).
                    conn.execute(_MARK_SET, (interface, one, expires))
            if rows:
                conn.executemany(_INSERT_TURN, rows)

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
                "SELECT status FROM status WHERE interface = ? AND message_id = ? "
                "AND expires > ?",
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
        now = self._clock()

        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT status FROM status WHERE interface = ? AND message_id = ? "
                "AND expires > ?",
                (interface, message_id, now),
            ).fetchone()
            return None if row is None else str(row[0])

        result: str | None = await self._submit(op, write=False)
        return result

    # -- history and window -------------------------------------------------------------------
    async def get_history(
        self, interface: str, sender: str, limit: int | None = None
    ) -> list[Turn]:
        """The sender's turns, oldest first (the last ``limit`` if given)."""
        if limit is not None and limit <= 0:
            return []

        def op(conn: sqlite3.Connection) -> list[Turn]:
            rows = conn.execute(
                "SELECT role, text, at, message_id FROM history "
                "WHERE interface = ? AND sender = ? ORDER BY id DESC LIMIT ?",
                (interface, sender, -1 if limit is None else limit),
            ).fetchall()
            rows.reverse()
            return [
                Turn(
                    role=r[0], text=r[1], at=datetime.fromisoformat(r[2]) if r[2] else None,
                    message_id=r[3],
                )
                for r in rows
            ]

        result: list[Turn] = await self._submit(op, write=False)
        return result

    async def append_history(self, interface: str, sender: str, turns: Sequence[Turn]) -> None:
        """Append turns to the sender's history."""
        rows = _turn_rows(interface, sender, turns)
        if rows:
            await self._submit(lambda c: c.executemany(_INSERT_TURN, rows), write=True)

    async def clear_history(self, interface: str, sender: str) -> None:
        """Forget this sender's history only."""
        await self._submit(
            lambda c: c.execute(
                "DELETE FROM history WHERE interface = ? AND sender = ?", (interface, sender)
            ),
            write=True,
        )

    async def touch_inbound(self, interface: str, sender: str, at: datetime) -> None:
        """Record an inbound time, kept only if later than the stored one."""
        args = (interface, sender, to_micros(at))
        await self._submit(
            lambda c: c.execute(
                "INSERT INTO last_inbound (interface, sender, at) VALUES (?, ?, ?) "
                "ON CONFLICT (interface, sender) DO UPDATE SET at = excluded.at "
                "WHERE excluded.at > last_inbound.at",
                args,
            ),
            write=True,
        )

    async def last_inbound(self, interface: str, sender: str) -> datetime | None:
        """The latest inbound time (aware UTC), or ``None``."""

        def op(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT at FROM last_inbound WHERE interface = ? AND sender = ?",
                (interface, sender),
            ).fetchone()
            return None if row is None else int(row[0])

        micros: int | None = await self._submit(op, write=False)
        return None if micros is None else from_micros(micros)

    # -- heartbeat and leases -----------------------------------------------------------------
    async def get_heartbeat_recipient(self, interface: str) -> str | None:
        """The persisted heartbeat recipient, or ``None``."""

        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT recipient FROM heartbeat WHERE interface = ?", (interface,)
            ).fetchone()
            return None if row is None else str(row[0])

        result: str | None = await self._submit(op, write=False)
        return result

    async def set_heartbeat_recipient(
        self, interface: str, sender: str, *, overwrite: bool = False
    ) -> str:
        """Set the recipient unless one is set (or ``overwrite``); answer the one in force."""
        action = "UPDATE SET recipient = excluded.recipient" if overwrite else "NOTHING"

        def op(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO heartbeat (interface, recipient) VALUES (?, ?) "
                f"ON CONFLICT (interface) DO {action}",
                (interface, sender),
            )
            row = conn.execute(
                "SELECT recipient FROM heartbeat WHERE interface = ?", (interface,)
            ).fetchone()
            return str(row[0])

        result: str = await self._submit(op, write=True)
        return result

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds unless another owner holds it."""
        return (await self.renew_leases((name,), owner, ttl))[0]

    async def renew_leases(self, names: Sequence[str], owner: str, ttl: float) -> list[bool]:
        """:meth:`acquire_lease` for each name, in one transaction."""
        now = self._clock()
        expires = now + check_ttl("ttl", ttl)

        def op(conn: sqlite3.Connection) -> list[bool]:
            return [conn.execute(_LEASE, (name, owner, expires, now)).rowcount == 1
                    for name in names]

        result: list[bool] = await self._submit(op, write=True)
        return result

    async def release_lease(self, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it."""
        await self._submit(
            lambda c: c.execute(
                "DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner)
            ),
            write=True,
        )


_INSERT_TURN = (
    "INSERT INTO history (interface, sender, role, text, at, message_id) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


class _AddInbound:
    """One ``add_inbound`` call: run alone, or grouped with the others of its batch."""

    __slots__ = ("interface", "now", "rows")

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
        yield rows[start:start + size]
        start += size


def _sql(statement: tuple[str, str, str], rows: int) -> str:
    head, one, tail = statement
    return f"{head} {', '.join([one] * rows)} {tail}"


def _run_chunks(conn: sqlite3.Connection, statement: tuple[str, str, str],
                rows: list[tuple[Any, ...]]) -> Iterator[sqlite3.Cursor]:
    """A multi-row statement (``statement`` = head, one row's placeholders, tail) over
    ``rows``, in chunks: one step each; yields each chunk's cursor."""
    for chunk in _chunks(rows):
        yield conn.execute(_sql(statement, len(chunk)), [v for row in chunk for v in row])


def _insert_rows(conn: sqlite3.Connection, statement: tuple[str, str, str],
                 rows: list[tuple[Any, ...]]) -> None:
    for _cursor in _run_chunks(conn, statement, rows):
        pass


def _select_rows(conn: sqlite3.Connection, statement: tuple[str, str, str],
                 rows: list[tuple[Any, ...]]) -> list[tuple[str, str, str]]:
    """:func:`_run_chunks` for a query; answers its ``(kind, interface, key)`` rows."""
    return [row for cursor in _run_chunks(conn, statement, rows) for row in cursor.fetchall()]


def _turn_rows(
    interface: str, sender: str, turns: Sequence[Turn]
) -> list[tuple[str, str, str, str, str | None, str | None]]:
    return [
        (
            interface, sender, t.role, t.text,
            t.at.isoformat() if t.at is not None else None, t.message_id,
        )
        for t in turns
    ]


def _post(
    loop: asyncio.AbstractEventLoop,
    results: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
) -> None:
    """Hand results to the loop that is waiting for them (if it still runs)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(_settle, results)
