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


class _Adaptive:
    """A draft length that follows the acceptance: it grows while drafts are taken whole, shrinks on
    misses, and drafting pauses for a while after several drafts in a row were rejected at once, so
    text the proposer cannot guess costs almost nothing."""

    def __init__(self, max_draft: int):
        self.max_draft = max(1, max_draft)
        self.k = self.max_draft  # current draft length
        self._misses = 0
        self._cool = 0  # steps to skip after repeated misses
        self.proposed = 0
        self.accepted = 0

    def next_k(self) -> int:
        """The draft length for this step: 0 while pausing."""
        if self._cool > 0:
            self._cool -= 1
            return 0
        return self.k

    def feedback(self, proposed: int, accepted: int) -> None:
        self.proposed += proposed
        self.accepted += accepted
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
    would only waste the rows."""

    def __init__(self, max_draft: int, ngram: int = 3):
        super().__init__(max_draft)
        self.ngram = max(1, ngram)
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> position after its latest occurrence
        self._indexed = 0  # n-grams starting before this position are indexed
        self._offset = 0  # how far back the source of the copy under way is (0: none)
        self._copying = False  # the last draft was taken for a few tokens: a copy is under way

    def reset(self) -> None:
        """Forget the index (the token list changed under it, e.g. a context shift)."""
        self._index.clear()
        self._indexed = 0
        self._offset = 0

    def feedback(self, proposed: int, accepted: int) -> None:
        super().feedback(proposed, accepted)
        self._copying = accepted >= 2
        if accepted >= 3:  # a copy under way: the miss was an edit, the copy goes on past it
            self.k = self.max_draft

    def propose(self, tokens: list[int], room: int) -> list[int]:
        """Up to `room` draft tokens to follow `tokens` (whose last one is about to be decoded)."""
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
