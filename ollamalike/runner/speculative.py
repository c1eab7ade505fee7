"""Draft proposers for speculative decoding. The engine verifies drafts in its own batch step: a
sequence's draft tokens ride in the same `llama_decode` as its next token, each accepted while it
equals what the sampler picks from the previous row's logits, so output is that of plain decoding;
the cells of rejected drafts are removed from the KV cache. (Token for token only up to float
rounding: past a few hundred cells llama.cpp's CPU attention sums a lone row's keys in another
order than several rows', which can flip a near-tie; see README.)
"""

from __future__ import annotations

from typing import Any

from ollamalike.runner.sequence import common_prefix


class StepCost:
    """What a decode of n rows (each wanting logits) takes here: a moving average of the engine's own
    steps by row count, nothing calibrated up front, and a straight line through the counts measured
    lately for those not measured. On a CPU a row costs compute (SmolLM2 on two cores: 2 rows 1.8x
    one, 9 rows 5x), on a GPU next to nothing; prompt lookup drafts beside other sequences where this
    says they pay (`pays`). A row count's first decode is not counted (llama.cpp builds a graph for a
    new batch shape then), and a figure not refreshed for `STALE` steps is left out, so a size judged
    too dear on a bad reading is tried again."""

    STALE = 256

    def __init__(self, weight: float = 0.2):
        self.weight = weight  # of a new step in the average
        self._secs: dict[int, float] = {}
        self._when: dict[int, int] = {}  # row count -> the step it was last measured at
        self._steps = 0
        self._line: tuple[float, float] | None = None  # (seconds at 0 rows, seconds a row), kept till a step
        self._line_at = -1

    def observe(self, rows: int, seconds: float) -> None:
        self._steps += 1
        if rows in self._secs:
            self._secs[rows] += self.weight * (seconds - self._secs[rows])
        elif rows in self._when:  # its second decode: the first (llama.cpp building a graph) was only noted
            self._secs[rows] = seconds
        self._when[rows] = self._steps

    def _fresh(self, rows: int) -> bool:
        return self._steps - self._when[rows] <= self.STALE

    def _fit(self) -> tuple[float, float] | None:
        if self._line_at != self._steps:
            pts = [(n, t) for n, t in self._secs.items() if self._fresh(n)]
            self._line, self._line_at = None, self._steps
            if len(pts) >= 2:
                mn, mt = sum(n for n, _ in pts) / len(pts), sum(t for _, t in pts) / len(pts)
                slope = sum((n - mn) * (t - mt) for n, t in pts) / sum((n - mn) ** 2 for n, _ in pts)
                self._line = (mt - slope * mn, slope)
        return self._line

    def estimate(self, rows: int) -> float | None:
        """Seconds for `rows` rows: measured lately, else on the line through those that were; None
        while fewer than two row counts have been."""
        if rows in self._secs and self._fresh(rows):
            return self._secs[rows]
        line = self._fit()
        return None if line is None else max(0.0, line[0] + line[1] * rows)

    def pays(self, rows: int, tokens: float, extra: int, expect: float) -> bool:
        """Whether `extra` more rows, expected to give `expect` more tokens, raise the tokens per
        second of a step of `rows` rows giving `tokens`. Tried (and so measured) while not known."""
        base, more = self.estimate(rows), self.estimate(rows + extra)
        if base is None or more is None:
            return True
        return (tokens + expect) * base >= tokens * more


