"""Slots follow demand on the real SmolLM2: with no NUM_PARALLEL, more than the old 8 requests run at
once, each answer complete and the same as alone; a unified cache (KV_UNIFIED=1) admits them per token
and still shifts the context; /api/ps sizes each by its own KV."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import Daemon

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 24, "seed": 1}
TOPICS = ["the sea", "a cat", "bread", "bicycles", "mountains", "rain", "the moon", "music", "trees", "fire",
          "snow", "a river"]


@pytest.fixture(scope="module")
def streams(tmp_path_factory, smollm2_gguf):
    """The default policy (no NUM_PARALLEL, no KV_UNIFIED) at num_ctx 512: 32 streams fit easily."""
    tmp = tmp_path_factory.mktemp("streams")
    d = Daemon(tmp, OLLAMALIKE_CONTEXT_LENGTH="512")
    try:
        d.create(MODEL, smollm2_gguf, tmp)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def unified(tmp_path_factory, smollm2_gguf):
    """One unified cache of 4,096 cells: 16 slots of at least 256 cells each."""
    tmp = tmp_path_factory.mktemp("unified")
    d = Daemon(tmp, OLLAMALIKE_CONTEXT_LENGTH="512", OLLAMALIKE_KV_UNIFIED="1", OLLAMALIKE_KV_SIZE="4096")
    try:
        d.create(MODEL, smollm2_gguf, tmp)
        yield d
    finally:
        d.stop()


def generate(d: Daemon, topic: str, **opts) -> dict:
    r = requests.post(d.url + "/api/generate", timeout=300, json={
        "model": MODEL, "stream": False, "prompt": f"Write about {topic}.", "options": {**GREEDY, **opts}})
    assert r.status_code == 200, r.text
    return r.json()


def together(d: Daemon, topics: list[str]) -> tuple[list[dict], int]:
    """Every topic at once; returns the answers and the most requests the runner held running at once."""
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], int(d.metric_total("ollamalike_runner_requests_running")))
            time.sleep(0.01)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(topics)) as pool:
            out = list(pool.map(lambda t: generate(d, t), topics))
    finally:
        stop.set()
        watcher.join()
    return out, peak[0]


@pytest.mark.timeout(240)
def test_more_than_eight_requests_run_at_once_each_as_alone(streams):
    alone = [generate(streams, t) for t in TOPICS]
    assert streams.metric_total("ollamalike_runner_slots") == 32
    answers, peak = together(streams, TOPICS)
    assert peak > 8, f"at most {peak} requests ran at once"
    assert [a["eval_count"] for a in answers] == [a["eval_count"] for a in alone]
    assert [a["response"] for a in answers] == [a["response"] for a in alone]


@pytest.mark.timeout(240)
def test_a_unified_cache_admits_more_than_eight_and_shifts_the_context(unified):
    answers, peak = together(unified, TOPICS)
    assert unified.metric_total("ollamalike_runner_slots") == 16
    assert unified.metric_total("ollamalike_runner_kv_cells_total") == 4096
    assert peak > 8, f"at most {peak} requests ran at once"
    assert all(a["done"] and a["response"].strip() for a in answers)
    assert all(a["eval_count"] == 24 or a["done_reason"] == "stop" for a in answers)
    # past num_ctx by shifting, as with a stream per slot
    shifts = unified.metric_total("ollamalike_runner_context_shifts_total")
    out = generate(unified, "a dragon, at great length", num_ctx=128, num_predict=300, repeat_penalty=1.0)
    assert out["eval_count"] == 300 and out["done_reason"] == "length", out
    assert unified.metric_total("ollamalike_runner_context_shifts_total") > shifts


@pytest.mark.timeout(120)
def test_ps_sizes_each_runner_by_its_own_kv(streams, unified):
    for d in (streams, unified):
        generate(d, "hi", num_predict=1)
    size = {name: requests.get(d.url + "/api/ps", timeout=30).json()["models"][0]["size"]
            for name, d in (("streams", streams), ("unified", unified))}
    # 32 streams of 512 cells against one cache of 4,096: 12,288 cells of 23,040 bytes apart
    assert size["streams"] - size["unified"] == 12288 * 23040
