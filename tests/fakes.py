"""A queue-driven fake runner, so the daemon can be tested without weights."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ollamalike.errors import RunnerError
from ollamalike.runner.process import RunnerSpec


class FakeRunner:
    """Answers every completion with `reply` split into words (or the next scripted reply)."""

    def __init__(self, spec: RunnerSpec, factory: "FakeFactory"):
        self.spec = spec
        self.factory = factory
        self.alive = True
        self.closed = False
        self.prompts: list[str] = []
        self.payloads: list[dict[str, Any]] = []
        self.cancelled = 0

    async def completion(self, payload: dict[str, Any]):
        self.prompts.append(payload["prompt"])
        self.payloads.append(payload)
        reply = self.factory.replies.pop(0) if self.factory.replies else "hello from the fake runner"
        words = reply.split(" ")
        done = False
        try:
            for i, w in enumerate(words):
                if self.factory.delay:
                    await asyncio.sleep(self.factory.delay)
                if self.factory.crash_after is not None and i >= self.factory.crash_after:
                    self.alive = False
                    raise RunnerError("llama runner process has terminated: fake crash")
                yield {"content": w if i == 0 else " " + w}
            done = True
            yield {"done": True, "done_reason": "stop", "prompt_eval_count": 3, "prompt_eval_duration": 1000,
                   "eval_count": len(words), "eval_duration": 2000, "tokens": [1, 2, 3]}
        finally:
            if not done:
                self.cancelled += 1


    async def embed(self, inputs, truncate=True, num_ctx=0):
        self.embedded = getattr(self, "embedded", []) + [list(inputs)]
        return {"embeddings": [[3.0, 4.0, float(len(x))] for x in inputs],
                "prompt_eval_count": sum(len(x) for x in inputs)}

    async def rerank(self, query, documents, truncate=True, num_ctx=0):
        """Scores: how many of the query's words each document holds, less a tiebreak by length."""
        self.reranked = getattr(self, "reranked", []) + [(query, list(documents))]
        words = set(query.lower().split())
        return {"scores": [len(words & set(d.lower().split())) - len(d) / 1000 for d in documents],
                "prompt_eval_count": sum(len(query) + len(d) for d in documents)}

    async def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """One token per character (and a BOS), so counts are easy to predict in tests; one per
        white-space separated word when the factory says `tokenize_words` (context-fitting tests)."""
        self.tokenized = getattr(self, "tokenized", []) + [text]
        if getattr(self.factory, "tokenize_words", False):
            return list(range(len(text.split())))
        return ([1] if add_special else []) + [ord(c) for c in text]

    async def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens if t > 1)

    async def metrics(self) -> str:
        return "ollamalike_runner_requests_running 0\n"

    async def close(self) -> None:
        self.alive = False
        self.closed = True


class FakeFactory:
    def __init__(self):
        self.spawned: list[FakeRunner] = []
        self.replies: list[str] = []
        self.delay = 0.0
        self.crash_after: int | None = None
        self.load_delay = 0.0
        self.fail_load: str | None = None

    async def __call__(self, spec: RunnerSpec) -> FakeRunner:
        if self.load_delay:
            await asyncio.sleep(self.load_delay)
        if self.fail_load:
            raise RunnerError(self.fail_load)
        r = FakeRunner(spec, self)
        self.spawned.append(r)
        return r

    @property
    def live(self) -> list[FakeRunner]:
        return [r for r in self.spawned if r.alive]


def named_events(text: str) -> list[tuple[str, dict]]:
    """A named-event SSE body (Anthropic's, OpenAI Responses') as (type, data) pairs; each event's
    name must be its data's `type`."""
    out = []
    for block in text.split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        payload = json.loads(data[len("data: "):])
        assert payload["type"] == name[len("event: "):]
        out.append((payload["type"], payload))
    return out
