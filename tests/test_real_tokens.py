"""POST /api/tokenize and /api/detokenize on the real daemon: SmolLM2's own tokenizer, through its runner."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"


def test_tokenize_detokenize_round_trip(daemon):
    text = "The quick brown fox jumps over the lazy dog."
    r = requests.post(daemon.url + "/api/tokenize", json={"model": MODEL, "content": text}, timeout=120)
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert r.json()["model"] == MODEL and all(isinstance(t, int) for t in tokens) and 5 < len(tokens) < len(text)
    bare = requests.post(daemon.url + "/api/tokenize", json={"model": MODEL, "prompt": text, "add_special": False},
                         timeout=60).json()["tokens"]
    assert tokens[-len(bare):] == bare and len(tokens) >= len(bare)
    r = requests.post(daemon.url + "/api/detokenize", json={"model": MODEL, "tokens": bare}, timeout=60)
    assert r.status_code == 200 and r.json()["content"] == text
    # the count a generation reports for the same prompt is the tokenizer's
    gen = requests.post(daemon.url + "/api/generate", json={"model": MODEL, "prompt": text, "raw": True,
                                                            "stream": False, "options": {"num_predict": 1}},
                        timeout=120).json()
    assert gen["prompt_eval_count"] == len(tokens)


def test_tokenize_errors(daemon):
    r = requests.post(daemon.url + "/api/tokenize", json={"model": "no-such-model", "content": "x"}, timeout=60)
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = requests.post(daemon.url + "/api/tokenize", json={"model": MODEL}, timeout=60)
    assert r.status_code == 400 and r.json()["error"] == "content is required"
    r = requests.post(daemon.url + "/api/detokenize", json={"model": MODEL, "tokens": [1, 10**9]}, timeout=60)
    assert r.status_code == 400 and "token ids must be integers from 0 to" in r.json()["error"]
    r = requests.post(daemon.url + "/api/detokenize", json={"model": MODEL, "tokens": [-1]}, timeout=60)
    assert r.status_code == 400
    # the runner is still there and answers
    r = requests.post(daemon.url + "/api/detokenize", json={"model": MODEL, "tokens": []}, timeout=60)
    assert r.status_code == 200 and r.json()["content"] == ""
