"""Slots that follow demand, with a fake unified KV cache: a context shift in a unified cache never
moves cells that another sequence shares, and every sequence's cells stay exactly its tokens."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from ollamalike.runner.engine import Engine, Request


class _Cache:
    """Just enough of runner.llama.LlamaModel for the engine, over a simulated unified KV cache:
    cells of [position, token, {sequences}], checked on every decode against the engine's own view."""

    n_seq_max, n_batch, n_vocab, kv_unified, can_shift, ctx, threads = 4, 64, 10**6, True, True, None, 1

    def __init__(self, n_ctx: int = 4096):
        self.n_ctx = self.seq_ctx = n_ctx
        self.cells: list[list] = []
        self.engine: Engine | None = None
        self.faults: list[str] = []
        self.copies: list[tuple[int, int, int]] = []
        self._next = itertools.count(1000)

    class _Sampler:
        def __init__(self, outer):
            self.outer = outer

        def sample(self, ctx, row):
            return next(self.outer._next)

        def free(self):
            pass

    def sampler(self, opts, grammar=None, history=()):
        return self._Sampler(self)

    def _of(self, seq: int) -> list[list]:
        return sorted((c for c in self.cells if seq in c[2]), key=lambda c: c[0])

    def decode(self, rows):
        active = {s.seq_id: s for s in self.engine.active}
        for tok, pos, seq, _ in rows:
            mine = self._of(seq)
            if [c[0] for c in mine] != list(range(pos)):
                self.faults.append(f"seq {seq} writes position {pos} over cells at {[c[0] for c in mine]}")
            elif seq in active and [c[1] for c in mine] != active[seq].tokens[:pos]:
                self.faults.append(f"seq {seq}'s cells do not hold its tokens before position {pos}")
            self.cells.append([pos, tok, {seq}])
        if len(self.cells) > self.n_ctx:
            self.faults.append("cache overflow")
        time.sleep(0.001)
        return 0

    def seq_rm(self, seq, p0=-1, p1=-1):
        hi = float("inf") if p1 < 0 else p1
        for c in self.cells:
            if seq in c[2] and max(p0, 0) <= c[0] < hi:
                c[2].discard(seq)
        self.cells = [c for c in self.cells if c[2]]

    def seq_cp(self, src, dst, p0=-1, p1=-1):
        hi = float("inf") if p1 < 0 else p1
        for c in self.cells:
            if src in c[2] and max(p0, 0) <= c[0] < hi:
                c[2].add(dst)

    def copy_prefix(self, src, dst, n):
        self.copies.append((src, dst, n))
        self.seq_rm(dst)
        if self.kv_unified:
            self.seq_cp(src, dst, 0, n)
        else:  # a stream per sequence: cells of its own
            self.cells += [[c[0], c[1], {dst}] for c in self._of(src) if c[0] < n]
        return True

    def seq_add(self, seq, p0, p1, delta):
        for c in self.cells:
            if seq in c[2] and p0 <= c[0] < p1:
                if len(c[2]) > 1:
                    self.faults.append(f"seq {seq}'s shift moves a cell shared with {c[2] - {seq}}")
                c[0] += delta

    def is_eog(self, tok):
        return False

    def piece(self, tok, special=False):
        return b"x"


def _engine(n_slots: int = 4) -> tuple[Engine, _Cache]:
    model = _Cache()
    engine = Engine(model, n_slots)
    model.engine = engine
    engine.start()
    return engine, model


def _submit(engine: Engine, tokens: list[int], num_ctx: int = 32, **opts) -> tuple[list[dict], threading.Event]:
    out: list[dict] = []
    done = threading.Event()

    def emit(ev):
        out.append(ev)
        if "done" in ev or "error" in ev:
            done.set()
    engine.submit(Request(tokens=tokens, emit=emit, options={"num_predict": 40, **opts}, num_ctx=num_ctx))
    return out, done


def test_a_shift_in_a_unified_cache_moves_only_its_own_cells():
    engine, model = _engine()
    try:
        out, done = _submit(engine, list(range(1, 21)))
        assert done.wait(10)
    finally:
        engine.close()
    assert out[-1]["eval_count"] == 40 and out[-1]["done_reason"] == "length", out[-1]
    assert engine.stats["context_shifts"] >= 2 and model.faults == []


