"""AckGate: reply steps give way to webhook acks, one per event-loop iteration, never starved."""

from __future__ import annotations

import asyncio
import itertools

from wa_agent._ackgate import AckGate


async def test_no_webhook_traffic_lets_steps_through_at_once() -> None:
    """Without a recent webhook a step does not queue (within the iteration's budget)."""
    gate = AckGate(quiet=0.05, budget=10.0)
    for _ in range(5):
        await gate.turn()
    assert gate.released == 0
    assert not gate.busy()


async def test_steps_queue_behind_webhooks_and_pass_one_per_iteration() -> None:
    """After a webhook, queued steps are let through one per loop iteration, in order."""
    gate = AckGate(quiet=60.0)  # webhook traffic for the whole test
    gate.webhook()
    assert gate.busy()
    order: list[int] = []

    async def step(n: int) -> None:
        await gate.turn()
        order.append(n)

    tasks = [asyncio.create_task(step(n)) for n in range(4)]
    await asyncio.sleep(0)  # the tasks reach the gate
    seen = []
    for _ in range(12):
        await asyncio.sleep(0)
        seen.append(len(order))
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    # never more than one step released between two of this task's iterations
    assert all(b - a <= 1 for a, b in itertools.pairwise(seen))
    assert gate.released == 4
    assert gate.waiting == 0


async def test_budget_bounds_steps_started_in_one_iteration() -> None:
    """With no webhook, steps keep starting in one iteration only until the budget is spent;
    the rest queue and still all run."""
    gate = AckGate(quiet=0.0, budget=0.0)
    await gate.turn()  # opens the iteration's budget (already spent: budget 0)
    done = []

    async def step(n: int) -> None:
        await gate.turn()
        done.append(n)

    await asyncio.gather(*(step(n) for n in range(3)))
    assert sorted(done) == [0, 1, 2]
    assert gate.released >= 1


async def test_a_cancelled_waiter_does_not_block_the_others() -> None:
    """Cancelling a queued step leaves the queue moving for the steps behind it."""
    gate = AckGate(quiet=60.0)
    gate.webhook()
    first = asyncio.create_task(gate.turn())
    second = asyncio.create_task(gate.turn())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 1.0)
    assert first.cancelled()


async def _release_times(gate: AckGate, steps: int, *, flood: bool) -> list[float]:
    """Queue ``steps`` reply steps behind webhook traffic and note when each one passes;
    with ``flood``, 50 webhooks arrive every loop iteration meanwhile."""
    import time

    times: list[float] = []
    gate.webhook()

    async def step() -> None:
        await gate.turn()
        times.append(time.monotonic())

    tasks = [asyncio.create_task(step()) for _ in range(steps)]
    while len(times) < steps:
        if flood:
            for _ in range(50):
                gate.webhook()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return times


async def test_a_burst_of_webhooks_spaces_reply_steps_out() -> None:
    """While webhooks arrive at ``burst_rate`` or faster, queued steps pass one per
    ``burst_interval`` instead of one per iteration; without the flood they pass at once."""
    gate = AckGate(quiet=60.0, burst_rate=1000.0, burst_interval=0.02, window=0.001)
    times = await _release_times(gate, 4, flood=True)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.019
    calm = await _release_times(AckGate(quiet=60.0, burst_interval=0.02), 4, flood=False)
    assert calm[-1] - calm[0] < 0.02


async def test_webhooks_waiting_on_the_store_also_count_as_a_burst() -> None:
    """``acks_waiting`` at ``burst_acks`` or above (acks waiting for a commit) spaces the
    steps out just like a high arrival rate."""
    gate = AckGate(quiet=60.0, burst_interval=0.02, burst_acks=4)
    gate.acks_waiting = 4
    times = await _release_times(gate, 3, flood=False)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.019
    gate.acks_waiting = 3
    times = await _release_times(gate, 3, flood=False)
    assert times[-1] - times[0] < 0.02


def test_invalid_settings_are_refused() -> None:
    """Nonsense settings raise ValueError instead of a gate that never releases."""
    import pytest

    for bad in (
        {"burst_rate": 0},
        {"window": 0},
        {"burst_acks": 0},
        {"burst_interval": -1},
        {"per_turn": 0},
    ):
        with pytest.raises(ValueError):
            AckGate(**bad)  # type: ignore[arg-type]
