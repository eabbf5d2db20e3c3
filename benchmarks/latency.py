"""Ack latency under load: p50/p99 of the webhook 200 at 64 connections while a 2-second agent
runs for every message (thousands of agent calls in flight).

The load is paced: each of the 64 keep-alive connections waits ``64 / rate`` seconds after
each response before its next request (wrk's ``delay()``), so the offered rate is about
``--rate`` webhooks/s, every one from a distinct sender with a distinct wamid. The same
paced load runs against the bare HMAC-only receiver first, for the floor on this machine.
wa_agent runs with ``max_concurrency`` large enough that every message's agent runs at once;
``/health`` is polled during the run for the number of agent calls in flight.

``wa-split`` (not run by default; needs ``redis-server``) is the scale-out layout of SPEC §7:
the server under load is a receiver (``WhatsAppInterface(receive_only=True)``) that only
records into a Redis inbox (a throwaway ``redis-server`` with an append-only file, fsync
every second), and a second process on the same Redis (a worker: no webhooks, a 0.1 s
sweep interval) runs the agents and sends the replies. Its "server CPU" is the receiver's.

    python benchmarks/latency.py            # about 35 s
    python benchmarks/latency.py --quick    # about 10 s
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from typing import Any, Self

from _common import (
    HEALTH_PATH,
    BodyFile,
    RedisProcess,
    ServerProcess,
    choose_client,
    emit,
    get_json,
    machine_info,
    make_bodies,
    run_load,
    table,
    tempdir,
)

GOAL_P99_MS = 10.0


class HealthPoller:
    """Polls ``/health`` every ``interval`` s in a thread; keeps the peak ``in_flight``."""

    def __init__(self, url: str, interval: float = 0.25) -> None:
        self.url = url
        self.interval = interval
        self.peak_in_flight = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                health = get_json(self.url, timeout=2)
            except OSError:
                continue
            self.samples += 1
            self.peak_in_flight = max(self.peak_in_flight, int(health.get("in_flight", 0)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def one_run(
    target: str,
    client: str,
    bodies: BodyFile,
    warm: BodyFile,
    *,
    rate: float,
    duration: float,
    warmup: float,
    agent_delay: float,
    max_concurrency: int,
    sink: ServerProcess,
    db: str,
    redis_url: str = "",
) -> dict[str, Any]:
    args: list[str] = []
    if target != "bare":
        store = {"wa-memory": "memory", "wa-sqlite": "sqlite"}.get(target, "redis")
        args = [
            "--store",
            store,
            "--db",
            db,
            "--redis-url",
            redis_url,
            "--graph",
            sink.url,
            "--agent-delay",
            str(agent_delay),
            "--max-concurrency",
            str(max_concurrency),
            "--max-queued-senders",
            str(max_concurrency),
            "--max-pending",
            str(10**9),
        ]
    with contextlib.ExitStack() as stack:
        health_server: ServerProcess | None = None
        if target == "wa-split":
            # The agents run in a worker process on the same Redis; the server under load
            # is a receiver that only records (WhatsAppInterface(receive_only=True)).
            health_server = stack.enter_context(
                ServerProcess("wa", *args, "--sweep-interval", "0.1")
            )
            args = [*args, "--receive-only"]
        server = stack.enter_context(ServerProcess("bare" if target == "bare" else "wa", *args))
        health_server = health_server or server
        if warmup > 0:
            run_load(client, server.port, warm, connections=64, duration=warmup, rate=rate)
        sink0 = get_json(f"{sink.url}/__bench/stats")
        cpu0 = server.cpu()
        if target == "bare":
            load = run_load(
                client, server.port, bodies, connections=64, duration=duration, rate=rate
            )
            peak = None
        else:
            with HealthPoller(f"{health_server.url}{HEALTH_PATH}") as poller:
                load = run_load(
                    client, server.port, bodies, connections=64, duration=duration, rate=rate
                )
            peak = poller.peak_in_flight
        cpu = server.cpu() - cpu0
        row: dict[str, Any] = {
            "rate": load.rps,
            "requests": load.requests,
            "p50_ms": load.p50,
            "p90_ms": load.p90,
            "p99_ms": load.p99,
            "p999_ms": load.p999,
            "max_ms": load.max,
            "non_200": load.non_200,
            "errors": load.errors,
            "wraps": load.wraps,
            "server_cpu_share": cpu / load.duration if load.duration else 0.0,
            "peak_agents_in_flight": peak,
        }
        if target != "bare":
            row["answered_during_run"] = (
                get_json(f"{sink.url}/__bench/stats")["messages"] - sink0["messages"]
            )
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description="ack latency while 2 s agents run")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered webhooks/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--agent-delay", type=float, default=2.0)
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=10_000,
        help="wa_agent's max_concurrency and max_queued_senders (every "
        "agent runs at once; max_pending is lifted too)",
    )
    parser.add_argument(
        "--targets",
        default="bare,wa-memory,wa-sqlite",
        help="comma-separated: bare, wa-memory, wa-sqlite, wa-split",
    )
    parser.add_argument("--quick", action="store_true", help="~15 s smoke run")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rate = 2.0, min(args.rate, 500.0)
    client = choose_client(args.client)
    targets = args.targets.split(",")
    if "wa-split" in targets and not RedisProcess.available():
        print("wa-split skipped: redis-server is not installed", flush=True)
        targets.remove("wa-split")
    t_start = time.monotonic()
    n_bodies = int(args.rate * (args.duration + 2) * 1.3) + 1000
    rows: dict[str, dict[str, Any]] = {}
    with tempdir() as tmp:
        bodies = BodyFile(make_bodies(n_bodies, tag="L"), tmp)
        warm = BodyFile(make_bodies(int(args.rate * 2) + 500, tag="W"), tmp)
        with ServerProcess("sink") as sink, contextlib.ExitStack() as stack:
            redis_url = ""
            if "wa-split" in targets:
                redis_url = stack.enter_context(RedisProcess()).url
            for i, target in enumerate(targets):
                rows[target] = row = one_run(
                    target,
                    client,
                    bodies,
                    warm,
                    rate=args.rate,
                    duration=args.duration,
                    warmup=args.warmup,
                    agent_delay=args.agent_delay,
                    max_concurrency=args.max_concurrency,
                    sink=sink,
                    db=str(tmp / f"inbox-{i}.sqlite3"),
                    redis_url=redis_url,
                )
                print(
                    f"  {target:<10} {row['rate']:>7,.0f}/s  p50 {row['p50_ms']:.2f} ms  "
                    f"p99 {row['p99_ms']:.2f} ms  in flight {row['peak_agents_in_flight']}",
                    flush=True,
                )
    lines = []
    for target, row in rows.items():
        lines.append(
            [
                target,
                f"{row['rate']:,.0f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p90_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{row['p999_ms']:.2f}",
                f"{row['max_ms']:.1f}",
                f"{row['server_cpu_share']:.0%}",
                row["peak_agents_in_flight"] if row["peak_agents_in_flight"] is not None else "-",
                row["non_200"] + row["errors"],
            ]
        )
    print()
    print(
        table(
            [
                "target",
                "acks/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "server CPU",
                "agents in flight (peak)",
                "non-200",
            ],
            lines,
        )
    )
    result: dict[str, Any] = {
        "benchmark": "latency",
        "client": client,
        "machine": machine_info(),
        "settings": {
            "connections": 64,
            "rate": args.rate,
            "duration_s": args.duration,
            "agent_delay_s": args.agent_delay,
            "max_concurrency": args.max_concurrency,
        },
        "results": rows,
        "targets": {},
    }
    for target in rows:
        if target != "bare":
            p99 = rows[target]["p99_ms"]
            result["targets"][f"{target} p99"] = {
                "goal_ms": GOAL_P99_MS,
                "p99_ms": p99,
                "met": p99 < GOAL_P99_MS,
            }
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    print(
        f"\nclient {client}, 64 connections paced to ~{args.rate:g}/s for "
        f"{args.duration:g} s, agent {args.agent_delay:g} s; elapsed {result['elapsed_s']} s"
    )
    emit(result)


if __name__ == "__main__":
    main()
