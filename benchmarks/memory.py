"""Memory: resident set size (RSS) with 10 000 conversations held by wa_agent.

Each row runs in a fresh interpreter and reports the RSS growth over that interpreter's
baseline (wa_agent and its dependencies already imported):

* ``MemorySessionStore``: every conversation goes through what the interface does per
  message — the message is recorded in the inbox (and its dedupe mark set), the inbound
  time is touched, then the item is completed with the user and assistant turns;
* ``SQLiteSessionStore``: the same on a temp file (RSS of the process; the file size too);
* ``ConversationLog`` (the widget model): every inbound message and outbound reply of
  every conversation, with a delivered status for each reply.

A conversation is ``--exchanges`` user messages each with one reply (default 3).

    python benchmarks/memory.py            # about 10 s
    python benchmarks/memory.py --quick    # about 3 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import PHONE_NUMBER_ID, SRC, emit, machine_info, rss_kib, sender_for, table

ROWS = ("memory", "sqlite", "widget")


async def _populate_store(store: Any, conversations: int, exchanges: int) -> None:
    from wa_agent.agents import Turn
    from wa_agent.stores.base import InboxItem
    from wa_agent.testing.webhooks import text_message

    name = "WhatsApp"
    now = time.time()

    async def conversation(c: int) -> None:
        sender = sender_for(c)
        for e in range(exchanges):
            raw = text_message(
                sender,
                f"Question {e} from conversation {c}: when do you open?",
                wamid=f"wamid.MEM{c:06d}{e:03d}",
                timestamp=int(now),
            )
            payload = json.dumps(
                {"m": raw, "p": PHONE_NUMBER_ID, "d": "15550000000", "n": f"User {c}"},
                separators=(",", ":"),
            )
            item = InboxItem(id=raw["id"], sender=sender, payload=payload, received_at=now)
            await store.add_inbound(name, [item])
            from datetime import UTC, datetime

            await store.touch_inbound(name, sender, datetime.fromtimestamp(now, UTC))
            await store.complete(
                name,
                item.id,
                sender,
                [
                    Turn(role="user", text=raw["text"]["body"], message_id=item.id),
                    Turn(role="assistant", text=f"We open at 9:00. (answer {e} to {c})"),
                ],
            )

    for start in range(0, conversations, 500):  # 500 at a time: group commits for SQLite
        await asyncio.gather(
            *(conversation(c) for c in range(start, min(start + 500, conversations)))
        )


def _populate_widget(conversations: int, exchanges: int) -> Any:
    from wa_agent.parser import MessageParser
    from wa_agent.testing.webhooks import encode, envelope, status_item, text_message
    from wa_agent.widget import ConversationLog

    log = ConversationLog()
    parser = MessageParser()
    for c in range(conversations):
        sender = sender_for(c)
        for e in range(exchanges):
            body = encode(
                envelope(
                    messages=[
                        text_message(
                            sender,
                            f"Question {e} from conversation {c}: when do you open?",
                            wamid=f"wamid.MEM{c:06d}{e:03d}",
                        )
                    ],
                    phone_number_id=PHONE_NUMBER_ID,
                )
            )
            for event in parser.parse(body):
                log.inbound(event)  # type: ignore[arg-type]
            out = f"wamid.OUT{c:06d}{e:03d}"
            log.outbound(sender, f"We open at 9:00. (answer {e} to {c})", wamid=out)
            for event in parser.parse(
                encode(envelope(statuses=[status_item(out, "delivered", sender)]))
            ):
                log.status(event)  # type: ignore[arg-type]
    return log


def child(row: str, conversations: int, exchanges: int) -> dict[str, Any]:
    # Import everything first so the baseline includes the code, not just the interpreter.
    import wa_agent.interface
    import wa_agent.parser
    import wa_agent.stores.memory
    import wa_agent.stores.sqlite
    import wa_agent.testing.webhooks

    extra: dict[str, Any] = {}
    if row == "widget":
        try:
            import wa_agent.widget
        except ImportError as exc:
            return {"row": row, "skipped": f"wa_agent.widget not importable: {exc}"}
    gc.collect()
    before = rss_kib()
    t0 = time.perf_counter()
    keep: Any
    if row == "memory":
        keep = wa_agent.stores.memory.MemorySessionStore()
        asyncio.run(_populate_store(keep, conversations, exchanges))
    elif row == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "bench.sqlite3"

            async def go() -> None:
                store = wa_agent.stores.sqlite.SQLiteSessionStore(path)
                await store.open()
                try:
                    await _populate_store(store, conversations, exchanges)
                finally:
                    gc.collect()
                    extra["rss_open_kib"] = rss_kib() - before
                    await store.aclose()

            asyncio.run(go())
            extra["file_kib"] = sum(f.stat().st_size for f in Path(d).iterdir()) // 1024
        keep = None
    else:
        keep = _populate_widget(conversations, exchanges)
        extra["contacts"] = len(keep)
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_kib()
    grown = extra.pop("rss_open_kib", after - before)
    del keep
    return {
        "row": row,
        "baseline_kib": before,
        "grown_kib": grown,
        "bytes_per_conversation": grown * 1024 / conversations,
        "fill_s": elapsed,
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="RSS with 10 000 conversations")
    ap.add_argument("--conversations", type=int, default=10_000)
    ap.add_argument("--exchanges", type=int, default=3, help="user messages per conversation")
    ap.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="~5 s smoke run (2000 conversations)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.conversations, args.exchanges)))
        return
    if args.quick:
        args.conversations = 2000
    t_start = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    env = dict(os.environ, PYTHONPATH=SRC)
    for row in ROWS:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                row,
                "--conversations",
                str(args.conversations),
                "--exchanges",
                str(args.exchanges),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{row} failed:\n{proc.stderr[-3000:]}")
        rows[row] = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {
        "memory": "MemorySessionStore",
        "sqlite": "SQLiteSessionStore (RSS while open)",
        "widget": "ConversationLog (widget model)",
    }
    lines = []
    for row, r in rows.items():
        if "skipped" in r:
            lines.append([names[row], "skipped", "-", "-", r["skipped"]])
            continue
        note = f"file {r['file_kib'] / 1024:.1f} MiB" if "file_kib" in r else ""
        lines.append(
            [
                names[row],
                f"{r['grown_kib'] / 1024:.1f}",
                f"{r['bytes_per_conversation']:,.0f}",
                f"{r['fill_s']:.1f}",
                note,
            ]
        )
    print(table(["holder", "RSS growth MiB", "bytes/conversation", "fill s", "note"], lines))
    print(
        f"\n{args.conversations:,} conversations × {args.exchanges} exchanges; "
        f"baseline RSS (wa_agent imported) {rows['memory'].get('baseline_kib', 0) / 1024:.1f}"
        " MiB"
    )
    result = {
        "benchmark": "memory",
        "machine": machine_info(),
        "settings": {"conversations": args.conversations, "exchanges": args.exchanges},
        "results": rows,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    emit(result)


if __name__ == "__main__":
    main()
