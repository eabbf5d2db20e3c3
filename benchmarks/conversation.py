"""Answering under conversational load: many users writing several quick messages.

Each scenario starts a fresh Graph API stub (``_serve.py stub``: records when each reply
arrived, to whom, and which wamids it answers) and a fresh bot process, then plays users:
each user posts their messages one after another at planned times (a user's messages are
sequential, like a person typing), 5 % of the messages are delivered a second time a
little later (Meta's redeliveries), and the run waits until every acknowledged message is
answered (or the deadline).

Bots, in one run, all with the same agent (waits ``--agent`` seconds, answers
``ok <wamid>``, or ``ok <wamid>,<wamid>…`` for a coalesced CHAT turn):

* ``lean``    — the lean reference: raw ASGI, one shared httpx client, a task per message,
  no guarantees (``benchmarks/lean_bot.py``); ``lean+rr`` also marks each message read with
  the typing indicator first (the same two Graph calls as wa_agent);
* ``wa-task`` / ``wa-chat`` — wa_agent with its defaults (memory store; the per-number send
  limit off, as the stub enforces no tier);
* with ``--before SRC``: the same two from another checkout (``WA_BENCH_SRC``), same run.

Scenarios: ``burst`` (200 users x 10 messages within 0.5 s), ``b2b`` (100 users x 3 back to
back), ``steady2`` / ``steady10`` (a steady 100 messages/s for 10 s from 500 users, 2 s and
10 s agents), ``instant`` (3000 single messages, 0 s agent: answered/s and CPU per answer),
and ``faults`` (``burst`` with 5 % 429 + 1 % 500 from the stub).

Per row: acknowledged, answered, lost (acknowledged, never answered), duplicated (a wamid
answered twice), misrouted (a reply to another user), out of order (a user's replies not in
the order of their messages), reply latency p50/p99/max (reply arrival - first post of the
message), answered/s and the bot's CPU ms per answer. The targets (SPEC §8) are checked and
printed at the end.

    python benchmarks/conversation.py                    # about 4 minutes
    python benchmarks/conversation.py --quick            # smoke run, about 40 s
    python benchmarks/conversation.py --before /tmp/old  # add rows for another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from _common import (
    APP_SECRET,
    HOST,
    PHONE_NUMBER_ID,
    WEBHOOK_PATH,
    ServerProcess,
    emit,
    get_json,
    machine_info,
    raw_request,
    table,
)

SCENARIOS = ("burst", "b2b", "steady2", "steady10", "instant", "faults")


@dataclass
class Plan:
    """Who sends what when: ``users[sender] = [(offset_s, wamid, signature, body), ...]``."""

    users: dict[str, list[tuple[float, str, str, bytes]]] = field(default_factory=dict)
    redeliver: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.users.values())


def make_plan(
    tag: str,
    users: int,
    per_user: int,
    spread: float,
    *,
    start_spread: float = 0.0,
    redeliveries: float = 0.05,
    seed: int = 7,
) -> Plan:
    """``users`` users, each sending ``per_user`` messages within ``spread`` seconds, the
    users starting within ``start_spread`` seconds."""
    from wa_agent.signature import SignatureVerifier
    from wa_agent.testing.webhooks import encode, envelope, text_message

    rng = random.Random(seed)
    verifier = SignatureVerifier(APP_SECRET)
    now = int(time.time())
    plan = Plan()
    for u in range(users):
        sender = str(491600000000 + u)
        begin = rng.uniform(0, start_spread)
        offsets = sorted(rng.uniform(0, spread) for _ in range(per_user))
        out = []
        for n, offset in enumerate(offsets):
            wamid = f"wamid.CONV{tag}{u:05d}{n:03d}"
            body = encode(
                envelope(
                    messages=[text_message(sender, f"m{n}", wamid=wamid, timestamp=now)],
                    phone_number_id=PHONE_NUMBER_ID,
                )
            )
            out.append((begin + offset, wamid, verifier.sign(body), body))
            if rng.random() < redeliveries:
                plan.redeliver.add(wamid)
        plan.users[sender] = out
    return plan


async def _status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    status = int(line.split()[1])
    length = 0
    while (header := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def play(port: int, plan: Plan, *, connections: int = 64, deadline: float) -> dict[str, Any]:
    """Post the plan; answer the first post time and the ack of each wamid."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(HOST, port))
    posted: dict[str, float] = {}
    acked: dict[str, list[str]] = defaultdict(list)  # sender -> wamids in ack order
    statuses: Counter[int] = Counter()
    later: list[asyncio.Task[None]] = []
    t0 = time.monotonic()

    async def post(wamid: str, sig: str, body: bytes) -> int:
        reader, writer = await pool.get()
        try:
            writer.write(raw_request(WEBHOOK_PATH, sig, body, port))
            status = await asyncio.wait_for(_status(reader), 30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            reader, writer = await asyncio.open_connection(HOST, port)
            status = 0
        finally:
            pool.put_nowait((reader, writer))
        statuses[status] += 1
        return status

    async def redeliver(wamid: str, sig: str, body: bytes, delay: float) -> None:
        await asyncio.sleep(delay)
        await post(wamid, sig, body)

    async def user(sender: str, messages: list[tuple[float, str, str, bytes]]) -> None:
        rng = random.Random(sender)
        for offset, wamid, sig, body in messages:
            wait = t0 + offset - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() > deadline:
                return
            posted[wamid] = time.time()
            if await post(wamid, sig, body) == 200:
                acked[sender].append(wamid)
            if wamid in plan.redeliver:
                later.append(
                    asyncio.ensure_future(redeliver(wamid, sig, body, rng.uniform(0.05, 1.0)))
                )

    await asyncio.gather(*(user(s, m) for s, m in plan.users.items()))
    await asyncio.gather(*later)
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return {"posted": posted, "acked": dict(acked), "statuses": dict(statuses)}


def measure(
    replies: list[list[Any]], posted: dict[str, float], acked: dict[str, list[str]]
) -> dict[str, Any]:
    """Exactly-once, routing, order and latency from the stub's replies."""
    owner = {w: s for s, ws in acked.items() for w in ws}
    seen: Counter[str] = Counter()
    first: dict[str, float] = {}
    order: dict[str, list[str]] = defaultdict(list)
    misrouted = 0
    for at, to, ids in replies:
        for wamid in ids.split(","):
            seen[wamid] += 1
            if owner.get(wamid, to) != to:
                misrouted += 1
            if wamid not in first:
                first[wamid] = at
                order[to].append(wamid)
    wanted = set(owner)
    lost = len(wanted - set(first))
    duplicated = sum(n - 1 for w, n in seen.items() if n > 1 and w in wanted)
    out_of_order = sum(
        1
        for s, ws in acked.items()
        if [w for w in order.get(s, []) if w in owner] != ws[: len(order.get(s, []))]
    )
    latencies = sorted(first[w] - posted[w] for w in wanted if w in first and w in posted)
    pick = lambda q: (
        latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
    )
    span = (max(first.values()) - min(posted.values())) if first else float("nan")
    return {
        "acked": len(wanted),
        "answered": len(wanted & set(first)),
        "lost": lost,
        "duplicated": duplicated,
        "misrouted": misrouted,
        "out_of_order": out_of_order,
        "p50_s": pick(0.50),
        "p99_s": pick(0.99),
        "max_s": latencies[-1] if latencies else float("nan"),
        "answered_per_s": len(first) / span if first else 0.0,
        "replies": len(replies),
    }


def run_one(
    bot: str,
    scenario: str,
    plan: Plan,
    *,
    agent: float,
    deadline_s: float,
    src: str | None = None,
    faults: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    stub = ServerProcess("stub", "--fail-429", str(faults[0]), "--fail-500", str(faults[1]))
    target, args = {
        "lean": ("lean", []),
        "lean+rr": ("lean", ["--read-receipt"]),
        "wa-task": ("wa", ["--mode", "task"]),
        "wa-chat": ("wa", ["--mode", "chat"]),
    }[bot.removesuffix("@before")]
    if target == "wa":
        args += ["--retry-scale", "0.05"]  # the stub's faults: retried quickly
    env_src = os.environ.get("WA_BENCH_SRC")
    if src is not None:
        os.environ["WA_BENCH_SRC"] = src
    try:
        stub.launch()
        stub.wait_ready()
        server = ServerProcess(target, "--graph", stub.url, "--agent-delay", str(agent), *args)
        server.launch()
    finally:
        if src is not None:
            if env_src is None:
                del os.environ["WA_BENCH_SRC"]
            else:
                os.environ["WA_BENCH_SRC"] = env_src
    with stub, server:
        server.wait_ready()
        cpu0 = server.cpu()
        deadline = time.monotonic() + deadline_s
        played = asyncio.run(play(server.port, plan, deadline=deadline))
        expected = sum(len(ws) for ws in played["acked"].values())
        while time.monotonic() < deadline:
            stats = get_json(f"{stub.url}/__bench/stats")
            if stats["messages"] >= expected and bot.startswith("lean"):
                break
            if stats["messages"] >= expected and bot.startswith("wa"):
                got = get_json(f"{stub.url}/__bench/stats?replies=1", timeout=30)
                if measure(got["replies"], played["posted"], played["acked"])["lost"] == 0:
                    break
            time.sleep(0.1)
        time.sleep(0.5)  # late duplicates would show up here
        cpu = server.cpu() - cpu0
        stats = get_json(f"{stub.url}/__bench/stats?replies=1", timeout=30)
    row = measure(stats["replies"], played["posted"], played["acked"])
    row.update(
        bot=bot,
        scenario=scenario,
        messages=plan.size,
        agent_s=agent,
        not_acked=plan.size - row["acked"],
        reads=stats["reads"],
        faults=stats["faults"],
        server_cpu_s=cpu,
        cpu_ms_per_answer=cpu / row["answered"] * 1000 if row["answered"] else None,
    )
    return row


def plans(quick: bool) -> dict[str, tuple[Plan, float]]:
    scale = 4 if quick else 1
    return {
        "burst": (make_plan("B", 200 // scale, 10, 0.5), 2.0),
        "b2b": (make_plan("C", 100 // scale, 3, 0.15), 2.0),
        "steady2": (make_plan("D", 500 // scale, 2, 5.0, start_spread=10.0 / scale), 2.0),
        "steady10": (make_plan("E", 500 // scale, 2, 5.0, start_spread=10.0 / scale), 10.0),
        "instant": (make_plan("F", 3000 // scale, 1, 0.0, start_spread=0.0, redeliveries=0.0), 0.0),
        "faults": (make_plan("G", 200 // scale, 10, 0.5), 2.0),
    }


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """SPEC §8's conversational targets, row by row (printed, never asserted)."""
    by = {(r["scenario"], r["bot"]): r for r in rows}
    lines = []
    for r in rows:
        if r["bot"].startswith("wa") and "@" not in r["bot"]:
            ok = (
                r["lost"] == 0
                and r["duplicated"] == 0
                and r["misrouted"] == 0
                and r["out_of_order"] == 0
            )
            lines.append(
                f"{r['scenario']:>9} {r['bot']:<8} exactly once, routed, in order: "
                f"{'yes' if ok else 'NO'}"
            )
    for scenario in ("burst", "b2b"):
        ref, task, chat = (by.get((scenario, b)) for b in ("lean", "wa-task", "wa-chat"))
        if ref and task:
            bound = 1.5 * ref["p99_s"] + 0.5
            lines.append(
                f"{scenario:>9} TASK p99 {task['p99_s']:.2f} s <= 1.5 x lean "
                f"{ref['p99_s']:.2f} + 0.5 = {bound:.2f}: "
                f"{'yes' if task['p99_s'] <= bound else 'NO'}"
            )
        if chat:
            bound = 2 * chat["agent_s"] + 1.5
            lines.append(
                f"{scenario:>9} CHAT p99 {chat['p99_s']:.2f} s <= 2 x agent + 1.5 = "
                f"{bound:.2f}: {'yes' if chat['p99_s'] <= bound else 'NO'}"
            )
    ref, task = by.get(("instant", "lean+rr")), by.get(("instant", "wa-task"))
    if ref and task and ref["answered_per_s"]:
        ratio = task["answered_per_s"] / ref["answered_per_s"]
        lines.append(
            f"  instant answered/s {task['answered_per_s']:.0f} vs lean+rr "
            f"{ref['answered_per_s']:.0f}: {ratio:.2f}x (target >= 0.6): "
            f"{'yes' if ratio >= 0.6 else 'NO'}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the users")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--bots", default="lean,lean+rr,wa-task,wa-chat")
    parser.add_argument(
        "--before",
        default=None,
        help="another wa_agent checkout: adds wa-task@before, wa-chat@before",
    )
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds per run")
    args = parser.parse_args()
    all_plans = plans(args.quick)
    bots = args.bots.split(",")
    if args.before:
        bots += [f"{b}@before" for b in bots if b.startswith("wa")]
    rows = []
    for scenario in args.only.split(","):
        plan, agent = all_plans[scenario]
        faults = (0.05, 0.01) if scenario == "faults" else (0.0, 0.0)
        for bot in bots:
            if scenario == "faults" and bot.startswith("lean"):
                continue  # no retries at all: the faults' replies are simply lost
            if scenario == "instant" and bot == "lean":
                continue
            src = args.before if bot.endswith("@before") else None
            row = run_one(
                bot, scenario, plan, agent=agent, deadline_s=args.deadline, src=src, faults=faults
            )
            rows.append(row)
            print(
                f"{scenario:>9} {bot:<15} acked {row['acked']:>5} answered "
                f"{row['answered']:>5} p99 {row['p99_s']:.2f} s",
                flush=True,
            )
    print()
    print(
        table(
            [
                "scenario",
                "bot",
                "acked",
                "answered",
                "lost",
                "dup",
                "misrouted",
                "order",
                "p50 s",
                "p99 s",
                "max s",
                "answered/s",
                "CPU ms/answer",
            ],
            [
                [
                    r["scenario"],
                    r["bot"],
                    r["acked"],
                    r["answered"],
                    r["lost"],
                    r["duplicated"],
                    r["misrouted"],
                    r["out_of_order"],
                    f"{r['p50_s']:.2f}",
                    f"{r['p99_s']:.2f}",
                    f"{r['max_s']:.2f}",
                    f"{r['answered_per_s']:.0f}",
                    f"{r['cpu_ms_per_answer']:.2f}" if r["cpu_ms_per_answer"] else "-",
                ]
                for r in rows
            ],
        )
    )
    print()
    for line in check_targets(rows):
        print(line)
    emit(
        {
            "benchmark": "conversation",
            "machine": machine_info(),
            "rows": rows,
            "median_p99": statistics.median(r["p99_s"] for r in rows) if rows else None,
        }
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
