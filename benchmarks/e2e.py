"""End to end: answered messages per second through the Cloud API emulator, and whether every
acknowledged message was answered exactly once.

Each scenario starts a fresh ``CloudAPIEmulator`` process and a fresh server process, POSTs
``N`` signed text webhooks (distinct wamids and senders) over 64 keep-alive connections, and
waits until the emulator has accepted a reply for every acknowledged message (or the
deadline). The agent answers ``ok <wamid>``, so the emulator's accepted sends are counted
per inbound wamid: ``lost`` = acknowledged but never answered, ``duplicated`` = answered
more than once. Both must be 0 for wa_agent.

Scenarios, in one run:

* wa_agent (memory store) with a 0 s agent, and with the durable SQLite inbox;
* the baseline with a 0 s agent: a FastAPI app that runs the agent in a background task and
  sends each reply with a fresh ``httpx.AsyncClient`` (how the existing integrations send);
* wa_agent with a 2 s agent and ``max_concurrency`` as the bound; the baseline with the
  same 2 s agent (it has no bound).

answered/s = answered / (time of the last accepted reply - time of the first POST); a
scenario that does not finish by the deadline reports answered / deadline.

    python benchmarks/e2e.py            # about 110 s
    python benchmarks/e2e.py --quick    # about 20 s (a smoke run: too short for steady rates)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import (
    BodyFile,
    ServerProcess,
    choose_client,
    emit,
    get_json,
    machine_info,
    make_bodies,
    post_all,
    run_load,
    table,
    tempdir,
    wamid_for,
)

GOAL_VS_BASELINE = 3.0
GOAL_VS_CEILING = 0.2
SCENARIOS = ("wa-memory", "wa-sqlite", "baseline", "wa-slow", "baseline-slow")


def scenario(
    name: str,
    server_target: str,
    server_args: list[str],
    *,
    n: int,
    tag: str,
    deadline_s: float,
    connections: int,
    settle_s: float = 1.0,
) -> dict[str, Any]:
    bodies = make_bodies(n, tag=tag)
    emulator = ServerProcess("emulator")
    server = ServerProcess(server_target, "--graph", emulator.url, *server_args)
    emulator.launch()
    server.launch()
    with emulator, server:
        emulator.wait_ready()
        server.wait_ready()
        stats_url = f"{emulator.url}/__bench/stats"
        t0_wall = time.time()
        t0 = time.monotonic()
        deadline = t0 + deadline_s
        cpu0 = server.cpu()
        posted = asyncio.run(
            post_all(server.port, bodies, connections=connections, deadline=deadline)
        )
        acked = len(posted["acked"])
        ack_done = time.monotonic() - t0
        stats = get_json(stats_url)
        while stats["messages"] < acked and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = get_json(stats_url)
        finished = stats["messages"] >= acked
        time.sleep(settle_s)  # late duplicates would show up here
        stats = get_json(f"{stats_url}?texts=1", timeout=30)
        cpu = server.cpu() - cpu0
    texts: dict[str, int] = stats["texts"]
    expected = {f"ok {wamid_for(tag, i)}" for i in posted["acked"]}
    answered_ok = sum(1 for t in expected if texts.get(t, 0) > 0)
    lost = len(expected) - answered_ok
    duplicated = sum(c - 1 for t, c in texts.items() if c > 1)
    answered = stats["messages"]
    if finished and stats["last"] is not None:
        elapsed = max(1e-6, stats["last"] - t0_wall)
    else:
        elapsed = deadline_s
    return {
        "scenario": name,
        "n": n,
        "acked": acked,
        "answered": answered,
        "answered_per_s": answered_ok / elapsed,
        "elapsed_s": elapsed,
        "finished": finished,
        "lost": lost if finished else None,
        "unanswered_at_deadline": lost,
        "duplicated": duplicated,
        "not_acked": n - acked,
        "ack_phase_s": ack_done,
        "ack_p50_ms": posted["p50"],
        "ack_p99_ms": posted["p99"],
        "graph_errors": stats["errors"],
        "server_cpu_s": cpu,
        "cpu_ms_per_answer": cpu / answered_ok * 1000 if answered_ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="answered messages/s through the emulator")
    parser.add_argument("-n", type=int, default=3000, help="messages for the 0 s agent runs")
    parser.add_argument("--n-slow", type=int, default=1500, help="messages for the 2 s runs")
    parser.add_argument(
        "--bound", type=int, default=500, help="wa_agent max_concurrency in the 2 s agent run"
    )
    parser.add_argument("--deadline", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--slow-delay", type=float, default=2.0, help="agent delay (s) of the slow scenarios"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds to wait for late duplicates after the last reply",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help="comma-separated subset of " + ",".join(SCENARIOS),
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip measuring the bare receiver's ack ceiling"
    )
    parser.add_argument("--quick", action="store_true", help="~20 s smoke run")
    args = parser.parse_args()
    if args.quick:
        args.n, args.n_slow, args.bound, args.deadline = 500, 200, 200, 3.0
        args.settle = min(args.settle, 0.3)
    t_start = time.monotonic()
    runs: list[dict[str, Any]] = []
    plan: dict[str, tuple[str, str, list[str], int, str]] = {
        "wa-memory": ("wa-memory, 0 s agent", "wa", ["--store", "memory"], args.n, "M"),
        "wa-sqlite": ("wa-sqlite, 0 s agent", "wa", ["--store", "sqlite"], args.n, "S"),
        "baseline": ("fastapi+httpx baseline, 0 s agent", "fastapi", [], args.n, "F"),
        "wa-slow": (
            f"wa-memory, {args.slow_delay:g} s agent, bound {args.bound}",
            "wa",
            [
                "--store",
                "memory",
                "--agent-delay",
                str(args.slow_delay),
                "--max-concurrency",
                str(args.bound),
            ],
            args.n_slow,
            "P",
        ),
        "baseline-slow": (
            f"fastapi+httpx baseline, {args.slow_delay:g} s agent",
            "fastapi",
            ["--agent-delay", str(args.slow_delay)],
            args.n_slow,
            "Q",
        ),
    }
    only = [k for k in args.only.split(",") if k]
    if not set(only) <= set(SCENARIOS):
        parser.error(f"--only takes a subset of {SCENARIOS}")
    plan = {k: v for k, v in plan.items() if k in only}
    with tempdir() as tmp:
        for i, (name, target, extra, n, tag) in enumerate(plan.values()):
            if "--store" in extra and extra[extra.index("--store") + 1] == "sqlite":
                extra = [*extra, "--db", str(tmp / f"inbox-{i}.sqlite3")]
            row = scenario(
                name,
                target,
                extra,
                n=n,
                tag=tag,
                deadline_s=args.deadline,
                connections=args.connections,
                settle_s=args.settle,
            )
            runs.append(row)
            print(
                f"  {name:<40} {row['answered_per_s']:>8,.0f} answered/s  "
                f"lost {row['lost']}  dup {row['duplicated']}  "
                f"{'done' if row['finished'] else 'DEADLINE'} in {row['elapsed_s']:.1f} s",
                flush=True,
            )
        ceiling = None
        if not args.no_ceiling:
            client = choose_client("auto")
            bare_bodies = BodyFile(make_bodies(60_000 if not args.quick else 10_000, tag="C"), tmp)
            with ServerProcess("bare") as bare:
                ceiling = run_load(
                    client,
                    bare.port,
                    bare_bodies,
                    connections=64,
                    duration=2 if not args.quick else 1,
                ).rps
    rate = {key: row["answered_per_s"] for key, row in zip(plan, runs, strict=True)}
    lines = [
        [
            r["scenario"],
            f"{r['answered_per_s']:,.0f}",
            f"{r['acked']:,}/{r['n']:,}",
            f"{r['answered']:,}",
            "-" if r["lost"] is None else r["lost"],
            r["duplicated"],
            f"{r['elapsed_s']:.1f}" + ("" if r["finished"] else " (deadline)"),
            f"{r['cpu_ms_per_answer']:.2f}" if r["cpu_ms_per_answer"] else "-",
        ]
        for r in runs
    ]
    print()
    print(
        table(
            [
                "scenario",
                "answered/s",
                "acked/posted",
                "answered",
                "lost",
                "duplicated",
                "seconds",
                "server CPU ms/answer",
            ],
            lines,
        )
    )

    def ratio(a: str, b: str) -> float | None:
        return rate[a] / rate[b] if rate.get(a) and rate.get(b) else None

    ratios = {
        "wa_vs_baseline_0s": ratio("wa-memory", "baseline"),
        "wa_vs_baseline_slow": ratio("wa-slow", "baseline-slow"),
        "wa_vs_ceiling_0s": rate["wa-memory"] / ceiling
        if ceiling and rate.get("wa-memory")
        else None,
        "ceiling_acks_per_s": ceiling,
        "ideal_slow_bound_per_s": args.bound / args.slow_delay,
    }
    wa_runs = [r for r in runs if r["scenario"].startswith("wa-")]
    result: dict[str, Any] = {
        "benchmark": "e2e",
        "machine": machine_info(),
        "settings": {
            "n": args.n,
            "n_slow": args.n_slow,
            "bound": args.bound,
            "slow_delay_s": args.slow_delay,
            "deadline_s": args.deadline,
            "connections": args.connections,
        },
        "results": runs,
        "ratios": ratios,
        "lost": sum(r["unanswered_at_deadline"] for r in wa_runs),
        "duplicated": sum(r["duplicated"] for r in wa_runs),
        "targets": {
            "answered/s vs baseline (0 s agent)": {
                "goal": GOAL_VS_BASELINE,
                "ratio": ratios["wa_vs_baseline_0s"],
                "met": (ratios["wa_vs_baseline_0s"] or 0) >= GOAL_VS_BASELINE,
            },
            "answered/s vs ceiling (0 s agent)": {
                "goal": GOAL_VS_CEILING,
                "ratio": ratios["wa_vs_ceiling_0s"],
                "met": None
                if ceiling is None
                else (ratios["wa_vs_ceiling_0s"] or 0) >= GOAL_VS_CEILING,
            },
            "wa_agent lost == duplicated == 0": {
                "met": all(r["lost"] == 0 and r["duplicated"] == 0 for r in wa_runs)
            },
        },
    }
    print()
    for key, value in ratios.items():
        if value is not None:
            print(f"{key}: {value:,.2f}")
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    print(f"elapsed {result['elapsed_s']} s")
    emit(result)


if __name__ == "__main__":
    main()
