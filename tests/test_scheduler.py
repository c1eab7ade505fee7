"""The scheduler with a fake runner factory: sharing, expiry, reloads, eviction, the queue bound."""

from __future__ import annotations

import asyncio
import math

import pytest

from ollamalike.errors import ServiceUnavailable
from ollamalike.runner.process import RunnerSpec
from ollamalike.server.scheduler import Scheduler
from tests.fakes import FakeFactory


def spec(path="a", ctx=2048, parallel=2):
    return RunnerSpec(model_path=path, num_ctx=ctx, parallel=parallel)


def info(name):
    return {"name": name}


async def test_requests_share_a_runner_and_keep_alive_expires():
    f = FakeFactory()
    s = Scheduler(f, keep_alive=0.1)
    a = await s.acquire(spec(), info("a"), None)
    b = await s.acquire(spec(), info("a"), None)
    assert a.entry is b.entry and len(f.spawned) == 1
    await s.release(a, None)
    await s.release(b, None)
    assert s.entries and not f.spawned[0].closed
    await asyncio.sleep(0.3)
    assert not s.entries and f.spawned[0].closed


async def test_keep_alive_zero_and_forever():
    f = FakeFactory()
    s = Scheduler(f, keep_alive=300)
    lease = await s.acquire(spec(), info("a"), math.inf)
    await s.release(lease, None)
    assert s.entries["a"].session == math.inf and s.entries["a"].timer is None
    lease = await s.acquire(spec(), info("a"), None)
    await s.release(lease, 0)
    assert not s.entries and f.spawned[0].closed


async def test_other_load_options_reload_once_idle():
    f = FakeFactory()
    s = Scheduler(f)
    first = await s.acquire(spec(ctx=2048), info("a"), None)
    waiter = asyncio.create_task(s.acquire(spec(ctx=4096), info("a"), None))
    await asyncio.sleep(0.05)
    assert not waiter.done() and len(f.spawned) == 1
    await s.release(first, None)
    second = await asyncio.wait_for(waiter, 5)
    assert f.spawned[0].closed and second.entry.spec.num_ctx == 4096
    await s.release(second, None)


async def test_eviction_waits_for_a_busy_runner():
    f = FakeFactory()
    s = Scheduler(f, max_loaded=1)
    a = await s.acquire(spec("a"), info("a"), None)
    task = asyncio.create_task(s.acquire(spec("b"), info("b"), None))
    await asyncio.sleep(0.05)
    assert not task.done()
    await s.release(a, None)
    b = await asyncio.wait_for(task, 5)
    assert list(s.entries) == ["b"] and f.spawned[0].closed
    await s.release(b, None)


async def test_idle_runner_with_shortest_keep_alive_is_evicted():
    f = FakeFactory()
    s = Scheduler(f, max_loaded=2)
    for path, ka in (("a", 600.0), ("b", 60.0)):
        await s.release(await s.acquire(spec(path), info(path), ka), None)
    await s.release(await s.acquire(spec("c"), info("c"), None), None)
    assert sorted(s.entries) == ["a", "c"]


async def test_queue_bound_and_slots():
    f = FakeFactory()
    s = Scheduler(f, max_queue=2)
    held = [await s.acquire(spec(parallel=1), info("a"), None)]
    waiting = [asyncio.create_task(s.acquire(spec(parallel=1), info("a"), None)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceUnavailable, match="maximum pending requests exceeded"):
        await s.acquire(spec(parallel=1), info("a"), None)
    await s.release(held[0], None)
    first = await asyncio.wait_for(waiting[0], 5)
    await s.release(first, None)
    await s.release(await asyncio.wait_for(waiting[1], 5), None)
    assert s.pending == 0


async def test_dead_runner_is_replaced_and_shutdown_closes_all():
    f = FakeFactory()
    s = Scheduler(f)
    lease = await s.acquire(spec(), info("a"), None)
    f.spawned[0].alive = False
    await s.forget(lease.entry)
    await s.release(lease, None)
    lease = await s.acquire(spec(), info("a"), None)
    assert len(f.spawned) == 2
    await s.release(lease, None)
    await s.shutdown()
    assert not s.entries and all(r.closed for r in f.spawned)


async def test_failed_load_leaves_nothing_behind():
    f = FakeFactory()
    f.fail_load = "boom"
    s = Scheduler(f)
    with pytest.raises(Exception, match="boom"):
        await s.acquire(spec(), info("a"), None)
    assert not s.entries and s.pending == 0


# --- priority -----------------------------------------------------------------------------------
async def test_a_freed_slot_goes_to_the_most_urgent_waiter_then_first_come():
    s = Scheduler(FakeFactory())
    held = await s.acquire(spec(parallel=1), info("a"), None)
    order: list[str] = []

    async def wait(name: str, priority: int):
        lease = await s.acquire(spec(parallel=1), info("a"), None, priority)
        order.append(name)
        await asyncio.sleep(0.01)
        await s.release(lease, None)
    tasks = []
    for name, prio in (("b", 0), ("c", 0), ("late", 5), ("d", 0), ("urgent", -3), ("e", -3)):
        tasks.append(asyncio.create_task(wait(name, prio)))
        await asyncio.sleep(0.01)  # queued in this order
    await s.release(held, None)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["urgent", "e", "b", "c", "d", "late"]  # lower first, ties in arrival order
    assert s.pending == 0 and s.entries["a"].slots.free == 1


async def test_a_cancelled_waiter_gives_its_turn_away():
    s = Scheduler(FakeFactory())
    held = await s.acquire(spec(parallel=1), info("a"), None)
    gone = asyncio.create_task(s.acquire(spec(parallel=1), info("a"), None, -10))
    nxt = asyncio.create_task(s.acquire(spec(parallel=1), info("a"), None, 0))
    await asyncio.sleep(0.02)
    gone.cancel()
    await s.release(held, None)
    lease = await asyncio.wait_for(nxt, 5)
    await s.release(lease, None)
    assert s.entries["a"].slots.free == 1 and s.entries["a"].slots.waiting == 0
