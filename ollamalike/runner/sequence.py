"""The engine's data: a completion request, its stop-string matcher, an embedding job, and the
engine's per-slot and per-sequence state (runner/engine.py drives them)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # annotations only: speculative.py uses common_prefix from here
    from ollamalike.runner.speculative import DraftSeq, PromptLookup

Emit = Callable[[dict[str, Any]], None]


@dataclass
class Request:
    """One completion: prompt tokens in, text pieces and one final record out through `emit`."""

    tokens: list[int]
    emit: Emit
    options: dict[str, Any] = field(default_factory=dict)
    num_ctx: int = 2048
    grammar: str | None = None
    logprobs: int = -1  # -1: none; 0: the chosen token's; k: also the k most likely
    shift: bool = True  # at num_ctx, drop half of the context after num_keep and go on (Ollama's shift)
    priority: int = 0  # admission order among waiting requests: lower first (vLLM's), ties first come
    images: dict[int, Any] = field(default_factory=dict)  # image key -> its rows of embeddings (n x n_embd)
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class StopMatcher:
    """Holds back text that might be the start of a stop string until it is disambiguated."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.hit: str | None = None  # the stop string that ended the text (Anthropic's stop_sequence)

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [(self.pending.find(s), s) for s in self.stops]
        hits = [h for h in hits if h[0] >= 0]
        if hits:
            idx, self.hit = min(hits)
            out, self.pending = self.pending[:idx], ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class EmbedJob:
    """Pooled embeddings for several token lists, or with `rank` one relevance score per
    query/document token list; `done(results | None, error | None)` on the engine thread."""

    inputs: list[list[int]]
    done: Callable[[list[Any] | None, str | None], None]
    cancelled: bool = False
    rank: bool = False


@dataclass
class _Slot:
    """One KV stream. `cached` are the tokens its cells hold, kept after a sequence ends so a later
    prompt that starts the same way skips their prefill."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    last_used: float = 0.0
    busy: bool = False
    # In a unified cache, cells of positions below this may be shared with another sequence
    # (a prefix handed over by seq_cp): moving them would move them for that one too.
    shared: int = 0


@dataclass
class _Seq:
    req: Request
    slot: _Slot
    sampler: Any
    tokens: list[int]  # prompt (possibly truncated), then generated tokens
    n_prompt: int  # tokens to prefill before generating (grows if the sequence is requeued)
    limit: int  # most tokens this sequence may hold (its num_ctx)
    n_past: int = 0  # tokens already in the KV cache
    reused: int = 0  # prompt tokens taken from the prefix cache
    prompt_count: int = 0  # the prompt's own length, for the final record
    # After a context shift only the first num_keep cells equal a fresh prefill of their tokens (the
    # others were computed attending to tokens since dropped): only those may serve as a cached prefix.
    exact: int | None = None
    # speculative drafts: by prompt lookup (option lookup_max) or by the draft model (draft_num_predict)
    lookup: PromptLookup | DraftSeq | None = None
    verifying: list[int] | None = None  # [proposed, taken so far] of the draft being verified
    finished: bool = False
    generated: int = 0
    last: int = -1
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    stop: StopMatcher | None = None
    t_start: float = 0.0
    t_prompt: float = 0.0  # when the prompt finished prefilling
    resumed: bool = False  # requeued after preemption: re-prefill, then continue with `last`

    @property
    def seq_id(self) -> int:
        return self.slot.seq_id

    @property
    def prefilling(self) -> bool:
        return self.n_past < self.n_prompt

    def reusable(self) -> list[int]:
        """The tokens whose cells another prompt starting the same way may reuse."""
        return self.tokens[: self.n_past if self.exact is None else min(self.n_past, self.exact)]


def _most(num_predict: int, num_ctx: int) -> int:
    """The most tokens a sequence generates: num_predict, but as Ollama never more than ten context
    lengths (so -1, "until the model stops", cannot shift the context forever)."""
    return 10 * num_ctx if num_predict < 0 else min(num_predict, 10 * num_ctx)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from the start (list slices compare in C: a long shared
    prefix, a system prompt in every slot, costs microseconds, not a Python loop over it)."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 1, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo
