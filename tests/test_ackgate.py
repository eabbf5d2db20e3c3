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