def test_a_shift_over_a_shared_prefix_prefills_again_instead_of_moving_it():
    engine, model = _engine()
    prompt = list(range(1, 21))
    try:
        first, first_done = _submit(engine, prompt)
        for _ in range(1000):  # until it generates, so that its prompt's cells can be handed over
            if engine.active and not engine.active[0].prefilling:
                break
            time.sleep(0.002)
        # shares 18 cells with the first: past where the first's shift keeps (4 + 13)
        second, second_done = _submit(engine, prompt[:18] + [77, 78], num_predict=20)
        assert first_done.wait(10) and second_done.wait(10)
    finally:
        engine.close()
    assert second[-1]["prompt_cached_count"] == 18, second[-1]
    assert first[-1]["eval_count"] == 40 and second[-1]["eval_count"] == 20
    assert engine.stats["context_shifts"] >= 2 and model.faults == []


async def test_a_loaded_runner_keeps_its_slot_plan_when_free_memory_drops(aiohttp_client, tmp_path, factory):
    """The plan reads free memory, which the runner then takes: the next request must not see a
    different plan and reload the model. A fresh daemon with that little memory plans a unified cache."""
    from ollamalike.server.app import create_app
    from ollamalike.server.offload import Inventory
    from tests.test_api_fake import create

    ram = [8 << 30]
    client = await aiohttp_client(create_app(tmp_path / "models", spawn=factory,
                                             inventory=lambda: Inventory((), ram[0])))
    await create(client, tmp_path)
    for free in (8 << 30, 40 << 20):  # the tiny model's 32 streams of 4,096 cells need 64 MiB
        ram[0] = free
        r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
        assert r.status == 200, await r.text()
    assert len(factory.spawned) == 1
    spec = factory.spawned[0].spec
    assert (spec.parallel, spec.kv_unified, spec.kv_size) == (32, False, 0)
    other = await aiohttp_client(create_app(tmp_path / "models", spawn=factory,
                                            inventory=lambda: Inventory((), 40 << 20)))
    r = await other.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    assert r.status == 200, await r.text()
    spec = factory.spawned[1].spec
    assert spec.kv_unified and spec.parallel == 32 and spec.kv_size == (10 << 20) // 512


def _streams(n_slots: int) -> tuple[Engine, _Cache, list[list[int]]]:
    """An engine (not started) over a fake cache with a KV stream per slot, and the sequence ids of
    every decode call's rows, in row order."""
    model = _Cache()
    model.kv_unified, model.n_seq_max = False, n_slots
    engine = Engine(model, n_slots)
    model.engine = engine
    orders: list[list[int]] = []
    decode = model.decode

    def spy(rows):
        orders.append([seq for _, _, seq, _ in rows])
        return decode(rows)
    model.decode = spy
    return engine, model, orders


def test_streams_batch_in_slot_order_next_to_the_running_ones():
    """llama.cpp puts only consecutive sequence ids of a per-slot cache in one pass: the engine hands
    rows over in slot order, and a new sequence that finds no real part of its prompt cached starts
    next to the running ones, in the slot there whose loss costs least (a prompt sharing a token with an
    ended sequence's cached prefix leaves that prefix alone); a prompt continuing a cached
    conversation goes back to its slot; with nothing running, an empty slot is taken first."""
    engine, model, orders = _streams(8)
    engine.start()

    def seqs(since: int) -> set[int]:
        return {seq for o in orders[since:] for seq in o}
    try:
        a, b, c = (_submit(engine, [i + 1, 50 + i], num_predict=n) for i, n in enumerate((3, 40, 45)))
        assert a[1].wait(10) and seqs(0) == {0, 1, 2}
        mark = len(orders)
        d = _submit(engine, [1, *range(70, 82)], num_predict=5)  # one token of 13 shared with a's prefix in slot 0
        assert d[1].wait(10) and 3 in seqs(mark) and 0 not in seqs(mark)
        assert b[1].wait(10) and c[1].wait(10)
        held = list(engine.slots[0].cached)
        assert held[:2] == [1, 50]
        mark = len(orders)
        e = _submit(engine, held + [90], num_predict=3)  # a's conversation goes on
        assert e[1].wait(10) and seqs(mark) == {0}
        assert e[0][-1]["prompt_cached_count"] == len(held)
        mark = len(orders)
        f = _submit(engine, [80, 81], num_predict=3)  # none of it cached, nothing running: an empty slot, not 0-3
        assert f[1].wait(10) and seqs(mark) == {4}
    finally:
        engine.close()
    assert all("error" not in run[0][-1] for run in (a, b, c, d, e, f))
    together = [o for o in orders if len(o) == len(set(o)) > 1]  # generation steps: one row per sequence
    assert any(o == [1, 2, 3] for o in together)  # d generated beside b and c, rows in slot order
    assert all(o == sorted(o) for o in together), [o for o in together if o != sorted(o)][:3]


