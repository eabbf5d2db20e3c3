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
* Handoff records (a person has taken a conversation over) are rows of their own table,
  so every process on the file sees a change at its next read.

The class is put together from three private modules: ``_sqlite_engine`` (the thread,
group commit, the schema), ``_sqlite_inbox`` (inbox, dedupe, statuses) and
``_sqlite_history`` (history, window, heartbeat, leases, handoff).
"""

from __future__ import annotations

from ._sqlite_history import HistoryOps
from ._sqlite_inbox import InboxOps

__all__ = ["SQLiteSessionStore"]


class SQLiteSessionStore(InboxOps, HistoryOps):
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
