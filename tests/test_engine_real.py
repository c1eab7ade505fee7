"""The batching engine on the real SmolLM2 GGUF, in process: correctness, not speed."""

from __future__ import annotations

import threading
import time

import pytest

from ollamalike.runner.engine import EmbedJob, Engine, Request
from ollamalike.runner.llama import LlamaModel, LoadParams

pytestmark = pytest.mark.real

SYSTEM = "You are a careful assistant who answers briefly and precisely. " * 12
TEMPLATE = "<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n"
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def model(smollm2_gguf):
    m = LlamaModel(LoadParams(path=str(smollm2_gguf), n_ctx=1024 * 4, n_seq_max=4))
    yield m
    m.close()


@pytest.fixture
def engine(model):
    e = Engine(model, 4)
    e.start()
    yield e
    e.close()
    for sl in e.slots:
        model.seq_rm(sl.seq_id)


class Run:
    def __init__(self, engine, model, user, system=SYSTEM, options=GREEDY, tokens=None):
        self.pieces: list[str] = []
        self.final: dict = {}
        self.done = threading.Event()
        self.req = Request(tokens=tokens or model.tokenize(TEMPLATE.format(s=system, u=user)),
                           emit=self.emit, options=dict(options), num_ctx=1024)
        engine.submit(self.req)

    def emit(self, ev):
        if "content" in ev:
            self.pieces.append(ev["content"])
        else:
            self.final = ev
            self.done.set()

    def wait(self) -> "Run":
        assert self.done.wait(120), "request did not finish"
        assert "error" not in self.final, self.final
        return self

    @property
    def text(self) -> str:
        return "".join(self.pieces)


USERS = ["Count to five.", "Name three fruits.", "What is water?", "Describe a cat.", "Say a number.",
         "Why is grass green?"]


def test_concurrent_greedy_equals_alone(engine, model):
    alone = [Run(engine, model, u, system="Be brief.").wait().text for u in USERS]
    together = [Run(engine, model, u, system="Be brief.") for u in USERS]  # 6 requests, 4 slots
    assert [r.wait().text for r in together] == alone


def test_prefix_reuse_matches_cold_prompt(model, engine):
    cold = Engine(model, 4)  # a fresh engine: nothing cached
    cold_runs = []
    try:
        cold.start()
        cold_runs = [Run(cold, model, "What is the capital of France?").wait()]
    finally:
        cold.close()
        for sl in cold.slots:
            model.seq_rm(sl.seq_id)
    assert cold_runs[0].final["prompt_cached_count"] == 0
    Run(engine, model, "Tell me about the sea.").wait()  # caches the shared system prompt
    warm = Run(engine, model, "What is the capital of France?").wait()
    assert warm.final["prompt_cached_count"] > 100
    assert warm.text == cold_runs[0].text
    # two at once, both taking the cached prefix (one by copying another slot's cells)
    both = [Run(engine, model, "What is the capital of France?"), Run(engine, model, "Name a color.")]
    assert both[0].wait().text == cold_runs[0].text and both[1].wait().final["prompt_cached_count"] > 100
    assert engine.stats["reused_tokens"] > 300


def test_stop_string_split_across_tokens(engine, model):
    base = Run(engine, model, "Tell me about the sea.", options={**GREEDY, "num_predict": 40}).wait()
    pairs = [(a, b) for a, b in zip(base.pieces, base.pieces[1:]) if len(a.strip()) >= 2 and len(b.strip()) >= 2]
    a, b = pairs[len(pairs) // 2]
    stop = a[-2:] + b[:2]
    cut = Run(engine, model, "Tell me about the sea.", options={**GREEDY, "num_predict": 40, "stop": [stop]}).wait()
    assert cut.final["done_reason"] == "stop"
    assert cut.text == base.text[: base.text.index(stop)]


def test_cancel_frees_the_sequence(engine, model):
    run = Run(engine, model, "Write a long story.", options={"temperature": 0, "num_predict": 2000})
    deadline = time.monotonic() + 60
    while len(run.pieces) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    run.req.cancel()
    engine.wake()
    deadline = time.monotonic() + 10
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.running == 0 and not any(sl.busy for sl in engine.slots)
    assert not run.done.is_set()  # a cancelled request gets nothing more
    assert Run(engine, model, "Say hi.").wait().final["done"]


def test_num_predict_and_context_limit(engine, model):
    r = Run(engine, model, "Write a long story about a dragon.", options={"temperature": 0, "num_predict": 7}).wait()
    assert r.final["done_reason"] == "length" and r.final["eval_count"] == 7
    long_prompt = model.tokenize("word " * 3000)
    r = Run(engine, model, "", tokens=long_prompt, options={"temperature": 0, "num_predict": 4}).wait()
    assert r.final["prompt_eval_count"] < 1024


def test_embeddings_batched(engine, model):
    out = {}
    done = threading.Event()
    inputs = [model.tokenize(t) for t in ("the cat sat", "the cat sat", "quantum physics")] * 4
    engine.submit_embed(EmbedJob(inputs=inputs, done=lambda v, e: (out.update(v=v, e=e), done.set())))
    assert done.wait(60) and out["e"] is None
    v = out["v"]
    assert len(v) == 12 and len(v[0]) == model.n_embd
    cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5  # noqa: E731
    assert cos(v[0], v[1]) > 0.99999 and cos(v[0], v[3]) > 0.99999 and cos(v[0], v[2]) < 0.999
