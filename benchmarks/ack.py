"""Ack throughput: signed text webhooks at fixed concurrency against (a) the bare HMAC-only
receiver (the ceiling), (b) wa_agent with the memory store, (c) wa_agent with the durable
SQLite inbox.

Each server runs in its own process (uvicorn, 1 worker, httptools, no access log) and is
restarted fresh for every run; runs are interleaved (a, b, c, a, b, c, ...) and repeated.
The load generator is Debian's ``wrk`` with a Lua script cycling through pre-signed bodies
(every request a distinct wamid), or a pure-Python client (``--client python``).

wa_agent runs an instant agent; its replies go through wa_agent's Sender to an
accept-everything Graph stub in a third process. The benchmark counts the 200s (acks); the
replies answered during the run are reported beside them. A diagnostic fourth row,
``wa-memory-ackonly``, gives the agent an hour per message so nothing is answered during
the run: the ack path alone (verify, parse, dedupe, record, schedule), without the reply
pipeline competing for the event loop.

Each server gets a short warm-up first (``--warmup`` webhooks, answered before the
measured run starts, so no warm-up backlog competes with it). "CPU µs/ack" is the server
process's CPU time over the run divided by the acks: it includes the reply work done
meanwhile, and it is the figure least disturbed by other processes on the machine.

    python benchmarks/ack.py            # full run, about 2 minutes
    python benchmarks/ack.py --quick    # smoke run, about 25 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from typing import Any

from _common import (
    HEALTH_PATH,
    BodyFile,
    RedisProcess,
    ServerProcess,
    choose_client,
    emit,
    fmt_range,
    get_json,
    machine_info,
    make_bodies,
    post_all,
    run_load,
    table,
    tempdir,
)

TARGETS = (
    "bare",
    "wa-memory",
    "wa-sqlite",
    "wa-memory-ackonly",
    "wa-sqlite-ackonly",
    "wa-memory-busy",
    "wa-sqlite-busy",
    "wa-redis-ackonly",
    "wa-redis-busy",
)
DEFAULT_TARGETS = ("bare", "wa-memory", "wa-sqlite", "wa-memory-ackonly")
GOALS = {"wa-memory": 0.7, "wa-sqlite": 0.5}
#: ``-busy`` rows: every webhook comes from one of this many senders, each of which already
#: has a message waiting (its agent busy for an hour): follow-ups for busy senders, as when
#: Meta redelivers a backlog after an outage. Compared with the ``-ackonly`` row (each
#: webhook from a new, idle sender): the target is >= 0.9x.
BUSY_SENDERS = 500
BUSY_GOAL = 0.9
#: A 1-hour agent: nothing is answered during the run, so the row shows the ack path alone
#: (parse, dedupe, record, schedule) without the reply pipeline competing for the loop.
ACK_ONLY_DELAY = "3600"


def server_args(target: str, db: str, sink: ServerProcess) -> list[str]:
    """``db``: the SQLite file, or the Redis URL for the ``wa-redis`` rows."""
    if target == "bare":
        return []
    store = target.split("-")[1]
    args = ["--store", store, "--graph", sink.url]
    args += ["--redis-url", db] if store == "redis" else ["--db", db]
    if target.endswith(("-ackonly", "-busy")):
        # Nothing is answered, so lift the backlog bound (503 past max_pending).
        args += ["--agent-delay", ACK_ONLY_DELAY, "--max-pending", str(10**9)]
    return args


def warm_up(
    target: str, server: ServerProcess, sink: ServerProcess, warm: list[tuple[str, bytes]]
) -> None:
    """A few hundred webhooks at low concurrency, then (wa_agent) wait until they are
    answered: imports, the Sender's connections and caches are warm, and no backlog from
    the warm-up competes with the measured run."""
    before = get_json(f"{sink.url}/__bench/stats")["messages"]
    asyncio.run(post_all(server.port, warm, connections=8))
    if target in ("wa-memory", "wa-sqlite"):
        deadline = time.monotonic() + 10
        while (
            get_json(f"{sink.url}/__bench/stats")["messages"] - before < len(warm)
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    if target.endswith("-busy"):  # every sender's agent is running before the run starts
        deadline = time.monotonic() + 10
        while (
            get_json(f"{server.url}{HEALTH_PATH}")["in_flight"] < len(warm)
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)


def one_run(
    target: str,
    client: str,
    bodies: BodyFile,
    warm: list[tuple[str, bytes]],
    *,
    connections: int,
    duration: float,
    sink: ServerProcess,
    db: str,
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if target.startswith("wa-redis"):  # a fresh server per run: no leftovers
            db = stack.enter_context(RedisProcess()).url
        server = stack.enter_context(
            ServerProcess("bare" if target == "bare" else "wa", *server_args(target, db, sink))
        )
        if warm:
            warm_up(target, server, sink, warm)
        sink_before = get_json(f"{sink.url}/__bench/stats")
        health_before = get_json(f"{server.url}{HEALTH_PATH}") if target != "bare" else None
        cpu0 = server.cpu()
        load = run_load(client, server.port, bodies, connections=connections, duration=duration)
        cpu = server.cpu() - cpu0
        acks = load.requests - load.non_200  # 200s only (503 is not an ack)
        row: dict[str, Any] = {
            "rps": acks / load.duration,
            "requests": acks,
            "errors": load.errors,
            "non_200": load.non_200,
            "wraps": load.wraps,
            "p50_ms": load.p50,
            "p99_ms": load.p99,
            "server_cpu_s": cpu,
            "cpu_us_per_ack": cpu / acks * 1e6 if acks else None,
        }
        if health_before is not None:
            health = get_json(f"{server.url}{HEALTH_PATH}", timeout=30)
            sink_after = get_json(f"{sink.url}/__bench/stats")
            row["received"] = health["received"] - health_before["received"]
            row["duplicates"] = health["duplicates"] - health_before["duplicates"]
            row["answered_during_run"] = sink_after["messages"] - sink_before["messages"]
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description="wa_agent ack throughput vs the bare ceiling")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="webhooks sent (and answered) before each measured run",
    )
    parser.add_argument(
        "--bodies",
        type=int,
        default=120_000,
        help="distinct pre-signed bodies (more than one run can send)",
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated subset of " + ",".join(TARGETS),
    )
    parser.add_argument("--quick", action="store_true", help="~20 s smoke run")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if not set(targets) <= set(TARGETS) or "bare" not in targets:
        parser.error(f"--targets must include bare and be a subset of {TARGETS}")
    if args.quick:
        args.reps, args.duration = 1, 1.0
        args.bodies = min(args.bodies, 20_000)
    client = choose_client(args.client)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    t_start = time.monotonic()
    rows: dict[int, dict[str, list[dict[str, Any]]]] = {
        c: {t: [] for t in targets} for c in concurrencies
    }
    with tempdir() as tmp:
        bodies = BodyFile(make_bodies(args.bodies, tag="A"), tmp)
        warm = make_bodies(args.warmup, tag="W")
        busy = any(t.endswith("-busy") for t in targets)
        busy_bodies = (
            BodyFile(make_bodies(args.bodies, tag="B", senders=BUSY_SENDERS), tmp)
            if busy
            else bodies
        )
        # One message of every busy sender first: each has an agent running for an hour.
        busy_warm = make_bodies(BUSY_SENDERS, tag="V", senders=BUSY_SENDERS)
        with ServerProcess("sink") as sink:
            n = 0
            for rep in range(args.reps):
                for conc in concurrencies:
                    for target in targets:
                        n += 1
                        is_busy = target.endswith("-busy")
                        row = one_run(
                            target,
                            client,
                            busy_bodies if is_busy else bodies,
                            busy_warm if is_busy else warm,
                            connections=conc,
                            duration=args.duration,
                            sink=sink,
                            db=str(tmp / f"inbox-{n}.sqlite3"),
                        )
                        rows[conc][target].append(row)
                        print(
                            f"  rep {rep + 1} c={conc:<3} {target:<10} "
                            f"{row['rps']:>9,.0f} acks/s  p99 {row['p99_ms']:.1f} ms  "
                            f"non-200 {row['non_200']}  wraps {row['wraps']}",
                            flush=True,
                        )

    result: dict[str, Any] = {
        "benchmark": "ack",
        "client": client,
        "machine": machine_info(),
        "settings": {
            "reps": args.reps,
            "duration_s": args.duration,
            "warmup_webhooks": args.warmup,
            "bodies": args.bodies,
        },
        "results": {},
        "targets": {},
    }
    lines = []
    for conc in concurrencies:
        ceiling = statistics.median(r["rps"] for r in rows[conc]["bare"])
        result["results"][str(conc)] = {}
        for target in targets:
            runs = rows[conc][target]
            rps = [r["rps"] for r in runs]
            med = statistics.median(rps)
            ratio = med / ceiling if ceiling else 0.0
            paired = [
                r["rps"] / b["rps"]
                for r, b in zip(runs, rows[conc]["bare"], strict=True)
                if b["rps"]
            ]
            entry: dict[str, Any] = {
                "rps_median": med,
                "rps_min": min(rps),
                "rps_max": max(rps),
                "ratio": ratio,
                "paired_ratio_min": min(paired),
                "paired_ratio_max": max(paired),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
                "cpu_us_per_ack": statistics.median(r["cpu_us_per_ack"] or 0 for r in runs),
                "non_200": sum(r["non_200"] + r["errors"] for r in runs),
                "wraps": sum(r["wraps"] for r in runs),
                "runs": runs,
            }
            if target in ("wa-memory", "wa-sqlite"):
                entry["answered_during_run"] = sum(r["answered_during_run"] for r in runs)
                entry["acked"] = sum(r["requests"] for r in runs)
            result["results"][str(conc)][target] = entry
            answered = (
                f"{entry['answered_during_run']:,}/{entry['acked']:,}"
                if "answered_during_run" in entry
                else "-"
            )
            lines.append(
                [
                    f"c={conc} {target}",
                    fmt_range(rps),
                    f"{ratio:.2f}",
                    f"{entry['p99_ms_median']:.1f}",
                    f"{entry['cpu_us_per_ack']:.0f}",
                    entry["non_200"],
                    entry["wraps"],
                    answered,
                ]
            )
            if target in GOALS:
                result["targets"][f"{target}@{conc}"] = {
                    "goal_ratio": GOALS[target],
                    "ratio": ratio,
                    "met": ratio >= GOALS[target],
                }
            idle = target.replace("-busy", "-ackonly")
            if target.endswith("-busy") and idle in rows[conc]:
                busy_ratio = med / statistics.median(r["rps"] for r in rows[conc][idle])
                result["targets"][f"{target}@{conc}"] = {
                    "goal_ratio": BUSY_GOAL,
                    "vs": idle,
                    "ratio": busy_ratio,
                    "met": busy_ratio >= BUSY_GOAL,
                }
                lines.append(
                    [
                        f"  busy/idle ({idle})",
                        "",
                        f"{busy_ratio:.2f}",
                        "",
                        "",
                        "",
                        "",
                        f"goal >= {BUSY_GOAL}",
                    ]
                )
    print()
    print(
        table(
            [
                "target",
                "acks/s median (min–max)",
                "× ceiling",
                "p99 ms",
                "CPU µs/ack",
                "non-200",
                "wraps",
                "answered in run",
            ],
            lines,
        )
    )
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    print(
        f"\nclient {client}, {args.reps} rep(s) × {args.duration:g} s, "
        f"elapsed {result['elapsed_s']} s"
    )
    emit(result)


if __name__ == "__main__":
    main()
