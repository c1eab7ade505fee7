"""One user's bad request must never hurt another: the real daemon with the real SmolLM2 GGUF.

Each test is named after what it protects and failed before its fix (issue 9).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import Daemon

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def generate(url: str, timeout: float = 120, **body) -> requests.Response:
    return requests.post(url + "/api/generate", json={"model": MODEL, "stream": False, **body}, timeout=timeout)


def stream_lines(url: str, body: dict, path: str = "/api/generate") -> list[dict]:
    with requests.post(url + path, json={"model": MODEL, **body}, stream=True, timeout=180) as r:
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.iter_lines() if line]


@pytest.fixture(scope="module")
def small(tmp_path_factory, smollm2_gguf):
    """A daemon with one slot and a 1 MiB body limit: queueing and size limits are cheap to reach."""
    tmp = tmp_path_factory.mktemp("reliability")
    d = Daemon(tmp, OLLAMALIKE_NUM_PARALLEL="1", OLLAMALIKE_MAX_BODY="1MiB", OLLAMALIKE_CONTEXT_LENGTH="512")
    d.create(MODEL, smollm2_gguf, tmp)
    yield d
    d.stop()


# --- one request hurts others -----------------------------------------------------------------
def test_out_of_range_context_tokens_fail_only_their_request(daemon):
    with ThreadPoolExecutor(2) as pool:
        other = pool.submit(stream_lines, daemon.url, {"prompt": CHAT.format("Count to twenty."), "raw": True,
                                                      "options": {"temperature": 0, "num_predict": 40}})
        time.sleep(1.0)  # the other stream is generating
        for bad in ([999999], [-5], ["x"]):
            r = generate(daemon.url, prompt="x", context=bad)
            assert r.status_code == 400, r.text
            assert "token" in r.json()["error"] or "context" in r.json()["error"]
        lines = other.result()
    assert lines[-1]["done"] and lines[-1]["done_reason"] == "length" and "error" not in lines[-1]
    assert lines[-1]["eval_count"] == 40


def test_huge_body_is_a_clear_413(small):
    big = "word " * 300_000  # 1.5 MB, over the 1 MiB limit
    r = generate(small.url, prompt=big)
    assert r.status_code == 413 and "OLLAMALIKE_MAX_BODY" in r.json()["error"], r.text
    r = requests.post(small.url + "/v1/chat/completions", timeout=60,
                      json={"model": MODEL, "messages": [{"role": "user", "content": big}]})
    assert r.status_code == 413 and "too large" in r.json()["error"]["message"]
    # blob uploads stream to disk and are not bound by the JSON limit
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.post(f"{small.url}/api/blobs/{digest}", data=data, timeout=60).status_code == 201


def test_prompt_longer_than_the_context_is_truncated_not_failed(small):
    prompt = "the quick brown fox jumps over the lazy dog " * 20_000  # ~880 KB, ~180k tokens; num_ctx 512
    with ThreadPoolExecutor(2) as pool:
        other = pool.submit(stream_lines, small.url, {"prompt": CHAT.format("Say hi."), "raw": True,
                                                     "options": {"temperature": 0, "num_predict": 8}})
        r = generate(small.url, prompt=prompt, raw=True, options={"temperature": 0, "num_predict": 4})
        lines = other.result()
    assert r.status_code == 200, r.text
    assert 0 < r.json()["prompt_eval_count"] <= 512 and r.json()["eval_count"] == 4
    assert lines[-1]["done"] and lines[-1]["eval_count"] == 8


def test_requests_queued_behind_a_crashed_runner_get_a_fresh_runner(small):
    assert generate(small.url, prompt="hi", options={"num_predict": 1}).status_code == 200  # loaded
    (pid,) = small.runner_pids()
    long = {"prompt": CHAT.format("Write a long story about a dragon."), "raw": True,
            "options": {"temperature": 0, "num_predict": 400}}
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(lambda: requests.post(small.url + "/api/generate", json={"model": MODEL, **long},
                                                  timeout=180))
        time.sleep(1.5)  # the one slot is taken: the next two wait in the queue
        queued = [pool.submit(generate, small.url, prompt="Say yes.", options={"temperature": 0, "num_predict": 3})
                  for _ in range(2)]
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        crashed = first.result()
        answers = [q.result() for q in queued]
    last = json.loads(crashed.text.strip().splitlines()[-1])
    assert "error" in last and "killed by SIGKILL" in last["error"], last
    assert "llama_model_loader" not in last["error"] and "load" not in last["error"]  # no stale load log
    for a in answers:
        assert a.status_code == 200, a.text  # never AssertionError
        assert a.json()["done"] and a.json()["eval_count"] == 3
    assert small.runner_pids() and pid not in small.runner_pids()


def test_engine_error_in_one_sequence_ends_only_that_sequence(smollm2_gguf):
    """A decode step that fails is retried without the offender (in process: the runner validates
    token ids, so a poisoned decode is simulated around the real model)."""
    from ollamalike.runner.engine import Engine, Request
    from ollamalike.runner.llama import LlamaModel, LoadParams

    model = LlamaModel(LoadParams(path=str(smollm2_gguf), n_ctx=512 * 2, n_seq_max=2))
    poison = model.tokenize("zebra", add_special=False)[0]

    class Poisoned:
        def __getattr__(self, name):
            return getattr(model, name)

        def decode(self, rows):
            return -1 if any(r[0] == poison for r in rows) else model.decode(rows)

    engine = Engine(Poisoned(), 2)
    engine.start()
    try:
        results: dict[str, list] = {"good": [], "bad": []}
        done = {k: threading.Event() for k in results}

        def emit(key):
            def f(ev):
                results[key].append(ev)
                if "done" in ev or "error" in ev:
                    done[key].set()
            return f
        good = model.tokenize(CHAT.format("Count to ten."))
        engine.submit(Request(tokens=good, emit=emit("good"), options={"temperature": 0, "num_predict": 30},
                              num_ctx=512))
        time.sleep(0.3)
        engine.submit(Request(tokens=model.tokenize(CHAT.format("zebra")) + [poison], emit=emit("bad"),
                              options={"temperature": 0, "num_predict": 5}, num_ctx=512))
        assert done["good"].wait(120) and done["bad"].wait(120)
    finally:
        engine.close()
        model.close()
    assert "error" in results["bad"][-1]
    assert results["good"][-1].get("done") and results["good"][-1]["eval_count"] == 30


# --- deleting ---------------------------------------------------------------------------------
def test_deleting_a_model_keeps_other_uploads(daemon, smollm2_gguf, tmp_path):
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.post(f"{daemon.url}/api/blobs/{digest}", data=data, timeout=30).status_code == 201
    daemon.create("doomed", smollm2_gguf, tmp_path, 'SYSTEM "a system prompt only this model has"\n')
    system_blob = next(x["digest"] for x in json.loads(
        (daemon.models / "manifests/registry.ollama.ai/library/doomed/latest").read_text())["layers"]
        if x["mediaType"].endswith("system"))
    assert requests.delete(daemon.url + "/api/delete", json={"model": "doomed"}, timeout=30).status_code == 200
    assert requests.head(f"{daemon.url}/api/blobs/{digest}", timeout=30).status_code == 200  # upload kept
    assert requests.head(f"{daemon.url}/api/blobs/{system_blob}", timeout=30).status_code == 404  # its own layer gone
    assert generate(daemon.url, prompt="hi", options={"num_predict": 1}).status_code == 200  # shared weights kept


def test_startup_prunes_strays_unless_noprune(tmp_path):
    blobs = tmp_path / "models" / "blobs"
    blobs.mkdir(parents=True)
    stray = blobs / ("sha256-" + "ab" * 32)
    stray.write_bytes(b"stray")
    d = Daemon(tmp_path, OLLAMALIKE_NOPRUNE="1")
    requests.get(d.url + "/api/version", timeout=10)
    d.stop()
    assert stray.exists()
    d = Daemon(tmp_path)
    requests.get(d.url + "/api/version", timeout=10)
    d.stop()
    assert not stray.exists()


def test_deleting_a_copy_keeps_the_original_loaded(daemon):
    assert generate(daemon.url, prompt="hi", options={"num_predict": 1}, keep_alive="5m").status_code == 200
    assert requests.post(daemon.url + "/api/copy", json={"source": MODEL, "destination": "smolc"}, timeout=30).ok
    assert requests.delete(daemon.url + "/api/delete", json={"model": "smolc"}, timeout=30).status_code == 200
    names = [m["name"] for m in requests.get(daemon.url + "/api/ps", timeout=30).json()["models"]]
    assert MODEL in names


def test_huge_keep_alive_means_forever(daemon):
    try:
        r = generate(daemon.url, prompt="hi", options={"num_predict": 1}, keep_alive=1e12)
        assert r.status_code == 200, r.text
        ps = requests.get(daemon.url + "/api/ps", timeout=30)
        assert ps.status_code == 200, ps.text
        (entry,) = [m for m in ps.json()["models"] if m["name"] == MODEL]
        assert entry["expires_at"].startswith("2318-")  # forever, as for a negative keep_alive
    finally:
        generate(daemon.url, prompt="hi", options={"num_predict": 1}, keep_alive="5m")


# --- bad input is a 4xx ------------------------------------------------------------------------
def test_bad_input_is_a_4xx_not_a_500(daemon):
    url = daemon.url
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    bad_v1 = [
        {"messages": [{"role": "assistant", "content": "", "tool_calls": ["x"]}, {"role": "user", "content": "hi"}]},
        {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": 5}]}]},
        {"tools": [{"type": "function", "function": "get_weather"}]},
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": 3}},
        {"response_format": {"type": "json_schema", "json_schema": "x"}},
    ]
    for extra in bad_v1:
        r = requests.post(url + "/v1/chat/completions", json=chat | extra, timeout=60)
        assert r.status_code == 400, (extra, r.text)
        assert "invalid" in r.json()["error"]["message"]
    r = generate(url, prompt="hi", format={"type": "object", "properties": {"a": {"type": "string", "maxLength": 5000}}})
    assert r.status_code == 400 and "maxLength" in r.json()["error"] and "1000" in r.json()["error"], r.text
    before = daemon.runner_pids()
    r = generate(url, prompt="hi", options={"num_batch": -1})
    assert r.status_code == 400 and "num_batch" in r.json()["error"]
    assert daemon.runner_pids() == before  # nothing reloaded for the model others use
    long = "a" * 300
    for name in (long, f"{long}/model", f"ns/{long}:tag", f"{long}.example.com/ns/model"):
        for path, body in (("/api/show", {"model": name}), ("/api/generate", {"model": name, "prompt": "x"}),
                           ("/api/copy", {"source": MODEL, "destination": name})):
            r = requests.post(url + path, json=body, timeout=30)
            assert 400 <= r.status_code < 500, (path, name, r.text)
            assert str(daemon.models) not in r.text and "/manifests" not in r.text
    r = requests.get(url + "/api/version", headers={"Origin": "http://[::1]:8080"}, timeout=30)
    assert r.headers.get("Access-Control-Allow-Origin") == "http://[::1]:8080"


def test_non_ascii_bearer_token_is_401(tmp_path):
    d = Daemon(tmp_path, OLLAMALIKE_API_KEYS="secret")
    try:
        r = requests.get(d.url + "/api/tags", headers={"Authorization": "Bearer s\u00e9cr\u00eat".encode()}, timeout=10)
        assert r.status_code == 401, r.text
        assert requests.get(d.url + "/api/tags", headers={"Authorization": "Bearer secret"}, timeout=10).ok
    finally:
        d.stop()


# --- output and capabilities ------------------------------------------------------------------
def test_a_character_cut_by_the_token_limit_is_dropped_not_replaced(daemon):
    prompt = CHAT.format("Reply with emoji only: ✨👌😀🎉") + "✨👌😀"
    texts = []
    for n in range(1, 7):
        r = generate(daemon.url, prompt=prompt, raw=True, options={"temperature": 0, "num_predict": n})
        texts.append(r.json()["response"])
        streamed = "".join(x["response"] for x in stream_lines(daemon.url, {
            "prompt": prompt, "raw": True, "options": {"temperature": 0, "num_predict": n}}))
        assert "\ufffd" not in texts[-1] and "\ufffd" not in streamed, (n, texts[-1], streamed)
    # the test can fail: some of these limits really did cut a character (emoji are 3 tokens here)
    assert len(set(texts)) < 6 or any(not t for t in texts), texts


def test_capabilities_say_tools_where_tools_are_accepted(daemon):
    caps = requests.post(daemon.url + "/api/show", json={"model": MODEL}, timeout=30).json()["capabilities"]
    assert "tools" in caps
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    r = requests.post(daemon.url + "/api/chat", timeout=120, json={
        "model": MODEL, "stream": False, "tools": [tool], "options": {"temperature": 0, "num_predict": 8},
        "messages": [{"role": "user", "content": "weather in Paris?"}]})
    assert r.status_code == 200, r.text
