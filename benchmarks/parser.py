"""Parser throughput: ``MessageParser().parse(body_bytes)`` events per second, in-process on
one thread (JSON decoding included).

Workloads:

* ``text``: single-message text webhooks (the target: ≥ 50 000 events/s on one core);
* ``mix``: single-item webhooks in a realistic proportion (statuses for outbound messages,
  text, media, interactive and button replies, reactions, locations, contacts, a template
  status update);
* ``batch-text`` / ``batch-mix``: one body carrying 1000 items (Meta's maximum);
* ``json.loads``: decoding the ``mix`` bodies only, for reference (the floor).

Rates are given per CPU-second of this process (what "one core" means on a shared machine)
and per wall-clock second; the median of ``--repeats`` rounds.

    python benchmarks/parser.py            # about 10 s
    python benchmarks/parser.py --quick    # about 2 s
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import emit, machine_info, sender_for, table

from wa_agent.parser import MessageParser
from wa_agent.testing.webhooks import (
    button_reply_message,
    contacts_message,
    encode,
    envelope,
    interactive_reply_message,
    location_message,
    media_message,
    reaction_message,
    status_item,
    text_message,
)

GOAL_TEXT = 50_000

#: (weight, item factory); statuses dominate real traffic (sent/delivered/read per reply).
_MIX: list[tuple[int, str]] = [
    (35, "text"),
    (45, "status"),
    (5, "image"),
    (3, "audio"),
    (3, "interactive"),
    (2, "reaction"),
    (2, "location"),
    (2, "document"),
    (1, "contacts"),
    (1, "button"),
    (1, "template_status"),
]


def _item(kind: str, i: int) -> dict[str, Any]:
    who = sender_for(i % 5000)
    if kind == "text":
        return text_message(who, f"Hello, message number {i}. What are your opening hours?")
    if kind == "image":
        return media_message(who, "image", str(10**15 + i), "image/jpeg", caption="look")
    if kind == "audio":
        return media_message(who, "audio", str(10**15 + i), "audio/ogg; codecs=opus", voice=True)
    if kind == "document":
        return media_message(
            who,
            "document",
            str(10**15 + i),
            "application/pdf",
            filename="invoice.pdf",
            caption="invoice",
        )
    if kind == "interactive":
        return interactive_reply_message(who, "opt-1", "Yes please", context_id="wamid.X")
    if kind == "reaction":
        return reaction_message(who, "wamid.ORIGINAL", "👍")
    if kind == "location":
        return location_message(who, 52.52, 13.405, name="Office", address="Berlin")
    if kind == "contacts":
        return contacts_message(who, "Ada Lovelace", ["+44 20 7946 0000"])
    if kind == "button":
        return button_reply_message(who, "Stop promotions", "STOP")
    raise ValueError(kind)


def _body(kind: str, i: int) -> bytes:
    if kind == "status":
        state = ("sent", "delivered", "read")[i % 3]
        return encode(envelope(statuses=[status_item(f"wamid.OUT{i}", state, sender_for(i))]))
    if kind == "template_status":
        return encode(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "200000000000001",
                        "time": 1700000000,
                        "changes": [
                            {
                                "field": "message_template_status_update",
                                "value": {
                                    "event": "APPROVED",
                                    "message_template_id": 1234,
                                    "message_template_name": "order_update",
                                    "message_template_language": "en_US",
                                    "reason": "NONE",
                                },
                            }
                        ],
                    }
                ],
            }
        )
    return encode(envelope(messages=[_item(kind, i)]))


def mix_kinds(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    kinds = [k for k, _ in ((k, w) for w, k in _MIX)]
    weights = [w for w, _ in _MIX]
    return rng.choices(kinds, weights=weights, k=n)


def batch_body(kinds: list[str]) -> bytes:
    messages = [_item(k, i) for i, k in enumerate(kinds) if k not in ("status", "template_status")]
    statuses = [
        status_item(f"wamid.OUT{i}", "delivered", sender_for(i))
        for i, k in enumerate(kinds)
        if k in ("status", "template_status")
    ]
    return encode(envelope(messages=messages, statuses=statuses))


def measure(fn: Callable[[], int], repeats: int) -> dict[str, float]:
    """Run ``fn`` (returns events produced) ``repeats`` times; median rates."""
    cpu_rates, wall_rates = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        events = fn()
        w1, c1 = time.perf_counter(), time.process_time()
        cpu_rates.append(events / max(c1 - c0, 1e-9))
        wall_rates.append(events / max(w1 - w0, 1e-9))
    return {
        "events_per_cpu_s": statistics.median(cpu_rates),
        "events_per_wall_s": statistics.median(wall_rates),
        "us_per_event": 1e6 / statistics.median(cpu_rates),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="MessageParser events per second")
    ap.add_argument("--bodies", type=int, default=20_000, help="single-item bodies per round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="~3 s smoke run")
    args = ap.parse_args()
    if args.quick:
        args.bodies, args.repeats = 3000, 3
    t_start = time.monotonic()
    parser = MessageParser()
    text_bodies = [_body("text", i) for i in range(args.bodies)]
    kinds = mix_kinds(args.bodies)
    mix_bodies = [_body(k, i) for i, k in enumerate(kinds)]
    batch_text = batch_body(["text"] * 1000)
    batch_mix = batch_body(mix_kinds(1000, seed=11))
    batch_rounds = max(5, args.bodies // 1000)

    def run_single(bodies: list[bytes]) -> Callable[[], int]:
        def go() -> int:
            parse = parser.parse
            return sum(len(parse(b)) for b in bodies)

        return go

    def run_batch(body: bytes) -> Callable[[], int]:
        def go() -> int:
            return sum(len(parser.parse(body)) for _ in range(batch_rounds))

        return go

    def run_loads() -> int:
        for b in mix_bodies:
            json.loads(b)
        return len(mix_bodies)

    # Sanity: every workload parses into the expected number of events, none unknown
    # except the template status update.
    assert len(parser.parse(batch_text)) == 1000
    assert len(parser.parse(batch_mix)) == 1000

    workloads = {
        "text (1 message per body)": run_single(text_bodies),
        "mix (1 item per body)": run_single(mix_bodies),
        "batch-text (1000 per body)": run_batch(batch_text),
        "batch-mix (1000 per body)": run_batch(batch_mix),
        "json.loads only (mix bodies)": run_loads,
    }
    results: dict[str, dict[str, float]] = {}
    for name, fn in workloads.items():
        fn()  # warm up
        results[name] = measure(fn, args.repeats)
    rows = [
        [
            name,
            f"{r['events_per_cpu_s']:,.0f}",
            f"{r['events_per_wall_s']:,.0f}",
            f"{r['us_per_event']:.1f}",
        ]
        for name, r in results.items()
    ]
    print(table(["workload", "events/CPU-s", "events/wall-s", "µs/event"], rows))
    text_rate = results["text (1 message per body)"]["events_per_cpu_s"]
    result = {
        "benchmark": "parser",
        "machine": machine_info(),
        "settings": {
            "bodies": args.bodies,
            "repeats": args.repeats,
            "mix": {k: w for w, k in _MIX},
        },
        "results": results,
        "targets": {
            "text events/s on one core": {
                "goal": GOAL_TEXT,
                "value": text_rate,
                "met": text_rate >= GOAL_TEXT,
            }
        },
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    print(
        f"\ntext: {text_rate:,.0f} events/CPU-s (goal {GOAL_TEXT:,}); "
        f"elapsed {result['elapsed_s']} s"
    )
    emit(result)


if __name__ == "__main__":
    main()