class _Adaptive:
    """A draft length that follows the acceptance: it grows while drafts are taken whole, shrinks on
    misses, and drafting pauses for a while after several drafts in a row were rejected at once, so
    text the proposer cannot guess costs almost nothing."""

    def __init__(self, max_draft: int):
        self.max_draft = max(1, max_draft)
        self.k = self.max_draft  # current draft length
        self._misses = 0
        self._cool = 0  # steps to skip after repeated misses
        self.proposed = 0  # drafted tokens verified, and those taken (the final record's counts)
        self.accepted = 0

    def next_k(self) -> int:
        """The draft length for this step: 0 while pausing."""
        if self._cool > 0:
            self._cool -= 1
            return 0
        return self.k

    def feedback(self, proposed: int, accepted: int) -> None:
        """A draft verified: `accepted` of its `proposed` tokens taken."""
        self.proposed += proposed
        self.accepted += accepted
        self._adapt(proposed, accepted)

    def _adapt(self, proposed: int, accepted: int) -> None:
        if accepted == proposed:
            self.k = min(self.max_draft, self.k + 2)
        else:
            self.k = max(1, min(self.k // 2, accepted + 1))
        if accepted:
            self._misses = 0
            return
        self._misses += 1
        if self._misses >= 3:
            self._misses, self._cool = 0, 8


class PromptLookup(_Adaptive):
    """Prompt lookup decoding: the draft is what followed the latest earlier occurrence of the
    sequence's last `ngram` tokens (in the prompt or the text so far). No second model: it pays off
    where the output repeats its input (editing code, fixing JSON, quoting), and backs off where it
    does not, so ordinary text pays almost nothing.

    Once a draft is taken for two tokens or more, the output is copying its source: the next draft
    goes on from the same distance back (`_offset`) even when the model's own token differed from
    the source's, since an edit mostly swaps a token or two (a renamed variable, a fixed value) and
    the copy resumes right after it. After a take of three tokens or more the next draft is full
    length again rather than shorter (the miss was an edit, not the copy's end). After a shorter take
    the n-gram index is asked again: in ordinary text a match seldom runs on, and going on from it
    would only waste the rows.

    The engine sends a draft only where its expected take pays for its rows (`StepCost.pays`); one
    it holds back is scored against the tokens that follow instead (`withhold`), as if verified, so
    the draft length and the taken share keep up when a copy starts, at no cost."""

    def __init__(self, max_draft: int, ngram: int = 3):
        super().__init__(max_draft)
        self.ngram = max(1, ngram)
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> position after its latest occurrence
        self._indexed = 0  # n-grams starting before this position are indexed
        self._offset = 0  # how far back the source of the copy under way is (0: none)
        self._copying = False  # the last draft was taken for a few tokens: a copy is under way
        self._took, self._tried = 1.0, 2.0  # drafted tokens taken / verified, recent drafts weighing most
        self._withheld: tuple[int, list[int]] | None = None  # (where it would have started, draft)

    def reset(self) -> None:
        """Forget the index (the token list changed under it, e.g. a context shift)."""
        self._index.clear()
        self._indexed = 0
        self._offset = 0
        self._withheld = None

    def taken_share(self) -> float:
        """The share of a draft's tokens expected to be taken (a half before any draft)."""
        return self._took / self._tried

    def withhold(self, at: int, draft: list[int]) -> None:
        """`draft`, proposed to follow the first `at` tokens, was not sent: score it as if it had
        been verified, once the tokens the sequence goes on with show where it would have been cut
        (or that it would have been taken whole)."""
        if self._withheld is None:
            self._withheld = (at, list(draft))

    def _score_withheld(self, tokens: list[int]) -> None:
        at, draft = self._withheld
        seen = tokens[at:at + len(draft)]
        n = common_prefix(seen, draft)
        if n == len(seen) < len(draft):
            return  # matched so far: not known yet
        self._withheld = None
        self._adapt(len(draft), n)

    def _adapt(self, proposed: int, accepted: int) -> None:
        super()._adapt(proposed, accepted)
        self._took = 0.9 * self._took + accepted
        self._tried = 0.9 * self._tried + proposed
        self._copying = accepted >= 2
        if accepted >= 3:  # a copy under way: the miss was an edit, the copy goes on past it
            self.k = self.max_draft

    def propose(self, tokens: list[int], room: int) -> list[int]:
        """Up to `room` draft tokens to follow `tokens` (whose last one is about to be decoded)."""
        if self._withheld is not None:
            self._score_withheld(tokens)
        k = self.next_k()
        if room <= 0 or k == 0:
            return []
        n = self.ngram
        while self._indexed + n < len(tokens):  # every n-gram that has a next token, oldest first
            i = self._indexed
            self._index[tuple(tokens[i:i + n])] = i + n
            self._indexed += 1
        if self._offset and self._copying:
            pos = len(tokens) - self._offset
        else:
            pos = self._index.get(tuple(tokens[-n:])) if len(tokens) > n else None
        if pos is None:
            return []
        self._offset = len(tokens) - pos
        return tokens[pos:pos + min(k, room)]


class DraftModel:
    """A second, smaller model with the target's vocabulary that drafts greedily (Modelfile DRAFT).
    It holds one KV stream per engine slot, `seen[seq]` being the tokens in it: before drafting, the
    cells past the longest common prefix with the sequence's tokens (rejected drafts, a context
    shift, another request in the slot) are removed and what the draft model lacks is decoded."""

    def __init__(self, model: Any):
        self.model = model  # a runner.llama.LlamaModel with n_seq_max >= the engine's slots
        self.seen: dict[int, list[int]] = {}

    def propose(self, seq: int, tokens: list[int], n: int) -> list[int]:
        """Up to `n` greedy draft tokens to follow `tokens` in slot `seq`."""
        return self.propose_many({seq: (tokens, n)}).get(seq, [])

    def propose_many(self, want: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        """Greedy drafts for several slots at once, `{seq: (tokens, n)}` -> `{seq: up to n tokens}`:
        one batched catch-up of what each slot's stream lacks, then one decode per draft position for
        all of them. An end-of-generation token ends that slot's draft. A failed decode drops the
        streams involved (they are rebuilt next time); drafts only ever cost time, never output."""
        m = self.model
        want = {seq: (toks, n) for seq, (toks, n) in want.items() if n > 0 and toks and len(toks) + n <= m.seq_ctx}
        rows: list[tuple[int, int, int, bool]] = []
        for seq, (tokens, _) in want.items():
            seen = self.seen.setdefault(seq, [])
            keep = min(common_prefix(seen, tokens), len(tokens) - 1)  # the last one is decoded for its logits
            if keep < len(seen):
                m.seq_rm(seq, keep, -1)
                del seen[keep:]
            rows += [(t, keep + i, seq, keep + i == len(tokens) - 1) for i, t in enumerate(tokens[keep:])]
        out: dict[int, list[int]] = {seq: [] for seq in want}
        for start in range(0, len(rows), m.n_batch):
            part = rows[start:start + m.n_batch]
            if m.decode(part) != 0:
                for seq in want:
                    self._forget(seq)
                return {}
            for i, (t, _, seq, last) in enumerate(part):
                self.seen[seq].append(t)
                if last:
                    out[seq].append(m.argmax(i))
        while True:
            going = [seq for seq, d in out.items() if d and len(d) < want[seq][1] and not m.is_eog(d[-1])]
            if not going:
                return out
            for start in range(0, len(going), m.n_batch):  # more slots than a batch holds: in parts
                part = going[start:start + m.n_batch]
                if m.decode([(out[seq][-1], len(self.seen[seq]), seq, True) for seq in part]) != 0:
                    for seq in going:
                        self._forget(seq)
                    return {seq: d for seq, d in out.items() if seq not in going}
                for i, seq in enumerate(part):
                    self.seen[seq].append(out[seq][-1])
                    out[seq].append(m.argmax(i))

    def _forget(self, seq: int) -> None:
        self.model.seq_rm(seq)
        self.seen[seq] = []


class DraftSeq(_Adaptive):
    """One sequence's use of the shared DraftModel: its adaptive draft length and counts (the engine
    asks the DraftModel for the drafts of all such sequences at once, `next_k()` tokens each)."""

    def __init__(self, drafter: DraftModel, max_draft: int):
        super().__init__(max_draft)
        self.drafter = drafter

    def reset(self) -> None:
        pass  # the drafter finds the common prefix itself
