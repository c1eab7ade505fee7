"""Sharing the CPU between a daemon's runners.

Every runner starts llama.cpp with all cores, and llama.cpp's worker threads spin at each barrier of
a decode step. Two runners decoding at once on the same cores then wait out a scheduler slice at
every barrier, and together make less than either makes alone. So the runners say, through a small
table in shared memory that the daemon creates and hands to each of them (an inherited file
descriptor), when they are decoding; before each step a runner counts the others that are busy and
uses its share of the cores: `cores // busy` threads (at least one). A runner alone keeps every
core; one whose thread count the user set (NUM_THREADS, `num_thread`) keeps that count.

The table is a row of slots, one per runner (the daemon assigns them), each two doubles of
`time.monotonic()` (system-wide on Linux and macOS): when the current step began (0 between steps)
and when the last one ended. Writes are single aligned 8-byte stores, so no lock is needed.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
from typing import Any

SLOTS = 64
_FIELDS = 2  # step began, last step ended
BUSY_WINDOW = 0.25  # seconds after its last step that a runner still counts as busy
STALE_STEP = 120.0  # a step "running" longer than this is a runner that died mid-step
FD_ENV = "OLLAMALIKE_RUNNER_CPU_BOARD"  # "FD:SLOT", set by the daemon for each runner


class CpuBoard:
    """The daemon's side: the shared table and which runner holds which slot."""

    def __init__(self) -> None:
        size = SLOTS * _FIELDS * 8
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("ollamalike-cpu-board")
            os.ftruncate(self.fd, size)
        else:  # macOS: an unlinked temporary file does the same
            f = tempfile.TemporaryFile()
            f.truncate(size)
            self.fd = os.dup(f.fileno())
            f.close()
        self._map = mmap.mmap(self.fd, size)
        self._table = memoryview(self._map).cast("d")
        self._holders: dict[int, Any] = {}  # slot -> whatever holds it (a RunnerProcess)

    def assign(self, holder: Any, alive=lambda h: True) -> int | None:
        """A free slot for a new runner (None when all are taken); slots of dead holders are reused."""
        for slot in range(SLOTS):
            h = self._holders.get(slot)
            if h is None or not alive(h):
                self.clear(slot)
                self._holders[slot] = holder
                return slot
        return None

    def hold(self, slot: int, holder: Any) -> None:
        self._holders[slot] = holder

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self.clear(slot)
            self._holders.pop(slot, None)

    def clear(self, slot: int) -> None:
        self._table[slot * _FIELDS] = 0.0
        self._table[slot * _FIELDS + 1] = 0.0

    def env(self, slot: int) -> str:
        return f"{self.fd}:{slot}"


class CpuShare:
    """The runner's side: mark its own steps, and pick its thread count before each one."""

    def __init__(self, fd: int, slot: int, cores: int, fixed: bool = False):
        size = SLOTS * _FIELDS * 8
        self._map = mmap.mmap(fd, size)
        self._table = memoryview(self._map).cast("d")
        self.slot = slot
        self.cores = max(1, cores)
        self.fixed = fixed  # the user chose the thread count: mark busy, never change it
        self.threads = self.cores
        self.busy_others = 0
        self.shared_steps = 0  # steps run with fewer threads than cores because others were busy

    @classmethod
    def from_env(cls, cores: int, fixed: bool = False) -> "CpuShare | None":
        """The share the daemon set up for this runner, or None (started by hand, or no table)."""
        raw = os.environ.pop(FD_ENV, "")
        try:
            fd, slot = (int(x) for x in raw.split(":"))
            if not 0 <= slot < SLOTS:
                return None
            return cls(fd, slot, cores, fixed)
        except (ValueError, OSError):
            return None

    def begin(self) -> int:
        """A step starts: mark it, and return the threads it should use."""
        now = time.monotonic()
        t = self._table
        me = self.slot * _FIELDS
        t[me] = now
        values = t.tolist()
        busy = 0
        for i in range(0, SLOTS * _FIELDS, _FIELDS):
            if i == me:
                continue
            began, ended = values[i], values[i + 1]
            if (began and now - began < STALE_STEP) or (ended and now - ended < BUSY_WINDOW):
                busy += 1
        self.busy_others = busy
        if not self.fixed:
            self.threads = max(1, self.cores // (busy + 1))
            if self.threads < self.cores:
                self.shared_steps += 1
        return self.threads

    def end(self) -> None:
        """The step is over."""
        t = self._table
        me = self.slot * _FIELDS
        t[me + 1] = time.monotonic()
        t[me] = 0.0
