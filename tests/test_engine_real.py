"""The batching engine on the real SmolLM2 GGUF, in process: correctness, not speed."""

from __future__ import annotations

import threading
import time

import pytest

from ollamalike.runner.engine import EmbedJob, Engine, Request
from ollamalike.runner.llama import LlamaModel, LoadParams
from ollamalike.runner.sequence import common_prefix

pytestmark = pytest.mark.real

SYSTEM = "You are a careful assistant who answers briefly and precisely. " * 12
TEMPLATE = "<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n"
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def model(smollm2_gguf):
    m = LlamaModel(LoadParams(path=str(smollm2_gguf), n_ctx=1024 * 4, n_seq_max=4))
    yield m
    m.close()


def test_rows_of_one_sequence_give_the_same_logits_together_or_one_by_one(model):
    """What speculative decoding's identical output rests on: a draft's rows, decoded with the next
    token in one call, get the logits they would get one by one (in a short context; past a few
    hundred cells llama.cpp's CPU attention takes another kernel for a lone row, see README)."""
    toks = model.tokenize("The quick brown fox jumps over the lazy dog. " * 4)
    n = len(toks) - 5
    try:
        assert model.decode([(t, i, 3, False) for i, t in enumerate(toks[:n])]) == 0
        assert model.decode([(t, n + j, 3, True) for j, t in enumerate(toks[n:])]) == 0
        together = [model.logits(j) for j in range(5)]
        model.seq_rm(3, n, -1)
        for j, t in enumerate(toks[n:]):
            assert model.decode([(t, n + j, 3, True)]) == 0
            alone = model.logits(0)
            assert (alone == together[j]).all(), f"row {j}: {abs(alone - together[j]).max()}"
            assert model.argmax(0) == int(alone.argmax())
    finally:
        model.seq_rm(3)


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


def test_a_prefix_copied_to_another_stream_goes_on_as_a_fresh_prefill(model):
    """copy_prefix hands cells between per-slot KV streams through llama.cpp's sequence state: the
    copy, cut to a prefix, continues exactly as the same prefix prefilled in a stream of its own."""
    tokens = model.tokenize(TEMPLATE.format(s=SYSTEM, u="Name three fruits."))
    n = len(tokens) - 5
    try:
        assert model.decode([(t, i, 0, False) for i, t in enumerate(tokens)]) == 0  # all of it in slot 0
        model.decode([(t, i, 3, False) for i, t in enumerate(tokens[:9])])  # slot 3 held something else
        assert model.copy_prefix(0, 3, n)
        # the rest in the copy, the whole prompt afresh in slot 2: one batch, one pass per stream
        assert model.decode([(t, n + i, 3, i == 4) for i, t in enumerate(tokens[n:])]) == 0
        copied = model.argmax(4)
        assert model.decode([(t, i, 2, i == len(tokens) - 1) for i, t in enumerate(tokens)]) == 0
        assert copied == model.argmax(len(tokens) - 1)
        assert model.decode([(tokens[1], n - 1, 3, False)]) != 0  # position n-1 is taken: the copy holds it
    finally:
        for seq in range(4):
            model.seq_rm(seq)


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


@pytest.fixture(scope="module")
def unified_model(smollm2_gguf):
    # one cache of 256 cells for 4 slots of up to 256 tokens each: too small for 4 long answers at once
    m = LlamaModel(LoadParams(path=str(smollm2_gguf), n_ctx=256, n_seq_max=4, num_ctx=256, kv_unified=True))
    assert m.n_ctx == 256
    yield m
    m.close()


def test_unified_cache_full_preempts_and_completes_everyone(unified_model):
    e = Engine(unified_model, 4)
    e.start()
    try:
        opts = {"temperature": 0, "num_predict": 100}
        topics = ("a dragon", "a castle", "a ship", "a forest")
        runs = [Run(e, unified_model, f"Write a long story about {t}.", system="Be verbose.", options=opts)
                for t in topics]
        finals = [r.wait().final for r in runs]
        assert [f["done_reason"] for f in finals] == ["length"] * 4
        assert [f["eval_count"] for f in finals] == [100] * 4
        assert e.stats["preemptions"] > 0
        assert all(len(r.text) > 50 for r in runs)
    finally:
        e.close()


def test_unified_cache_shares_prefix_cells(unified_model):
    e = Engine(unified_model, 4)
    e.start()
    try:
        system = "You answer in one word. " * 8
        first = Run(e, unified_model, "Sky color?", system=system, options={"temperature": 0, "num_predict": 4}).wait()
        second = Run(e, unified_model, "Grass color?", system=system, options={"temperature": 0, "num_predict": 4}).wait()
        assert first.final["prompt_cached_count"] == 0 and second.final["prompt_cached_count"] > 40
    finally:
        e.close()


def test_a_new_chat_sharing_the_template_opening_leaves_a_cached_conversation_alone(engine, model):
    """A new conversation shares `<|im_start|>user\\n` with a cached one, over a tenth of its short
    prompt: it takes an empty slot, and the cached conversation's next turn still finds all of it."""
    opening = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    short = {"temperature": 0, "num_predict": 8}
    Run(engine, model, None, tokens=model.tokenize(opening.format("Name three colours.")), options=short).wait()
    held = list(engine.slots[0].cached)
    other = model.tokenize(opening.format("Capital of France?"))
    assert common_prefix(held, other) * 10 > len(other)  # the opening is over a tenth of it
    Run(engine, model, None, tokens=other, options=short).wait()
    assert engine.slots[0].cached == held
    turn = held + model.tokenize("<|im_end|>\n" + opening.format("Two more?"), add_special=False)
    again = Run(engine, model, None, tokens=turn, options=short).wait()
    assert again.final["prompt_cached_count"] == len(held)