def test_a_short_prompt_is_prefilled_before_a_long_one_that_came_first():
    """Prompts whose rest fits in a small chunk go first: in a burst of arrivals (most of them
    finding their prefix cached), the short ones get their first token at once, not after a long one."""
    engine, model, orders = _streams(4)
    finished: list[str] = []
    both = threading.Event()

    def submit(name: str, tokens: list[int]) -> None:
        def emit(ev):
            if "done" in ev or "error" in ev:
                finished.append(name if "done" in ev else ev["error"])
                if len(finished) == 2:
                    both.set()
        engine.submit(Request(tokens=tokens, emit=emit, options={"num_predict": 1}, num_ctx=256))
    submit("long", list(range(1, 201)))
    submit("short", [7, 8, 9])
    engine.start()  # both are waiting at the first step
    try:
        assert both.wait(10)
    finally:
        engine.close()
    assert finished == ["short", "long"]
    assert sorted(set(orders[0])) == [0, 1]  # one step: the short prompt whole, the long one's first chunk beside it


@pytest.mark.parametrize("length, extra", [(8, 1), (20, 1), (20, 30)])
def test_a_cached_prefix_apart_from_the_running_ones_is_copied_next_to_them(length, extra):
    """A short conversation cached in a slot far from the running sequences goes on next to them,
    its cells copied there (a sequence apart would cost a pass of its own every step); the copy
    leaves the cached original where it was. A longer one goes back to its own slot (no copy, no
    prefill), whether its next message is short or long."""
    engine, model, orders = _streams(8)
    engine.start()
    try:
        first = _submit(engine, list(range(1, length + 1)), num_predict=2)
        assert first[1].wait(10)
        held = list(engine.slots[0].cached)
        other = _submit(engine, [300, 301], num_predict=2)  # nothing running: the next empty slot
        assert other[1].wait(10) and engine.slots[1].cached[:2] == [300, 301]
        _submit(engine, [200, 201, 202], num_predict=400)  # nothing running: slot 2, still running below
        while not engine.active or engine.active[0].prefilling:
            time.sleep(0.001)
        mark = len(orders)
        again = _submit(engine, held + list(range(30, 30 + extra)), num_ctx=256, num_predict=3)  # its conversation
        assert again[1].wait(10)
        assert again[0][-1]["prompt_cached_count"] == len(held)
        if length < 16:
            assert model.copies == [(0, 3, len(held))]  # next to slot 2, into the empty slot 3
            assert {3} <= set().union(*orders[mark:]) and 0 not in set().union(*orders[mark:])
            assert engine.slots[0].cached == held
        else:
            assert model.copies == [] and 0 in set().union(*orders[mark:])
    finally:
        engine.close()
    assert model.faults == [] and "error" not in again[0][-1]


