"""Draft proposers for speculative decoding. The engine verifies drafts in its own batch step: a
sequence's draft tokens ride in the same `llama_decode` as its next token, each accepted while it
equals what the sampler picks from the previous row's logits, so output is exactly that of plain
decoding; the cells of rejected drafts are removed from the KV cache.
"""

from __future__ import annotations


class PromptLookup:
    """Prompt lookup decoding: the draft is what followed the latest earlier occurrence of the
    sequence's last `ngram` tokens (in the prompt or the text so far). No second model: it pays off
    where the output repeats its input (editing code, fixing JSON, quoting), and backs off where it
    does not, so ordinary text pays almost nothing."""

    def __init__(self, max_draft: int, ngram: int = 3):
        self.max_draft = max(1, max_draft)
        self.ngram = max(1, ngram)
        self.k = self.max_draft  # current draft length, adapted to the acceptance
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> position after its latest occurrence
        self._indexed = 0  # n-grams starting before this position are indexed
        self._misses = 0
        self._cool = 0  # steps to skip after repeated misses
        self.proposed = 0
        self.accepted = 0

    def reset(self) -> None:
        """Forget the index (the token list changed under it, e.g. a context shift)."""
        self._index.clear()
        self._indexed = 0

    def propose(self, tokens: list[int], room: int) -> list[int]:
        """Up to `room` draft tokens to follow `tokens` (whose last one is about to be decoded)."""
        if room <= 0:
            return []
        if self._cool > 0:
            self._cool -= 1
            return []
        n = self.ngram
        while self._indexed + n < len(tokens):  # every n-gram that has a next token, oldest first
            i = self._indexed
            self._index[tuple(tokens[i:i + n])] = i + n
            self._indexed += 1
        if len(tokens) <= n:
            return []
        pos = self._index.get(tuple(tokens[-n:]))
        if pos is None:
            return []
        return tokens[pos:pos + min(self.k, room)]

    def feedback(self, proposed: int, accepted: int) -> None:
        """Adapt the draft length: grow while drafts are taken whole, shrink on misses, pause
        drafting for a while after several drafts in a row were rejected at once."""
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
