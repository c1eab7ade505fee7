"""Continuous batching over one llama.cpp context, on one engine thread.

Each step builds ONE batch: the next token of every generating sequence, then chunks of pending prompt
prefill up to `n_batch`. New requests join at the next step; finished or cancelled ones leave at once
and free their KV cells. Results reach the caller through `Request.emit`, called on the engine thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from ollamalike.runner.imagerows import not_mid_image as _not_mid_image, split_image_token
from ollamalike.runner.sequence import EmbedJob, Request, StopMatcher, _most, _Seq, _Slot, common_prefix
from ollamalike.runner.speculative import DraftModel, DraftSeq, PromptLookup, StepCost

log = logging.getLogger(__name__)

__all__ = ["EmbedJob", "Engine", "Request", "StopMatcher"]

# Prompt tokens per step while other sequences are generating: bounds their inter-token latency.
PREFILL_CHUNK = 128
# Copying a cached token's KV cells to another stream costs about this many times less than
# prefilling it (CPU, SmolLM2: ~0.02 ms a cell copied, ~1 ms a token prefilled in a batch).
COPY_PER_PREFILL = 32
# A prompt whose rest to prefill is at most this many tokens goes before longer ones.
SHORT_REST = 16
# Seconds the engine waits after a step that gave some sequence its first token, before the next
# decode, while at most FIRST_TOKEN_PAUSE_UPTO sequences run: that token then travels runner ->
# daemon -> client (three processes, each to be woken) on free cores, not behind llama.cpp's threads
# busy with the next step. CPU, SmolLM2, taking turns with the engine without it: first-token time p50
# 23 -> 18 ms at one client, 34 -> 30 at two, tok/s unchanged (bench/results/ab-cpu-2core-first-token-
# pause-low.md); in a probe (not a bench run) 0.3 ms of waiting got most of it, a bare yield a
# third. With more sequences running, the wait costs them all and their first tokens wait mostly on
# prefill anyway (waiting at every client count measured worse at 4-32).
FIRST_TOKEN_PAUSE = 0.001
FIRST_TOKEN_PAUSE_UPTO = 2


def _home(common: int, length: int, held: int) -> bool:
    """Whether a slot whose `held` tokens start with `common` of a `length`-token prompt is the
    prompt's home, worth running apart from the others rather than copied or prefilled again: it
    holds more than a short rest of the prompt, and all of it but a short rest (a long system prompt
    with the same question) or all but a short rest of its own cells (the prompt's conversation
    going on with its next message)."""
    return common > SHORT_REST and common >= min(length, held) - SHORT_REST


def _in_slot_order(rows: list[tuple[int, int, int, bool]], owners: list[tuple[_Seq, int, bool]]
                   ) -> tuple[list[tuple[int, int, int, bool]], list[tuple[_Seq, int, bool]]]:
    """The rows ordered by sequence id, then position, with the owners' logits rows renumbered to
    match. With a KV stream per slot, llama.cpp splits a batch into passes of sequences with
    consecutive ids, scanning rows in their order: rows in id order make the fewest passes."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i][2], rows[i][1]))
    where = {old: new for new, old in enumerate(order)}
    return [rows[i] for i in order], [(s, where[r], g) for s, r, g in owners]


