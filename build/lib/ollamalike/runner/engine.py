"""Continuous batching over one llama.cpp context, on one engine thread.

Each step builds ONE batch: the next token of every generating sequence, then chunks of pending prompt
prefill up to `n_batch`. New requests join at the next step; finished or cancelled ones leave at once
and free their KV cells. Results reach the caller through `Request.emit`, called on the engine thread.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]


@dataclass
class Request:
    """One completion: prompt tokens in, text pieces and one final record out through `emit`."""

    tokens: list[int]
    emit: Emit
    options: dict[str, Any] = field(default_factory=dict)
    num_ctx: int = 2048
    grammar: str | None = None
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class StopMatcher:
    """Holds back text that might be the start of a stop string until it is disambiguated."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [(self.pending.find(s), s) for s in self.stops]
        hits = [h for h in hits if h[0] >= 0]
        if hits:
            idx = min(h[0] for h in hits)
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
class _Seq:
    req: Request
    seq_id: int
    sampler: Any
    tokens: list[int]  # prompt (possibly truncated), then generated tokens
    n_prompt: int
    n_past: int = 0  # tokens already in the KV cache
    generated: int = 0
    last: int = -1
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    stop: StopMatcher | None = None
    t_start: float = 0.0
    t_prompt: float = 0.0  # when the prompt finished prefilling

    @property
    def prefilling(self) -> bool:
        return self.n_past < self.n_prompt


class Engine:
    def __init__(self, model: Any, n_parallel: int):
        self.model = model
        self.n_parallel = max(1, min(n_parallel, model.n_seq_max))
        self.waiting: deque[Request] = deque()
        self.active: list[_Seq] = []
        self.free_ids = list(range(self.n_parallel))
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self.stats = {"prompt_tokens": 0, "decoded_tokens": 0, "steps": 0, "step_seconds": 0.0}

    def start(self) -> None:
        self._thread.start()

    def submit(self, req: Request) -> None:
        with self._cv:
            self.waiting.append(req)
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

    # --- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self.waiting and not self.active:
                    self._cv.wait()
                if self._stop:
                    break
                self._admit()
            try:
                self._step()
            except Exception as exc:  # a failed step fails its sequences, never the runner
                log.exception("engine step failed")
                for s in list(self.active):
                    self._finish(s, "error", error=str(exc))
        for s in list(self.active):
            self._finish(s, "error", error="runner shutting down")

    def _admit(self) -> None:
        while self.waiting and self.free_ids:
            req = self.waiting.popleft()
            if req.cancelled:
                continue
            try:
                self.active.append(self._start(req))
            except Exception as exc:
                req.emit({"error": str(exc)})

    def _start(self, req: Request) -> _Seq:
        opts = req.options
        limit = max(8, min(req.num_ctx, self.model.n_ctx))
        tokens = list(req.tokens) or [0]
        if len(tokens) >= limit:  # keep the first num_keep tokens and the most recent rest
            keep = max(0, min(int(opts.get("num_keep", 4)), limit // 4))
            tail = limit // 2 - keep
            tokens = tokens[:keep] + tokens[-tail:]
        sampler = self.model.sampler(opts, req.grammar)
        seq_id = self.free_ids.pop(0)
        self.model.seq_rm(seq_id)
        s = _Seq(req=req, seq_id=seq_id, sampler=sampler, tokens=tokens, n_prompt=len(tokens),
                 stop=StopMatcher(list(opts.get("stop") or [])), t_start=time.perf_counter())
        s.limit = limit  # type: ignore[attr-defined]
        return s

    def _step(self) -> None:
        for s in [s for s in self.active if s.req.cancelled]:
            self._finish(s, "cancel", emit=False)
        if not self.active:
            return
        rows: list[tuple[int, int, int, bool]] = []
        owners: list[tuple[_Seq, int, bool]] = []  # (sequence, logits row, is a generation row)
        for s in self.active:
            if not s.prefilling:
                owners.append((s, len(rows), True))
                rows.append((s.last, s.n_past, s.seq_id, True))
        budget = self.model.n_batch - len(rows)
        planned: list[tuple[_Seq, int]] = []
        for s in self.active:
            if budget <= 0:
                break
            if s.prefilling:
                n = min(budget, s.n_prompt - s.n_past)
                for pos in range(s.n_past, s.n_past + n):
                    is_last = pos == s.n_prompt - 1
                    if is_last:
                        owners.append((s, len(rows), False))
                    rows.append((s.tokens[pos], pos, s.seq_id, is_last))
                planned.append((s, n))
                budget -= n
        t0 = time.perf_counter()
        ret = self.model.decode(rows)
        now = time.perf_counter()
        if ret != 0:
            raise RuntimeError(f"llama_decode failed ({ret})")
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
            self._accept(s, s.sampler.sample(self.model.ctx, row))

    def _accept(self, s: _Seq, tok: int) -> None:
        s.last = tok
        if self.model.is_eog(tok):
            return self._finish(s, "stop")
        s.generated += 1
        s.tokens.append(tok)
        text = s.decoder.decode(self.model.piece(tok))
        out, hit = s.stop.feed(text)
        if out:
            s.req.emit({"content": out})
        if hit:
            return self._finish(s, "stop", flush=False)
        num_predict = int(s.req.options.get("num_predict", -1))
        if (num_predict >= 0 and s.generated >= num_predict) or s.n_past + 1 >= s.limit:  # type: ignore[attr-defined]
            return self._finish(s, "length")

    def _finish(self, s: _Seq, reason: str, *, emit: bool = True, flush: bool = True,
                error: str | None = None) -> None:
        if s in self.active:
            self.active.remove(s)
        self.model.seq_rm(s.seq_id)
        self.free_ids.append(s.seq_id)
        s.sampler.free()
        if not emit:
            return
        if error is not None:
            s.req.emit({"error": error})
            return
        if flush:
            tail = s.stop.flush() + s.decoder.decode(b"", final=True)
            if tail:
                s.req.emit({"content": tail})
        now = time.perf_counter()
        t_prompt = s.t_prompt or now
        s.req.emit({
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": s.n_prompt,
            "prompt_eval_duration": int((t_prompt - s.t_start) * 1e9),
            "eval_count": s.generated,
            "eval_duration": int((now - t_prompt) * 1e9),
            "tokens": s.tokens,
        })
