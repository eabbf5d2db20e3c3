"""History, the 24-hour window, the heartbeat recipient, leases and handoff records of
:class:`~wa_agent.stores.sqlite.SQLiteSessionStore` (one mixin of its methods)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from ..agents import Turn
from ._common import check_ttl, from_micros, to_micros
from ._sqlite_engine import SQLiteEngine

_LEASE = (
    "INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
    "expires = excluded.expires "
    "WHERE leases.owner = excluded.owner OR leases.expires <= ?"
)

#: One history row (see :func:`turn_rows`).
INSERT_TURN = (
    "INSERT INTO history (interface, sender, role, text, at, message_id) VALUES (?, ?, ?, ?, ?, ?)"
)


def turn_rows(
    interface: str, sender: str, turns: Sequence[Turn]
) -> list[tuple[str, str, str, str, str | None, str | None]]:
    """The parameters of :data:`INSERT_TURN` for each of ``turns``."""
    return [
        (
            interface,
            sender,
            t.role,
            t.text,
            t.at.isoformat() if t.at is not None else None,
            t.message_id,
        )
        for t in turns
    ]


class HistoryOps(SQLiteEngine):
    """The per-sender state (history, window, handoff) and the heartbeat and leases."""

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
                    role=r[0],
                    text=r[1],
                    at=datetime.fromisoformat(r[2]) if r[2] else None,
                    message_id=r[3],
                )
                for r in rows
            ]

        result: list[Turn] = await self._submit(op, write=False)
        return result

    async def append_history(self, interface: str, sender: str, turns: Sequence[Turn]) -> None:
        """Append turns to the sender's history."""
        rows = turn_rows(interface, sender, turns)
        if rows:
            await self._submit(lambda c: c.executemany(INSERT_TURN, rows), write=True)

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
        micros = await self._value(
            "SELECT at FROM last_inbound WHERE interface = ? AND sender = ?", (interface, sender)
        )
        return None if micros is None else from_micros(int(micros))

    # -- heartbeat and leases -----------------------------------------------------------------
    async def get_heartbeat_recipient(self, interface: str) -> str | None:
        """The persisted heartbeat recipient, or ``None``."""
        recipient = await self._value(
            "SELECT recipient FROM heartbeat WHERE interface = ?", (interface,)
        )
        return None if recipient is None else str(recipient)

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
            return [
                conn.execute(_LEASE, (name, owner, expires, now)).rowcount == 1 for name in names
            ]

        result: list[bool] = await self._submit(op, write=True)
        return result

    async def release_lease(self, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it."""
        await self._submit(
            lambda c: c.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner)),
            write=True,
        )

    # -- handoff ------------------------------------------------------------------------------
    async def set_handoff(self, interface: str, contact: str, record: str | None) -> None:
        """Store (or with ``None`` delete) the contact's handoff record, in one transaction;
        see :meth:`SessionStore.set_handoff`."""
        if record is None:
            sql = "DELETE FROM handoffs WHERE interface = ? AND contact = ?"
            args: tuple[str, ...] = (interface, contact)
        else:
            sql = (
                "INSERT INTO handoffs (interface, contact, record) VALUES (?, ?, ?) "
                "ON CONFLICT (interface, contact) DO UPDATE SET record = excluded.record"
            )
            args = (interface, contact, record)
        await self._submit(lambda c: c.execute(sql, args), write=True)

    async def get_handoff(self, interface: str, contact: str) -> str | None:
        """The contact's handoff record, or ``None``."""
        record = await self._value(
            "SELECT record FROM handoffs WHERE interface = ? AND contact = ?", (interface, contact)
        )
        return None if record is None else str(record)

    async def handoffs(self, interface: str) -> dict[str, str]:
        """Every contact with a handoff record -> its record."""

        def op(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT contact, record FROM handoffs WHERE interface = ?", (interface,)
            )
            return {str(r[0]): str(r[1]) for r in rows}

        result: dict[str, str] = await self._submit(op, write=False)
        return result