class Engine:
    def __init__(self, model: Any, n_parallel: int, draft: DraftModel | None = None):
        self.model = model
        self.draft = draft  # the draft model (Modelfile DRAFT), used by requests with draft_num_predict > 0
        self.n_parallel = max(1, min(n_parallel, model.n_seq_max))
        self.unified = bool(getattr(model, "kv_unified", False))
        self._room_freed = False
        # When set, events are handed over once per step as one list (one wake-up of the caller's
        # event loop per step, not per token); otherwise each goes to its Request.emit at once.
        self.deliver: Callable[[list[tuple[Request, dict[str, Any]]]], None] | None = None
        self._outbox: list[tuple[Request, dict[str, Any]]] = []
        self.waiting: deque[Request] = deque()
        self.preempted: deque[_Seq] = deque()
        self.embed_jobs: deque[EmbedJob] = deque()
        self.active: list[_Seq] = []
        self.slots = [_Slot(i) for i in range(self.n_parallel)]
        for slot in self.slots:  # its slots start empty, so must their cells (a model used before
            model.seq_rm(slot.seq_id)  # would keep cells nobody knows of, filling a unified cache)
        # Comparisons kept for one admission round (while a round places requests, slots only get
        # taken: what the others hold does not change). id(waiting request) -> the free slots holding
        # some of it, ranked, the best last (`_homes`); and (free slot, other slot) -> how many tokens
        # both hold from the start. A slot taken drops out of both.
        self._ranked: dict[int, list[tuple[int, int, _Slot]]] = {}
        self._pairs: dict[int, dict[int, int]] = {}
        self.prefill_chunk = PREFILL_CHUNK
        self.step_cost = StepCost()  # decode seconds by row count, for prompt lookup to draft where it pays
        self.first_token_pause = FIRST_TOKEN_PAUSE
        self._first_out = False  # this step gave a sequence its first token
        self.image_non_causal = False  # the projector's images attend both ways (gemma3)
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self.stats = {"prompt_tokens": 0, "decoded_tokens": 0, "reused_tokens": 0, "steps": 0,
                      "step_seconds": 0.0, "requests": 0, "embeddings": 0, "ranked": 0,
                      "preemptions": 0, "context_shifts": 0, "draft_tokens": 0, "draft_accepted": 0,
                      "image_tokens": 0, "image_tokens_reused": 0}

    def start(self) -> None:
        self._thread.start()

    def _emit(self, req: Request, ev: dict[str, Any]) -> None:
        if self.deliver is None:
            req.emit(ev)
        else:
            self._outbox.append((req, ev))

    def _flush(self) -> None:
        if self._outbox:
            items, self._outbox = self._outbox, []
            self.deliver(items)

    def submit(self, req: Request) -> None:
        with self._cv:
            self.waiting.append(req)
            self._cv.notify()

    def submit_embed(self, job: EmbedJob) -> None:
        with self._cv:
            self.embed_jobs.append(job)
            self._cv.notify()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)

    @property
    def running(self) -> int:
        return len(self.active)

    @property
    def kv_cells_used(self) -> int:
        return sum(len(sl.cached) for sl in self.slots if not sl.busy) + sum(s.n_past for s in self.active)

    # --- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while (not self._stop and not self.waiting and not self.active and not self.embed_jobs
                       and not self.preempted):
                    self._cv.wait()
                if self._stop:
                    break
                self._admit()
                job = self.embed_jobs.popleft() if self.embed_jobs else None
            if job is not None:
                self._embed(job)
            try:
                self._step()
            except Exception as exc:  # a failed step fails its sequences, never the runner
                log.exception("engine step failed")
                for s in list(self.active):
                    self._finish(s, "error", error=str(exc))
            self._flush()
            if self._first_out:
                self._first_out = False
                if 0 < len(self.active) <= FIRST_TOKEN_PAUSE_UPTO and self.first_token_pause > 0:
                    time.sleep(self.first_token_pause)
        for s in list(self.active):
            self._finish(s, "error", error="runner shutting down")
        self._flush()

    def _embed(self, job: EmbedJob) -> None:
        if job.cancelled:
            return
        try:
            vectors = self.model.rank(job.inputs) if job.rank else self.model.embed(job.inputs)
        except Exception as exc:
            job.done(None, str(exc))
            return
        self.stats["ranked" if job.rank else "embeddings"] += len(job.inputs)
        self.stats["prompt_tokens"] += sum(len(x) for x in job.inputs)
        job.done(vectors, None)

    def _admit(self) -> None:
        self._ranked, self._pairs = {}, {}
        # requeued sequences come back once a sequence has ended (or nothing else runs), not at once
        while self.preempted and (self._room_freed or not self.active) and any(not sl.busy for sl in self.slots):
            s = self.preempted.popleft()
            if s.req.cancelled:
                s.sampler.free()
                continue
            self._resume(s)
        self._room_freed = False
        if self.preempted:
            return  # requeued sequences go first
        while self.waiting and any(not sl.busy for sl in self.slots):
            i = min(range(len(self.waiting)), key=lambda k: self.waiting[k].priority)  # first of the most urgent
            req = self.waiting[i]
            del self.waiting[i]
            if req.cancelled:
                continue
            try:
                self.active.append(self._start(req))
            except Exception as exc:
                self._emit(req, {"error": str(exc)})

    def _place(self, tokens: list[int]) -> tuple[_Slot, int]:
        """Pick a free slot for `tokens` and make its cells hold their longest cached prefix.
        Returns the slot and how many prompt tokens are already in it."""
        slot, have = self._place_in_streams(tokens) if not self.unified else self._place_unified(tokens)
        self._pairs.pop(slot.seq_id, None)
        for known in self._pairs.values():
            known.pop(slot.seq_id, None)
        return slot, have

    def _place_unified(self, tokens: list[int]) -> tuple[_Slot, int]:
        free = [sl for sl in self.slots if not sl.busy]
        held = [self._held(sl) for sl in self.slots]
        against = [common_prefix(h, tokens) for h in held]  # a free slot holds its `cached`
        own = {sl.seq_id: against[sl.seq_id] for sl in free}
        # the slot holding the most of the prompt that would lose nothing only it holds (a conversation
        # going on), else an empty one, else the one holding the most, the least recently used first;
        # the prefix then comes from whichever slot holds most of it
        ranked = sorted(free, key=lambda sl: (-own[sl.seq_id], sl.last_used))
        best_free = next((sl for sl in ranked if own[sl.seq_id] and not self._loss(sl, own[sl.seq_id], held)),
                         None) or next((sl for sl in ranked if not sl.cached), ranked[0])
        gain, donor = self._donor(best_free, against)
        if donor is not None and gain > own[best_free.seq_id]:
            # one cache: the new sequence shares the donor's cells for the prefix, no copy at all
            self.model.copy_prefix(donor.seq_id, best_free.seq_id, gain)
            best_free.shared, donor.shared = gain, max(donor.shared, gain)
            return best_free, gain
        return best_free, own[best_free.seq_id]

    def _place_in_streams(self, tokens: list[int]) -> tuple[_Slot, int]:
        """A KV stream per slot. The slot holding the longest prefix of the prompt when that is a real
        part of it (over a tenth, llama-server's test), unless taking it would drop more of what only
        it holds than it reuses while a slot holding nothing of its own is free (prompts sharing a
        chat template's first tokens, or a first word, must not overwrite each other's conversations
        while empty slots wait; the prefix is copied there instead). But llama.cpp decodes only sequences of
        consecutive ids in one pass (split_equal), so a sequence apart from the running ones costs a
        pass of its own every step: while others run, a new sequence goes next to them unless a slot
        apart is its home (`_home`); there, into the slot holding the most of its prompt, else the one
        whose loss costs least (what no other slot holds), a gap between two running ones first.
        With nothing running and no such prefix: an empty slot or one whose cells other slots hold
        too, else the least recently used, so cached prefixes outlive a few other prompts. Whatever
        longer prefix another slot holds is then copied in: copying cells is cheap, prefill is not."""
        free = [sl for sl in self.slots if not sl.busy]
        held = [self._held(sl) for sl in self.slots]
        against = [common_prefix(h, tokens) for h in held]  # a free slot holds its `cached`
        own = {sl.seq_id: against[sl.seq_id] for sl in free}
        homes = self._homes() if self.waiting else set()
        near = [sl for sl in free if self._neighbours(sl) and sl.seq_id not in homes]
        hit = max(free, key=lambda sl: (own[sl.seq_id], -sl.seq_id))
        if near and not _home(own[hit.seq_id], len(tokens), len(hit.cached)):  # together, unless at home
            hit = max(near, key=lambda sl: (own[sl.seq_id], -sl.seq_id))

        def unique(sl: _Slot) -> int:
            return self._unique(sl, held)
        if own[hit.seq_id] * 10 > len(tokens) and not (self._loss(hit, own[hit.seq_id], held) > own[hit.seq_id]
                                                       and any(not unique(sl) for sl in (near or free) if sl is not hit)):
            target = hit
        elif near:
            target = max(near, key=lambda sl: (-unique(sl), self._neighbours(sl), -sl.seq_id))
        else:
            target = max(free, key=lambda sl: (not unique(sl), -sl.last_used, -sl.seq_id))
        have = own[target.seq_id]
        gain, donor = self._donor(target, against)
        if donor is None or (gain - have) * COPY_PER_PREFILL <= len(held[donor.seq_id]):
            return target, have
        return target, gain if self.model.copy_prefix(donor.seq_id, target.seq_id, gain) else 0

    def _homes(self) -> set[int]:
        """The free slots that are a waiting request's home (see `_home`): left to it, not taken by
        a prompt placed before it that wants to sit next to the running ones (in a burst, every
        request's own slot would be overwritten by another's). Each request's best slot is looked up
        once per admission round: comparing every waiting prompt with every free slot at every
        placement cost ~0.1 s for a burst of 32 long chat turns."""
        free = [sl for sl in self.slots if not sl.busy and sl.cached]
        homes = set()
        for req in self.waiting:
            ranked = self._ranked.get(id(req))
            if ranked is None:  # by tokens held, then the lowest slot first: the best last
                ranked = self._ranked[id(req)] = sorted((common_prefix(sl.cached, req.tokens), -sl.seq_id, sl)
                                                        for sl in free)
            while ranked and ranked[-1][2].busy:
                ranked.pop()
            if ranked and _home(ranked[-1][0], len(req.tokens), len(ranked[-1][2].cached)):
                homes.add(ranked[-1][2].seq_id)
        return homes

    def _unique(self, slot: _Slot, held: list[list[int]]) -> int:
        """How many of the tokens cached in free `slot` no other slot holds (`held`: by slot)."""
        return len(slot.cached) - max((self._common(slot, i, h) for i, h in enumerate(held)
                                       if i != slot.seq_id), default=0) if slot.cached else 0

    def _loss(self, slot: _Slot, own: int, held: list[list[int]]) -> int:
        """How many cached tokens taking free `slot` for a prompt of which it holds `own` would drop
        that no other slot holds."""
        return min(self._unique(slot, held), len(slot.cached) - own)

    def _common(self, slot: _Slot, other: int, held: list[int]) -> int:
        """How many tokens free `slot` and slot `other` (holding `held`) both hold from the start."""
        known = self._pairs.setdefault(slot.seq_id, {})
        if other not in known:
            known[other] = common_prefix(slot.cached, held)
        return known[other]

    def _donor(self, slot: _Slot, against: list[int]) -> tuple[int, _Slot | None]:
        """The slot other than `slot`, busy or not, whose cells hold the longest prefix of the prompt
        (`against`: how much of it each slot's cells hold, by slot)."""
        return max(((n, self.slots[i]) for i, n in enumerate(against) if i != slot.seq_id),
                   key=lambda d: d[0], default=(0, None))

    def _neighbours(self, slot: _Slot) -> int:
        """How many of the slots on either side of `slot` are running a sequence."""
        i = slot.seq_id
        return sum(1 for j in (i - 1, i + 1) if 0 <= j < len(self.slots) and self.slots[j].busy)

    def _held(self, slot: _Slot) -> list[int]:
        """The tokens a slot's KV cells hold right now."""
        for s in self.active:
            if s.slot is slot:
                return s.reusable()
        return slot.cached

    def _start(self, req: Request) -> _Seq:
        opts = req.options
        limit = max(8, min(req.num_ctx, self.model.seq_ctx))
        tokens = list(req.tokens) or [0]
        if len(tokens) >= limit:  # keep the first num_keep tokens and the most recent rest
            keep = max(0, min(int(opts.get("num_keep", 4)), limit // 4))
            tail = limit // 2 - keep
            tokens = tokens[:keep] + tokens[-tail:]
        n_vocab = getattr(self.model, "n_vocab", None)
        if req.images:
            if len(tokens) != len(req.tokens):
                raise ValueError("the prompt with its images exceeds the context length")
            if any(t < 0 and split_image_token(t)[0] not in req.images for t in tokens):
                raise ValueError("invalid image token in the prompt")
            req.shift = False  # a shift could cut an image in two
        if n_vocab is not None and any(not 0 <= t < n_vocab for t in tokens if t >= 0 or not req.images):
            raise ValueError(f"invalid token id: token ids must be from 0 to {n_vocab - 1}")
        sampler = self.model.sampler(opts, req.grammar, [t for t in tokens if t >= 0])
        slot, reuse = self._place(tokens)
        reuse = min(reuse, len(tokens) - 1)  # the last prompt token is decoded again for its logits
        reuse = _not_mid_image(tokens, reuse)
        if req.images:
            self.stats["image_tokens_reused"] += sum(1 for t in tokens[:reuse] if t < 0)
        self.model.seq_rm(slot.seq_id, reuse, -1)
        slot.busy = True
        slot.cached = []
        slot.shared = min(slot.shared, reuse)
        self.stats["requests"] += 1
        self.stats["reused_tokens"] += reuse
        lookup_max = int(opts.get("lookup_max") or 0)
        lookup = PromptLookup(lookup_max, int(opts.get("lookup_ngram") or 3)) if lookup_max > 0 else None
        draft_n = int(opts.get("draft_num_predict") or opts.get("draft_max") or 0)
        if draft_n > 0 and self.draft is not None and not req.images:  # the draft model sees no images
            lookup = DraftSeq(self.draft, draft_n)
        return _Seq(req=req, slot=slot, sampler=sampler, tokens=tokens, n_prompt=len(tokens), limit=limit,
                    n_past=reuse, reused=reuse, prompt_count=len(tokens), stop=StopMatcher(list(opts.get("stop") or [])),
                    t_start=time.perf_counter(), lookup=lookup)

    def _step(self) -> None:
        for s in [s for s in self.active if s.req.cancelled]:
            self._finish(s, "cancel", emit=False)
        if not self.active:
            return
        for s in self.active:  # at most one image per step: its rows are a decode call of their own
            if s.prefilling and s.tokens[s.n_past] < 0:
                if not self._prefill_image(s):
                    return
                break
        if not self.active:
            return
        rows: list[tuple[int, int, int, bool]] = []
        owners: list[tuple[_Seq, int, bool]] = []  # (sequence, logits row, is a generation row)
        drafts: dict[int, list[int]] = {}  # seq_id -> draft tokens riding after its next token's row
        by_model = self._model_drafts()
        plain = sum(not s.prefilling for s in self.active)  # rows (and tokens) of the step without drafts
        expected = float(plain)  # tokens the step is expected to give, with the drafts taken so far
        for s in self.active:
            if not s.prefilling:
                owners.append((s, len(rows), True))
                rows.append((s.last, s.n_past, s.seq_id, True))
                if s.lookup is not None:
                    room = self.model.n_batch - len(rows) - 16
                    if isinstance(s.lookup, DraftSeq):
                        d = by_model.get(s.seq_id, [])[:max(0, room)]
                    else:
                        d = self._draft(s, room)
                        drafted = len(rows) - len(owners)  # draft rows already in the step
                        # beside others a draft must pay for the rows they all wait on; alone, it goes
                        if d and plain > 1 and not self._lookup_pays(s.lookup, plain + drafted, expected):
                            s.lookup.withhold(len(s.tokens), d)
                            d = []
                        expected += s.lookup.taken_share() * len(d)
                    if d:
                        drafts[s.seq_id] = d
                        rows += [(t, s.n_past + 1 + j, s.seq_id, True) for j, t in enumerate(d)]
        # While others are generating, prefill in small chunks so their streams keep flowing.
        room = self.model.n_batch - len(rows)
        budget = room if not rows else min(room, max(16, self.prefill_chunk - len(rows)))
        planned: list[tuple[_Seq, int]] = []
        # prompts that finish within a small chunk first (cached prefixes leave most just one token),
        # so a burst of arrivals gets its first tokens soon; the longer ones share what is left
        for s in sorted((s for s in self.active if s.prefilling), key=lambda x: x.n_prompt - x.n_past > SHORT_REST):
            if budget <= 0:
                break
            n = min(budget, s.n_prompt - s.n_past)
            if s.req.images:  # text only, up to the next image
                end = s.n_past
                while end < s.n_past + n and s.tokens[end] >= 0:
                    end += 1
                n = end - s.n_past
                if n == 0:
                    continue
            for pos in range(s.n_past, s.n_past + n):
                is_last = pos == s.n_prompt - 1 and not s.resumed
                if is_last:
                    owners.append((s, len(rows), False))
                rows.append((s.tokens[pos], pos, s.seq_id, is_last))
            planned.append((s, n))
            budget -= n
        if not self.unified:
            rows, owners = _in_slot_order(rows, owners)
        t0 = time.perf_counter()
        ret = self.model.decode(rows)
        now = time.perf_counter()
        if ret == 0 and not planned:  # every row wants logits: a step the cost of drafts is judged by
            self.step_cost.observe(len(rows), now - t0)
        if ret == 1 and self.unified:  # no room in the shared cache: free some, retry next step
            self._make_room()
            return
        if ret != 0:
            seqs = {s.seq_id: s for s, _ in planned} | {s.seq_id: s for s, _, _ in owners}
            if len(seqs) <= 1:
                raise RuntimeError(f"llama_decode failed ({ret})")
            # one sequence's failure must not end the others: decode each alone, fail only the offender
            log.warning("llama_decode failed (%d) on a batch of %d sequences; decoding them one by one", ret, len(seqs))
            for s in seqs.values():
                self._step_one(s, rows, owners, planned, drafts)
            return
        self._advance(rows, owners, planned, t0, now, drafts)

    def _prefill_image(self, s: _Seq) -> bool:
        """Decode the rows of the image at `s`'s next position; False when the step must end here
        (no room in a unified cache: some was freed, try again next step)."""
        key, row = split_image_token(s.tokens[s.n_past])
        embd = s.req.images[key]
        n = 0
        while s.n_past + n < s.n_prompt and s.tokens[s.n_past + n] < 0 and \
                split_image_token(s.tokens[s.n_past + n])[0] == key and split_image_token(s.tokens[s.n_past + n])[1] == row + n:
            n += 1
        last = s.n_past + n == s.n_prompt and not s.resumed
        t0 = time.perf_counter()
        ret = self.model.decode_embd(embd[row:row + n], s.n_past, s.seq_id, last, self.image_non_causal)
        now = time.perf_counter()
        if ret == 1 and self.unified:
            self._make_room()
            return False
        if ret != 0:
            self._finish(s, "error", error=f"llama_decode failed on an image ({ret})")
            return True
        self.stats["steps"] += 1
        self.stats["step_seconds"] += now - t0
        self.stats["prompt_tokens"] += n
        self.stats["image_tokens"] += n
        s.n_past += n
        if last:  # the prompt ends with this image: its last row holds the first token's logits
            s.t_prompt = now
            self._accept(s, s.sampler.sample(self.model.ctx, (n - 1) % self.model.n_batch))
        return True

    def _draft_room(self, s: _Seq, room: int) -> int:
        """At most `room`, never more than fit before its context would shift (cells of drafts
        must not be moved) or past its num_predict."""
        num_predict = int(s.req.options.get("num_predict", -1))
        left = _most(num_predict, s.limit) - s.generated - 1 if num_predict != -2 else s.limit
        return min(room, left, s.limit - s.n_past - 3)

    def _model_drafts(self) -> dict[int, list[int]]:
        """The draft model's drafts for every generating sequence that asked for them, by slot,
        made in one batched pass over the draft model."""
        want = {s.seq_id: (s.tokens, self._draft_room(s, s.lookup.next_k())) for s in self.active
                if not s.prefilling and isinstance(s.lookup, DraftSeq)}
        return self.draft.propose_many(want) if want and self.draft is not None else {}

    def _lookup_pays(self, lookup: PromptLookup, rows: int, tokens: float) -> bool:
        """Whether this sequence's prompt lookup drafts pay in a step of `rows` rows (draft rows
        already in it counted) expected to give `tokens` tokens: judged at full length, what a copy
        under way drafts, so the short drafts that open a copy are not judged alone."""
        full = lookup.max_draft
        return self.step_cost.pays(rows, tokens, full, lookup.taken_share() * full)

    def _draft(self, s: _Seq, room: int) -> list[int]:
        """Prompt lookup draft tokens for `s`."""
        room = self._draft_room(s, room)
        draft = s.lookup.propose(s.tokens, room) if room > 0 else []
        if s.req.images:  # never an image's pseudo-token
            for i, t in enumerate(draft):
                if t < 0:
                    return draft[:i]
        return draft

    def _step_one(self, s: _Seq, rows: list[tuple[int, int, int, bool]], owners: list[tuple[_Seq, int, bool]],
                  planned: list[tuple[_Seq, int]], drafts: dict[int, list[int]]) -> None:
        """Decode only `s`'s rows of a failed batch; on failure end `s` alone with the error."""
        mine = [i for i, r in enumerate(rows) if r[2] == s.seq_id]
        where = {old: new for new, old in enumerate(mine)}
        t0 = time.perf_counter()
        ret = self.model.decode([rows[i] for i in mine])
        if ret != 0:
            return self._finish(s, "error", error=f"llama_decode failed ({ret})")
        self._advance([rows[i] for i in mine], [(o, where[r], g) for o, r, g in owners if o is s],
                      [(o, n) for o, n in planned if o is s], t0, time.perf_counter(),
                      {s.seq_id: drafts[s.seq_id]} if s.seq_id in drafts else {})

    def _advance(self, rows: list[tuple[int, int, int, bool]], owners: list[tuple[_Seq, int, bool]],
                 planned: list[tuple[_Seq, int]], t0: float, now: float,
                 drafts: dict[int, list[int]] | None = None) -> None:
        """Book a successful decode: move each sequence on and sample the rows that want logits."""
        self.stats["steps"] += 1
        self.stats["step_seconds"] += now - t0
        for s, n in planned:
            s.n_past += n
            self.stats["prompt_tokens"] += n
        for s, row, generating in owners:
            if generating:
                s.n_past += 1
                self.stats["decoded_tokens"] += 1
            else:
                s.t_prompt = now
            tok = s.sampler.sample(self.model.ctx, row)
            lp = self._logprob(row, tok, s.req.logprobs) if s.req.logprobs >= 0 else None
            self._accept(s, tok, lp)
            d = (drafts or {}).get(s.seq_id) if generating else None
            if d:
                self._verify(s, tok, d, row)

    def _verify(self, s: _Seq, tok: int, draft: list[int], row: int) -> None:
        """Take the draft tokens while each equals what the sampler picked at the row before it (so
        the output is exactly plain decoding's), then drop the cells of the rest."""
        taken = 0
        s.verifying = [len(draft), 0]  # the final record counts this draft even if it ends the sequence
        while not s.finished and taken < len(draft) and tok == draft[taken]:
            taken += 1  # the drafted token is in the cache now, and its row holds the next logits
            s.verifying[1] = taken
            s.n_past += 1
            self.stats["decoded_tokens"] += 1
            tok = s.sampler.sample(self.model.ctx, row + taken)
            lp = self._logprob(row + taken, tok, s.req.logprobs) if s.req.logprobs >= 0 else None
            self._accept(s, tok, lp)
        if taken < len(draft):
            self.model.seq_rm(s.seq_id, s.n_past, -1)
        s.verifying = None
        s.lookup.feedback(len(draft), taken)
        self.stats["draft_tokens"] += len(draft)
        self.stats["draft_accepted"] += taken

    # --- a full unified cache -------------------------------------------------------------
    def _make_room(self) -> None:
        """Drop the least recently used cached prefix; if none is left, requeue the newest sequence
        (its tokens so far are re-prefilled when it comes back, so nobody fails)."""
        idle = [sl for sl in self.slots if not sl.busy and sl.cached]
        if idle:
            victim = min(idle, key=lambda sl: sl.last_used)
            self.model.seq_rm(victim.seq_id)
            victim.cached = []
            victim.shared = 0
            return
        if len(self.active) <= 1:
            for s in list(self.active):
                self._finish(s, "error", error="the context does not fit in the KV cache (raise OLLAMALIKE_KV_SIZE)")
            return
        newest = max(self.active, key=lambda x: x.t_start)
        self.active.remove(newest)
        self.model.seq_rm(newest.seq_id)
        newest.slot.busy = False
        newest.slot.cached = []
        newest.slot.shared = 0
        newest.slot = None  # type: ignore[assignment]
        self.preempted.append(newest)
        self.stats["preemptions"] += 1

    def _resume(self, s: _Seq) -> None:
        """Bring a preempted sequence back: refill its cells, keep its sampler and text state."""
        held = s.tokens if s.prefilling else s.tokens[:-1]  # while generating, `last` is not in KV yet
        slot, reuse = self._place(held)
        reuse = _not_mid_image(held, min(reuse, max(0, len(held) - 1)))
        self.model.seq_rm(slot.seq_id, reuse, -1)
        slot.busy = True
        slot.cached = []
        slot.shared = min(slot.shared, reuse)
        s.slot, s.n_past = slot, reuse
        if s.generated or s.last >= 0:
            s.n_prompt, s.resumed = len(held), True
        self.active.append(s)

    def _logprob(self, row: int, tok: int, top: int) -> dict[str, Any]:
        lp, best = self.model.logprobs(row, tok, min(top, 20))

        def entry(t: int, p: float) -> dict[str, Any]:
            raw = self.model.piece(t, special=True)
            return {"token": raw.decode("utf-8", "replace"), "logprob": p, "bytes": list(raw)}
        out = entry(tok, lp)
        if top > 0:
            out["top_logprobs"] = [entry(t, p) for t, p in best]
        return out

    def _accept(self, s: _Seq, tok: int, logprob: dict[str, Any] | None = None) -> None:
        s.last = tok
        if self.model.is_eog(tok):
            return self._finish(s, "stop")
        s.generated += 1
        self._first_out |= s.generated == 1
        s.tokens.append(tok)
        text = s.decoder.decode(self.model.piece(tok))
        out, hit = s.stop.feed(text)
        if logprob is not None:  # one record per token, even while its text is held back
            self._emit(s.req, {"content": out, "logprobs": [logprob]})
        elif out:
            self._emit(s.req, {"content": out})
        if hit:
            return self._finish(s, "stop", flush=False)
        num_predict = int(s.req.options.get("num_predict", -1))
        if num_predict != -2 and s.generated >= _most(num_predict, s.limit):
            return self._finish(s, "length")
        if s.n_past + 1 >= s.limit and not (s.req.shift and num_predict != -2 and self._shift(s)):
            return self._finish(s, "length")  # num_predict -2 fills the context and stops, as Ollama

    def _shift(self, s: _Seq) -> bool:
        """Ollama's context shift: keep the first num_keep tokens, drop half of the rest, move the
        remainder down in the KV cache, go on. The sequence's token list follows its cells; only
        the kept start stays reusable by other prompts (see `_Seq.exact`). In a unified cache, cells
        another sequence shares (a prefix it was handed) must not move under it: when the kept part
        reaches into them, the sequence drops its cells past num_keep and prefills the kept rest again."""
        if not getattr(self.model, "can_shift", False):
            return False
        keep = max(0, min(int(s.req.options.get("num_keep", 4)), s.limit // 2))
        discard = (s.n_past - keep) // 2
        if discard <= 0:
            return False
        del s.tokens[keep:keep + discard]
        if s.lookup is not None:
            s.lookup.reset()
        if self.unified and s.slot.shared > keep + discard:
            self.model.seq_rm(s.seq_id, keep, -1)
            s.n_past, s.n_prompt, s.resumed = keep, len(s.tokens) - 1, True  # `last` is not in the cache yet
        else:
            self.model.seq_rm(s.seq_id, keep, keep + discard)
            self.model.seq_add(s.seq_id, keep + discard, s.n_past, -discard)
            s.n_past -= discard
            s.n_prompt = min(s.n_prompt, s.n_past)
        s.slot.shared = min(s.slot.shared, keep)
        s.exact = min(keep, s.exact if s.exact is not None else keep)
        self.stats["context_shifts"] += 1
        return True

    def _finish(self, s: _Seq, reason: str, *, emit: bool = True, flush: bool = True,
                error: str | None = None) -> None:
        s.finished = True
        if s in self.active:
            self.active.remove(s)
        if reason == "error":  # the cells may be half-written: forget them
            self.model.seq_rm(s.seq_id)
            s.slot.cached = []
            s.slot.shared = 0
        else:  # keep the KV resident for the next prompt that starts the same way
            s.slot.cached = s.reusable()
        s.slot.busy = False
        s.slot.last_used = time.monotonic()
        s.sampler.free()
        self._room_freed = True
        if not emit:
            return
        if error is not None:
            self._emit(s.req, {"error": error})
            return
        if flush:
            # bytes of a character cut off by the limit are dropped, never sent as U+FFFD
            tail = s.stop.flush()
            if tail:
                self._emit(s.req, {"content": tail})
        now = time.perf_counter()
        t_prompt = s.t_prompt or now
        drafted = None
        if s.lookup is not None:
            v = s.verifying or [0, 0]
            drafted = {"draft_count": s.lookup.proposed + v[0], "draft_accepted_count": s.lookup.accepted + v[1]}
        self._emit(s.req, {
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": s.prompt_count,
            "prompt_cached_count": s.reused,
            "prompt_eval_duration": int((t_prompt - s.t_start) * 1e9),
            "eval_count": s.generated,
            "eval_duration": int((now - t_prompt) * 1e9),
            "tokens": [t for t in s.tokens if t >= 0] if s.req.images else s.tokens,
            **(drafted or {}),
            **({"stop_sequence": s.stop.hit} if s.stop.hit else {}),
        })
