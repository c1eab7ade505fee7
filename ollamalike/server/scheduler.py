"""Which runners live: load on demand, share, expire after keep_alive, evict, bound the queue.

One runner per loaded model. Requests for a loaded model share its runner up to its parallel slots;
loads happen one at a time; at most `max_loaded` models live at once (idle ones with the shortest
keep_alive are evicted first); at most `max_queue` requests wait, the rest get 503.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ollamalike.errors import ServiceUnavailable
from ollamalike.runner.process import RunnerSpec

log = logging.getLogger(__name__)

Spawn = Callable[[RunnerSpec], Awaitable[Any]]
# Before a load: the spec to start (the offload decided) and the info /api/ps shows (size, size_vram).
Planner = Callable[[RunnerSpec, dict[str, Any]], Awaitable[tuple[RunnerSpec, dict[str, Any]]]]
BUSY = "server busy, please try again.  maximum pending requests exceeded"


class Slots:
    """A runner's parallel slots: a semaphore whose waiters get a freed slot by priority (lower
    first, as vLLM's `priority`), first come first served among equals."""

    def __init__(self, n: int):
        self.free = n
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._waiters if not f.done())

    async def acquire(self, priority: int = 0) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot just as the waiter gave up: pass it on
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            *_, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the most urgent waiter
                return
        self.free += 1


@dataclass(eq=False)
class Loaded:
    """A live runner and its bookkeeping, as /api/ps shows it."""

    spec: RunnerSpec
    runner: Any
    info: dict[str, Any]
    session: float  # keep_alive seconds (inf = forever)
    slots: Slots
    refs: int = 0
    expires_at: float = 0.0  # wall clock; while busy, now + session
    timer: asyncio.TimerHandle | None = None
    stopping: bool = False
    loaded_at: float = field(default_factory=time.time)

    def idle(self) -> bool:
        return self.refs == 0


@dataclass(eq=False)
class Lease:
    entry: Loaded
    load_duration: float  # seconds spent waiting for the runner (queue + load)

    @property
    def runner(self) -> Any:
        return self.entry.runner