def test_a_burst_of_chat_turns_goes_home_and_admission_compares_each_prompt_with_each_slot_a_few_times(monkeypatch):
    """A burst of conversations going on, each cached in its own slot, with a new prompt among them
    and a sequence running: every conversation goes back to its slot (a new prompt placed before it
    does not take it for being next to the running one), the new prompt takes an empty slot. And the
    round compares each waiting prompt with each slot a bounded number of times, not once per
    placement (with 32 long conversations that was ~0.1 s before the burst's first token)."""
    import ollamalike.runner.engine as engine_mod
    n = 32
    engine, model, orders = _streams(n)
    turns = n - 4
    convs = {i: [1000 * i + k for k in range(40)] for i in range(1, turns + 1)}  # slots 1..12
    for i, conv in convs.items():
        engine.slots[i].cached = list(conv)
        model.cells += [[p, t, {i}] for p, t in enumerate(conv)]
    calls = [0]
    real = engine_mod.common_prefix

    def counting(a, b):
        calls[0] += 1
        return real(a, b)
    monkeypatch.setattr(engine_mod, "common_prefix", counting)
    runs = {"running": _submit(engine, [500, 501], num_ctx=256, num_predict=30)}
    for i, conv in convs.items():
        runs[i] = _submit(engine, conv + [7, 8], num_ctx=256, num_predict=2)
        if i == 2:
            runs["new"] = _submit(engine, [600, 601, 602], num_ctx=256, num_predict=2)
    admitted = threading.Event()
    admit = engine._admit

    def admit_once():
        admit()
        admitted.set()
    engine._admit = admit_once
    engine.start()  # all of them are waiting at the first admission
    try:
        assert admitted.wait(10)
        in_round = calls[0]
        assert all(done.wait(10) for _, done in runs.values())
    finally:
        engine.close()
    assert model.faults == []
    for i in convs:
        assert runs[i][0][-1]["prompt_cached_count"] == 40, (i, runs[i][0][-1])
    assert runs["new"][0][-1]["prompt_cached_count"] == 0
    assert in_round <= 4 * len(runs) * n, in_round  # comparing at every placement: ~3 times this


def test_the_engine_pauses_after_a_first_token_only_while_others_still_run(monkeypatch):
    """After a step that gave a sequence its first token, the engine waits `first_token_pause`
    before its next decode (the token reaches its client on free cores); not when nothing runs on
    (it idles anyway), not with more than two sequences running (the wait would cost them all), and
    not after later tokens."""
    import types

    import ollamalike.runner.engine as engine_mod
    slept: list[float] = []
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.sleep = slept.append
    monkeypatch.setattr(engine_mod, "time", clock)
    engine, model, orders = _streams(4)
    engine.first_token_pause = 0.25
    engine.start()
    try:
        a = _submit(engine, [1, 2, 3], num_predict=6)
        assert a[1].wait(10)
        assert slept == [0.25]  # after a's first token, a still running; none after its 5 others
        b = _submit(engine, [4, 5], num_predict=1)
        assert b[1].wait(10)
        assert slept == [0.25]  # b's first token was its last: nothing ran on
        with engine._cv:  # admitted in one round: three first tokens in one step, three running
            three = [_submit(engine, [6 + i, 7], num_predict=4) for i in range(3)]
        assert all(done.wait(10) for _, done in three)
        assert slept == [0.25]
    finally:
        engine.close()
    assert all("error" not in run[0][-1] for run in (a, b, *three))


@pytest.mark.parametrize("unified", [False, True])
def test_a_prompt_sharing_a_first_token_takes_an_empty_slot_not_a_cached_conversation(unified):
    """A prompt whose first token (a chat template's opening, a first word) is all it shares with a
    cached conversation is over a tenth of a short prompt, but taking that slot would drop the
    conversation for one token: it goes to an empty slot, and the conversation goes on from its own;
    with a KV stream per slot and in a unified cache (which used to take the most recently used slot)."""
    engine, model, orders = _streams(8)
    if unified:
        model.kv_unified = engine.unified = True
    engine.start()
    try:
        a = _submit(engine, [1, *range(50, 60)], num_predict=3)
        assert a[1].wait(10)
        conversation = list(engine.slots[0].cached)
        assert len(conversation) == 13
        b = _submit(engine, [1, *range(70, 76)], num_predict=3)
        assert b[1].wait(10)
        assert engine.slots[0].cached == conversation and engine.slots[1].cached[:7] == [1, *range(70, 76)]
        mark = len(orders)
        again = _submit(engine, conversation + [90, 91], num_predict=2)
        assert again[1].wait(10)
        assert again[0][-1]["prompt_cached_count"] == len(conversation)
        assert set().union(*orders[mark:]) == {0}
    finally:
        engine.close()
    assert model.faults == [] and all("error" not in r[0][-1] for r in (a, b, again))
