"""The machinery under :class:`~wa_agent.stores.sqlite.SQLiteSessionStore`: the schema, the
database thread that owns the connection, group commit and the purge of expired rows.

:class:`SQLiteEngine` runs operations (functions of a :class:`sqlite3.Connection`) on its
thread, in batches that share one transaction; the store's methods, in
:mod:`._sqlite_inbox` and :mod:`._sqlite_history`, are built on :meth:`SQLiteEngine._submit`.
See the module docstring of :mod:`wa_agent.stores.sqlite` for the design.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final, Self

from ..exceptions import StoreError
from ._common import check_ttl
from .base import DEFAULT_DEDUPE_TTL

# The store's logger: its messages keep the public module's name.
logger = logging.getLogger("wa_agent.stores.sqlite")

_Op = Callable[[sqlite3.Connection], Any]
_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]

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
CREATE TABLE IF NOT EXISTS handoffs (
    interface TEXT NOT NULL, contact TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (interface, contact)) WITHOUT ROWID;
"""


class _Request:
    __slots__ = ("future", "loop", "op", "write")

    def __init__(
        self, op: _Op, write: bool, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.op = op
        self.write = write
        self.loop = loop
        self.future = future


def _settle(results: list[_Outcome]) -> None:
    """Runs on the caller's loop: resolve the futures of one batch."""
    for future, value, exc in results:
        if future.done():  # the caller was cancelled; nothing to tell
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


class GroupedOp:
    """An operation the database thread may run together with the other operations of its
    class in a batch (one statement for many calls instead of a few per call).

    Called alone it is an ordinary operation (``op(conn)``); when a batch holds two or more
    of one class, :meth:`run_group` runs them all at once and answers for each.
    """

    __slots__ = ()

    #: ``False``: never grouped (e.g. the SQLite library is too old for the statements).
    groupable: ClassVar[bool] = True

    def __call__(self, conn: sqlite3.Connection) -> Any:
        raise NotImplementedError

    @classmethod
    def run_group(
        cls, conn: sqlite3.Connection, ops: list[Self], savepoint: bool
    ) -> list[Any] | None:
        """Run ``ops`` together; answer what each would have answered alone, in order.

        ``None`` gives up on an SQLite error: inside its own ``savepoint`` after undoing
        itself (the calls then run one by one), without one leaving the transaction to be
        rolled back by the caller.
        """
        raise NotImplementedError


def _run_groups(
    conn: sqlite3.Connection, batch: list[_Request], isolate: bool
) -> dict[int, _Outcome] | None:
    """Run each class of :class:`GroupedOp` with two or more calls in ``batch`` as one
    group; answer their outcomes by ``id()`` of the request, or ``None`` if a group failed
    without ``isolate`` (the transaction must be rolled back)."""
    groups: dict[type[GroupedOp], list[tuple[_Request, GroupedOp]]] = {}
    for r in batch:
        op = r.op
        if isinstance(op, GroupedOp) and op.groupable:
            groups.setdefault(type(op), []).append((r, op))
    out: dict[int, _Outcome] = {}
    for kind, members in groups.items():
        if len(members) < 2:
            continue
        answers = kind.run_group(conn, [op for _r, op in members], savepoint=isolate)
        if answers is None:
            if not isolate:
                return None
            continue  # undone in its savepoint: the calls run one by one
        for (r, _op), answer in zip(members, answers, strict=True):
            out[id(r)] = (r.future, answer, None)
    return out


class SQLiteEngine:
    """The database thread and its connection, shared by the store's groups of methods.

    Holds the constructor's settings (see :class:`~wa_agent.stores.sqlite.SQLiteSessionStore`)
    and runs operations through :meth:`_submit`.
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
        return f"{type(self).__name__}({self._path!r})"

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

    async def _value(self, sql: str, args: tuple[Any, ...]) -> Any:
        """The first column of the first row ``sql`` selects, or ``None`` (a read)."""

        def op(conn: sqlite3.Connection) -> Any:
            row = conn.execute(sql, args).fetchone()
            return None if row is None else row[0]

        return await self._submit(op, write=False)

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
        outcomes: list[_Outcome] | None
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
    ) -> list[_Outcome] | None:
        """Run the batch in one transaction (none for reads only) and commit it.

        Without ``isolate`` the writes (the groups of :class:`GroupedOp` first) run back to
        back, and the first one that fails rolls the whole transaction back and answers
        ``None`` (the caller then runs the batch again with ``isolate``): a savepoint around every
        write costs two more statements, and each statement hands the GIL over and waits to
        get it back from a busy event loop, so under load the savepoints were most of a
        batch's time. With ``isolate`` each write runs in its own savepoint, so one failing
        write undoes only itself.
        """
        if write:
            conn.execute("BEGIN IMMEDIATE")
        grouped = _run_groups(conn, batch, isolate)
        if grouped is None:
            conn.execute("ROLLBACK")
            return None
        outcomes: list[_Outcome] = []
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

    def _apply(self, r: _Request, conn: sqlite3.Connection) -> _Outcome:
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
            logger.warning(
                "SQLite store at %s: purging expired marks failed", self._path, exc_info=True
            )
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


def _post(
    loop: asyncio.AbstractEventLoop,
    results: list[_Outcome],
) -> None:
    """Hand results to the loop that is waiting for them (if it still runs)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(_settle, results)
