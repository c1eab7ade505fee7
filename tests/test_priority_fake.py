"""Request priority (vLLM's extension, lower first) with fakes: the daemon's queue for a runner's
slots, native and /v1 requests, and the engine's own admission of waiting sequences."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ollamalike.runner.engine import Engine, Request
from ollamalike.server.app import create_app
from tests.test_api_fake import create


@pytest.fixture
async def client(aiohttp_client, tmp_path, factory):
    return await aiohttp_client(create_app(tmp_path / "models", spawn=factory, parallel=1))


async def test_high_priority_request_overtakes_queued_ones(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.delay = 0.02
    finished: list[str] = []

    async def ask(name: str, path: str, body: dict):
        r = await client.post(path, json={"model": "tiny", "stream": False, **body})
        assert r.status == 200, await r.text()
        finished.append(name)
    factory.replies = [" ".join(["w"] * 10)]  # the long one, holding the only slot
    tasks = [asyncio.create_task(ask("long", "/api/generate", {"prompt": "long"}))]
    await asyncio.sleep(0.05)
    for i in range(3):
        tasks.append(asyncio.create_task(ask(f"queued{i}", "/api/generate", {"prompt": f"queued{i}"})))
        await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(ask("urgent", "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "urgent"}], "priority": -1})))
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(ask("native", "/api/chat", {
        "messages": [{"role": "user", "content": "native"}], "priority": -1})))
    await asyncio.gather(*tasks)
    assert finished == ["long", "urgent", "native", "queued0", "queued1", "queued2"]
    runner = factory.spawned[0]
    assert [p["priority"] for p in runner.payloads] == [0, -1, -1, 0, 0, 0]  # and the runner hears it too


async def test_priority_must_be_an_integer(client, tmp_path):
    await create(client, tmp_path)
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "priority": "soon"})
    assert r.status == 400 and "priority" in (await r.json())["error"]
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "priority": 1.5,
                                                        "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 400 and "priority" in (await r.json())["error"]["message"]


class _Model:
    """Just enough of runner.llama.LlamaModel for the engine: every step decodes, every sample is 'x'."""

    n_seq_max, n_batch, seq_ctx, n_vocab, kv_unified, can_shift, ctx, threads = 1, 64, 64, 10, False, True, None, 1

    class _Sampler:
        def sample(self, ctx, row):
            return 5

        def free(self):
            pass

    def sampler(self, opts, grammar=None, history=()):
        return self._Sampler()

    def decode(self, rows):
        time.sleep(0.002)
        return 0

    def seq_rm(self, *a):
        pass

    def copy_prefix(self, *a):
        return True

    def is_eog(self, tok):
        return False

    def piece(self, tok, special=False):
        return b"x"


def test_engine_admits_the_most_urgent_waiting_request_first():
    engine = Engine(_Model(), 1)
    order: list[str] = []
    done = threading.Event()

    def req(name: str, n: int, priority: int = 0) -> Request:
        def emit(ev):
            if ev.get("done"):
                order.append(name)
                if len(order) == 5:
                    done.set()
        return Request(tokens=[1, 2], emit=emit, options={"num_predict": n}, num_ctx=64, priority=priority)
    engine.submit(req("running", 30))
    engine.start()
    try:
        for _ in range(200):  # until the first one holds the only slot
            if engine.running:
                break
            time.sleep(0.005)
        for r in (req("a", 2), req("b", 2, 1), req("c", 2), req("urgent", 2, -5)):
            engine.submit(r)
        assert done.wait(10)
    finally:
        engine.close()
    assert order == ["running", "urgent", "a", "c", "b"]


def test_anthropic_and_responses_requests_carry_priority():
    from ollamalike.api import anthropic, responses

    msg = anthropic.MessagesRequest.model_validate({"model": "m", "max_tokens": 4, "priority": -3,
                                                    "messages": [{"role": "user", "content": "hi"}]})
    assert anthropic.to_chat(msg).priority == -3
    assert anthropic.to_chat(anthropic.MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})).priority == 0
    resp = responses.ResponsesRequest.model_validate({"model": "m", "input": "hi", "priority": 5})
    assert responses.to_chat(resp).priority == 5
