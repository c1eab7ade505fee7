"""Context like Ollama on the real SmolLM2: shift during generation, truncate and shift flags."""

from __future__ import annotations

import threading

import pytest
import requests

from ollamalike.runner.engine import Engine, Request
from ollamalike.runner.llama import LlamaModel, LoadParams

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
PROMPT = "<|im_start|>user\nWrite a very long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"


def gen(url: str, **body) -> requests.Response:
    return requests.post(url + "/api/generate", timeout=300,
                         json={"model": MODEL, "stream": False, "raw": True, "prompt": PROMPT, **body})


def test_generation_goes_past_num_ctx_by_shifting(daemon):
    r = gen(daemon.url, options={"num_ctx": 128, "num_predict": 300, "temperature": 0, "repeat_penalty": 1.0})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["eval_count"] == 300 and out["done_reason"] == "length"


def test_shift_false_stops_at_num_ctx(daemon):
    r = gen(daemon.url, shift=False, options={"num_ctx": 128, "num_predict": 300, "temperature": 0})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["done_reason"] == "length" and out["prompt_eval_count"] + out["eval_count"] <= 128


def test_unbounded_generation_stops_at_ten_context_lengths(daemon):
    out = gen(daemon.url, prompt="a b c d e f g h", options={"num_ctx": 32, "num_predict": -1, "temperature": 0,
                                                            "repeat_penalty": 1.0}).json()
    # greedily this text never ends (the alphabet, then a ramble): it stops where Ollama stops it
    assert out["done_reason"] == "length" and out["eval_count"] == 320, out


def test_num_predict_minus_two_fills_the_context(daemon):
    out = gen(daemon.url, options={"num_ctx": 128, "num_predict": -2, "temperature": 0}).json()
    assert out["done_reason"] == "length" and out["prompt_eval_count"] + out["eval_count"] <= 128


def test_truncate_false_refuses_a_prompt_longer_than_the_context(daemon):
    long = "one two three four five six seven eight nine ten " * 40
    r = gen(daemon.url, prompt=long, truncate=False, options={"num_ctx": 128, "num_predict": 1})
    assert r.status_code == 400 and "exceeds the context length" in r.json()["error"], r.text
    r = gen(daemon.url, prompt=long, options={"num_ctx": 128, "num_predict": 1})  # default: truncated
    assert r.status_code == 200 and r.json()["prompt_eval_count"] < 128


def run(engine, tokens, **opts):
    out, done = [], threading.Event()

    def emit(ev):
        out.append(ev)
        if "done" in ev or "error" in ev:
            done.set()
    engine.submit(Request(tokens=tokens, emit=emit, options={"temperature": 0, **opts}, num_ctx=96))
    assert done.wait(300)
    assert "error" not in out[-1], out[-1]
    return "".join(e.get("content", "") for e in out), out[-1]


def test_shifted_sequences_stay_exact_in_the_prefix_cache(smollm2_gguf):
    """After a shift, the cells past num_keep were computed attending to tokens since dropped: a
    later prompt made of the same tokens must not reuse them, and answers exactly as a cold engine."""
    model = LlamaModel(LoadParams(path=str(smollm2_gguf), n_ctx=96 * 2, n_seq_max=2))
    try:
        engine = Engine(model, 2)
        engine.start()
        tokens = model.tokenize(PROMPT)
        _, final = run(engine, tokens, num_predict=150)
        assert final["eval_count"] == 150 and engine.stats["context_shifts"] >= 2
        follow = final["tokens"] + model.tokenize("\nThe end.", add_special=False)
        warm_text, warm = run(engine, follow, num_predict=10)
        assert warm["prompt_cached_count"] <= 4  # only the kept start (num_keep) is reusable
        engine.close()
        for sl in engine.slots:
            model.seq_rm(sl.seq_id)
        cold_engine = Engine(model, 2)
        cold_engine.start()
        cold_text, cold = run(cold_engine, follow, num_predict=10)
        cold_engine.close()
        assert cold["prompt_cached_count"] == 0 and warm_text == cold_text
    finally:
        model.close()