class Scheduler:
    def __init__(self, spawn: Spawn, *, max_loaded: int = 3, max_queue: int = 512,
                 keep_alive: float = 300.0, planner: Planner | None = None):
        self.spawn = spawn
        self.planner = planner
        self.max_loaded = max(1, max_loaded)
        self.max_queue = max(1, max_queue)
        self.default_keep_alive = keep_alive
        self.entries: dict[str, Loaded] = {}  # model path -> runner
        self.pending = 0
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Condition()

    # --- acquire / release ----------------------------------------------------------------
    async def acquire(self, spec: RunnerSpec, info: dict[str, Any], keep_alive: float | None,
                      priority: int = 0) -> Lease:
        """A slot on the model's runner (loaded if need be); while all are busy, waiters are served
        by `priority`, lower first."""
        if self.pending >= self.max_queue:
            raise ServiceUnavailable(BUSY)
        self.pending += 1
        t0 = time.perf_counter()
        entry = None
        try:
            while True:
                entry = await self._get(spec, info, keep_alive)
                await entry.slots.acquire(priority)
                if not entry.stopping and entry.runner.alive:
                    break
                # it crashed or was unloaded while we waited for a slot: start over on a fresh one
                entry.slots.release()
                await self._unref(entry, None)
                entry = None
        except BaseException:
            if entry is not None:
                await self._unref(entry, None)
            raise
        finally:
            self.pending -= 1
        return Lease(entry, time.perf_counter() - t0)

    async def release(self, lease: Lease, keep_alive: float | None) -> None:
        lease.entry.slots.release()
        await self._unref(lease.entry, keep_alive)

    async def _get(self, spec: RunnerSpec, info: dict[str, Any], keep_alive: float | None) -> Loaded:
        while True:
            entry = self.entries.get(spec.model_path)
            if entry and not entry.stopping and entry.spec == spec and entry.runner.alive:
                self._ref(entry, keep_alive)
                return entry
            async with self._load_lock:
                entry = self.entries.get(spec.model_path)
                if entry and not entry.stopping and entry.spec == spec and entry.runner.alive:
                    continue
                if entry is not None:  # other load options, or dead: reload once it is idle
                    if entry.idle() or not entry.runner.alive:
                        await self._unload(entry)
                    else:
                        entry.session = 0
                        await self._wait_change()
                        continue
                if len(self.entries) >= self.max_loaded:
                    victim = self._victim()
                    if victim is None:
                        await self._wait_change()
                        continue
                    await self._unload(victim)
                    continue
                # The entry keeps the requested spec (num_gpu -1 = auto), so that a later request
                # does not reload because free GPU memory changed once this model took its share.
                start = spec
                if self.planner is not None:
                    start, info = await self.planner(spec, info)
                runner = await self.spawn(start)
                session = self.default_keep_alive if keep_alive is None else keep_alive
                entry = Loaded(spec=spec, runner=runner, info=info, session=session,
                               slots=Slots(spec.parallel))
                self.entries[spec.model_path] = entry
                self._ref(entry, keep_alive)
                return entry

    async def _wait_change(self) -> None:
        """Wait (with the load lock released) until some runner is released or unloaded."""
        self._load_lock.release()
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        finally:
            await self._load_lock.acquire()

    def _victim(self) -> Loaded | None:
        """The idle runner with the shortest keep_alive; if all are busy, mark the shortest-lived
        one to unload as soon as it is idle and return None."""
        idle = [e for e in self.entries.values() if e.idle()]
        if idle:
            return min(idle, key=lambda e: (e.session, e.spec.model_path))
        min(self.entries.values(), key=lambda e: e.session).session = 0
        return None

    def _ref(self, entry: Loaded, keep_alive: float | None) -> None:
        entry.refs += 1
        if keep_alive is not None:
            entry.session = keep_alive
        if entry.timer:
            entry.timer.cancel()
            entry.timer = None
        entry.expires_at = _deadline(entry.session)

    async def _unref(self, entry: Loaded, keep_alive: float | None) -> None:
        entry.refs -= 1
        if keep_alive is not None:
            entry.session = keep_alive
        entry.expires_at = _deadline(entry.session)
        if entry.refs == 0:
            if entry.session <= 0 or not entry.runner.alive:
                await self._unload(entry)
            elif not math.isinf(entry.session):
                loop = asyncio.get_running_loop()
                entry.timer = loop.call_later(entry.session, self._expire, entry)
        await self._notify()

    def _expire(self, entry: Loaded) -> None:
        entry.timer = None
        if entry.idle() and self.entries.get(entry.spec.model_path) is entry:
            asyncio.ensure_future(self._unload(entry))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- unloading ------------------------------------------------------------------------
    async def _unload(self, entry: Loaded) -> None:
        if self.entries.get(entry.spec.model_path) is entry:
            del self.entries[entry.spec.model_path]
        entry.stopping = True
        if entry.timer:
            entry.timer.cancel()
            entry.timer = None
        log.info("unloading model %s", entry.info.get("name", entry.spec.model_path))
        await entry.runner.close()
        await self._notify()

    async def forget(self, entry: Loaded) -> None:
        """Drop a runner that crashed; the next request starts a new one."""
        if not entry.runner.alive and self.entries.get(entry.spec.model_path) is entry:
            await self._unload(entry)

    async def unload_model(self, model_path: str) -> bool:
        """Unload now if idle, else as soon as its last request ends. False if not loaded."""
        entry = self.entries.get(model_path)
        if entry is None:
            return False
        entry.session = 0
        if entry.idle():
            await self._unload(entry)
        return True

    def running(self) -> list[Loaded]:
        return sorted(self.entries.values(), key=lambda e: -e.expires_at)

    async def shutdown(self) -> None:
        for entry in list(self.entries.values()):
            await self._unload(entry)


def _deadline(session: float) -> float:
    return math.inf if math.isinf(session) else time.time() + session
