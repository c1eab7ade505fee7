"""Upstream models (FROM openai+http://...) against fake OpenAI-compatible servers: translation both
ways, streaming, tools, errors, balancing, failover, health, metrics, and the model's life (list,
show, ps, cp, rm, pull refused)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from ollamalike.api import upstream as up
from ollamalike.errors import BadRequest
from ollamalike.modelfile import parse_modelfile
from ollamalike.server.app import CORE, create_app


class FakeUpstream:
    """An OpenAI-compatible server: records each request; answers with `self.reply` (text or a
    list of chunk dicts), `self.status`/`self.error` for a refusal, after `self.delay` seconds."""

    def __init__(self, name: str = "a"):
        self.name = name
        self.requests: list[tuple[str, dict, dict]] = []
        self.reply: str | list[dict] = "Hello there"
        self.status, self.error, self.delay = 200, None, 0.0
        self.in_flight = self.max_in_flight = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/completions", self.chat)
        self.app.router.add_post("/v1/embeddings", self.embeddings)
        self.app.router.add_get("/v1/models", self.models)
        self.health_status = 200

    async def models(self, request):
        return web.json_response({"data": [{"id": "m"}]}, status=self.health_status)

    async def embeddings(self, request):
        body = await request.json()
        self.requests.append((request.path, body, dict(request.headers)))
        return web.json_response({"data": [{"index": i, "embedding": [3.0, 4.0]} for i, _ in enumerate(body["input"])],
                                  "usage": {"prompt_tokens": 7, "total_tokens": 7}})

    async def chat(self, request):
        body = await request.json()
        self.requests.append((request.path, body, dict(request.headers)))
        if self.status != 200:
            return web.json_response(self.error or {"error": {"message": "Bad thing", "type": "x"}}, status=self.status)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            text = request.path.endswith("/completions") and not request.path.endswith("chat/completions")
            chunks = self.reply if isinstance(self.reply, list) else [
                {"choices": [{"index": 0, **({"text": w} if text else {"delta": {"content": w}})}]}
                for w in self.reply.split(" ")] + [
                {"choices": [{"index": 0, "finish_reason": "stop", **({"text": ""} if text else {"delta": {}})}]},
                {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}]
            for c in chunks:
                await resp.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            return resp
        finally:
            self.in_flight -= 1


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def fake(aiohttp_server):
    f = FakeUpstream()
    f.server = await aiohttp_server(f.app)
    f.url = f"http://127.0.0.1:{f.server.port}/v1"
    return f


@pytest.fixture
async def fake2(aiohttp_server):
    f = FakeUpstream("b")
    f.server = await aiohttp_server(f.app)
    f.url = f"http://127.0.0.1:{f.server.port}/v1"
    return f


@pytest.fixture
async def client(aiohttp_client, tmp_path, factory, monkeypatch):
    monkeypatch.setenv("OLLAMALIKE_UPSTREAM_HEALTH_INTERVAL", "0")  # checks are driven by the tests
    return await aiohttp_client(create_app(tmp_path / "models", spawn=factory))


async def make(client, name: str, *refs: str, **extra) -> None:
    r = await client.post("/api/create", json={"model": name, "upstreams": list(refs), "stream": False, **extra})
    assert r.status == 200, await r.text()


async def test_create_show_list_cp_rm_and_pull_refused(client, fake, factory):
    await make(client, "remote", f"openai+{fake.url} served-model api_key=$MY_KEY", system="be brief")
    show = await (await client.post("/api/show", json={"model": "remote"})).json()
    assert f"FROM openai+{fake.url} served-model api_key=$MY_KEY" in show["modelfile"]
    assert show["upstreams"] == [{"url": fake.url, "model": "served-model", "api_key_env": "MY_KEY"}]
    assert show["remote_host"] == fake.url and show["remote_model"] == "served-model"
    assert show["details"]["format"] == "upstream" and "completion" in show["capabilities"]
    tags = (await (await client.get("/api/tags")).json())["models"]
    assert [t["name"] for t in tags] == ["remote:latest"] and tags[0]["remote_host"] == fake.url
    assert (await client.post("/api/copy", json={"source": "remote", "destination": "remote2"})).status == 200
    r = await client.post("/api/pull", json={"model": "remote2"})
    assert r.status == 400 and "no weights to pull" in (await r.json())["error"]
    r = await client.post("/api/tokenize", json={"model": "remote2", "content": "hi"})
    assert r.status == 400 and "served by upstream servers" in (await r.json())["error"]
    assert (await client.delete("/api/delete", json={"model": "remote2"})).status == 200
    assert (await client.post("/api/show", json={"model": "remote2"})).status == 404
    assert factory.spawned == []  # no runner, ever


async def test_create_refusals(client, fake):
    for ref, words in [(f"openai+{fake.url}", "needs the model id"),
                       (f"openai+{fake.url} m api_key=sk-123", "never the key itself"),
                       ("openai+http://user:pw@host/v1 m", "credentials"),
                       (f"openai+{fake.url} m color=red", "only api_key")]:
        r = await client.post("/api/create", json={"model": "x", "from": ref, "stream": False})
        assert r.status == 400 and words in (await r.json())["error"], ref
    r = await client.post("/api/create", json={"model": "x", "from": f"openai+{fake.url} m", "stream": False,
                                               "template": "{{ .Prompt }}"})
    assert r.status == 400 and "TEMPLATE" in (await r.json())["error"]
    r = await client.post("/api/create", json={"model": "x", "from": f"openai+{fake.url} m", "stream": False,
                                               "parameters": {"num_ctx": 8192}})
    assert r.status == 400 and "num_ctx" in (await r.json())["error"]
    assert (await (await client.get("/api/tags")).json())["models"] == []


def test_modelfile_several_from_lines():
    mf = parse_modelfile("FROM openai+http://a:8000/v1 m\nFROM openai+http://b:8000/v1 m api_key=$K\n"
                         "PARAMETER temperature 0.2\n")
    assert mf.upstreams == ["openai+http://a:8000/v1 m", "openai+http://b:8000/v1 m api_key=$K"]
    assert parse_modelfile(mf.to_text()).upstreams == mf.upstreams
    with pytest.raises(BadRequest, match="either all upstream servers"):
        parse_modelfile("FROM ./a.gguf\nFROM openai+http://a/v1 m\n")
    assert up.parse_ref("openai+https://h/v1/ m").url == "https://h/v1"


async def test_chat_translation_both_ways(client, fake, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sekrit")
    await make(client, "remote", f"openai+{fake.url} served-model api_key=$MY_KEY", system="be brief",
               parameters={"temperature": 0.3})
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    r = await client.post("/api/chat", json={
        "model": "remote", "stream": False, "tools": [tool], "format": {"type": "object"},
        "options": {"num_predict": 5, "stop": ["x"], "seed": 7, "top_k": 3},
        "messages": [{"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "", "tool_calls": [
                         {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                     {"role": "tool", "tool_name": "get_weather", "content": "sunny"}]})
    body = await r.json()
    assert r.status == 200, body
    assert body["message"] == {"role": "assistant", "content": "Hellothere"}
    assert body["done_reason"] == "stop" and body["prompt_eval_count"] == 11 and body["eval_count"] == 2
    assert body["total_duration"] > 0 and "eval_duration" in body or "prompt_eval_duration" in body
    path, sent, headers = fake.requests[0]
    assert path == "/v1/chat/completions" and sent["model"] == "served-model" and sent["stream"] is True
    assert headers["Authorization"] == "Bearer sekrit"
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 5 and sent["stop"] == ["x"] and sent["seed"] == 7
    assert sent["top_k"] == 3
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert sent["tools"] == [tool]
    msgs = sent["messages"]
    assert msgs[0] == {"role": "system", "content": "be brief"}
    call = msgs[2]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert msgs[3]["role"] == "tool" and msgs[3]["tool_call_id"] == call["id"]
    # an option that cannot reach the upstream is refused, not dropped
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}],
                                             "options": {"num_ctx": 9000}})
    assert r.status == 400 and "num_ctx" in (await r.json())["error"]


async def test_streamed_tool_call_pieces_become_one_call(client, fake):
    await make(client, "remote", f"openai+{fake.url} m")
    fake.reply = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
         "usage": {"prompt_tokens": 4, "completion_tokens": 9}}]
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "w?"}]})
    lines = [json.loads(x) for x in (await r.text()).splitlines()]
    calls = [c for x in lines for c in x["message"].get("tool_calls", [])]
    assert calls == [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 9
    # and through /v1: the OpenAI shape again, with the upstream's call id
    r = await client.post("/v1/chat/completions", json={"model": "remote", "messages": [{"role": "user", "content": "w?"}]})
    body = await r.json()
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}


async def test_openai_sse_and_generate(client, fake):
    await make(client, "remote", f"openai+{fake.url} m")
    r = await client.post("/v1/chat/completions", json={
        "model": "remote", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 4,
        "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]})
    text = await r.text()
    assert r.headers["Content-Type"].startswith("text/event-stream") and text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(b[6:]) for b in text.split("\n\n")[:-2]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hellothere"
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert fake.requests[-1][1]["max_tokens"] == 4 and fake.requests[-1][1]["response_format"] == {"type": "json_object"}
    # generate: the prompt goes as a user turn (the upstream applies its template) ...
    r = await client.post("/api/generate", json={"model": "remote", "prompt": "hi", "system": "s", "stream": False})
    body = await r.json()
    assert body["response"] == "Hellothere" and body["done"] is True
    assert fake.requests[-1][0] == "/v1/chat/completions"
    assert fake.requests[-1][1]["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    # ... raw text as it is to /completions
    r = await client.post("/api/generate", json={"model": "remote", "prompt": "1 2", "raw": True})
    lines = [json.loads(x) for x in (await r.text()).splitlines()]
    assert "".join(x["response"] for x in lines) == "Hellothere" and lines[-1]["done"]
    assert fake.requests[-1][0] == "/v1/completions" and fake.requests[-1][1]["prompt"] == "1 2"
    r = await client.post("/v1/completions", json={"model": "remote", "prompt": "x"})
    assert (await r.json())["choices"][0]["text"] == "Hellothere"
    r = await client.post("/api/generate", json={"model": "remote", "prompt": "x", "suffix": "y"})
    assert r.status == 400 and "suffix" in (await r.json())["error"]


async def test_embed(client, fake):
    await make(client, "remote", f"openai+{fake.url} emb")
    body = await (await client.post("/api/embed", json={"model": "remote", "input": ["a", "b"]})).json()
    assert body["embeddings"] == [[0.6, 0.8], [0.6, 0.8]] and body["prompt_eval_count"] == 7
    assert fake.requests[-1][1] == {"input": ["a", "b"], "model": "emb"}
    body = await (await client.post("/v1/embeddings", json={"model": "remote", "input": "a"})).json()
    assert body["data"][0]["embedding"] == [0.6, 0.8] and body["usage"]["prompt_tokens"] == 7


async def test_upstream_errors_keep_their_status(client, fake):
    await make(client, "remote", f"openai+{fake.url} m api_key=$UNSET_KEY_X")
    fake.status, fake.error = 400, {"error": {"message": "Context too long", "type": "invalid_request_error"}}
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    err = (await r.json())["error"]
    assert r.status == 400 and "Context too long" in err and fake.url in err
    r = await client.post("/v1/chat/completions", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 400 and "Context too long" in (await r.json())["error"]["message"]
    fake.status, fake.error = 401, {"error": "unauthorized"}
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    err = (await r.json())["error"]
    assert r.status == 502 and "api key" in err and "UNSET_KEY_X" in err
    fake.status, fake.error = 500, {"detail": "boom"}
    r = await client.post("/api/generate", json={"model": "remote", "prompt": "hi"})
    assert r.status == 502 and "boom" in (await r.json())["error"]


async def test_failover_and_all_down(client, fake):
    dead = dead_url()
    await make(client, "remote", f"openai+{dead} m", f"openai+{fake.url} m")
    for _ in range(2):
        r = await client.post("/api/chat", json={"model": "remote", "stream": False,
                                                 "messages": [{"role": "user", "content": "hi"}]})
        assert r.status == 200 and (await r.json())["message"]["content"] == "Hellothere"
    assert len(fake.requests) == 2
    metrics = await (await client.get("/metrics")).text()
    assert f'ollamalike_upstream_errors_total{{model="remote:latest",upstream="{dead}"}} 1' in metrics
    assert f'ollamalike_upstream_up{{model="remote:latest",upstream="{dead}"}} 0' in metrics
    assert f'ollamalike_upstream_requests_total{{model="remote:latest",upstream="{fake.url}"}} 2' in metrics
    assert f'ollamalike_upstream_request_seconds_count{{model="remote:latest",upstream="{fake.url}"}} 2' in metrics
    await fake.server.close()
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    err = (await r.json())["error"]
    assert r.status == 502 and dead in err and fake.url in err and "no upstream of model 'remote:latest'" in err


async def test_busy_upstreams_are_503(client, fake, fake2):
    await make(client, "remote", f"openai+{fake.url} m", f"openai+{fake2.url} m")
    fake.status = fake2.status = 503
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 503 and fake.url in (await r.json())["error"]
    fake2.status = 200  # a 503 is retried on the next upstream
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200


async def test_least_outstanding_balancing(client, fake, fake2):
    await make(client, "remote", f"openai+{fake.url} m", f"openai+{fake2.url} m")
    fake.delay = fake2.delay = 0.3

    async def one():
        r = await client.post("/api/chat", json={"model": "remote", "stream": False,
                                                 "messages": [{"role": "user", "content": "hi"}]})
        assert r.status == 200
    await asyncio.gather(*(one() for _ in range(6)))
    assert len(fake.requests) == 3 and len(fake2.requests) == 3
    # one at a time, ties are taken in turn
    fake.requests.clear(), fake2.requests.clear()
    fake.delay = fake2.delay = 0.0
    for _ in range(4):
        await one()
    assert (len(fake.requests), len(fake2.requests)) == (2, 2)
    # while a slow request holds one upstream, the next ones all go to the idle one
    fake.requests.clear(), fake2.requests.clear()
    fake.requests.clear(), fake2.requests.clear()
    fake.delay = fake2.delay = 1.5
    slow = asyncio.ensure_future(one())
    while not fake.requests and not fake2.requests:
        await asyncio.sleep(0.01)
    busy, idle = (fake, fake2) if fake.requests else (fake2, fake)
    idle.delay = 0.0
    for _ in range(4):
        await one()
    await slow
    assert (len(busy.requests), len(idle.requests)) == (1, 4)


async def test_health_check_puts_a_down_upstream_last(client, fake, fake2):
    await make(client, "remote", f"openai+{fake.url} m", f"openai+{fake2.url} m")
    ups = client.server.app[CORE].upstreams
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200
    pool = next(iter(ups.pools.values()))
    fake.health_status = 500
    assert [await ups.check(b) for b in pool.backends] == [False, True]
    assert [b.ref.url for b in pool.order()] == [fake2.url, fake.url]
    fake.health_status = 200
    assert await ups.check(pool.backends[0]) is True


async def test_ps_shows_an_upstream_model_in_use(client, fake):
    await make(client, "remote", f"openai+{fake.url} m")
    assert (await (await client.get("/api/ps")).json())["models"] == []
    await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    ps = (await (await client.get("/api/ps")).json())["models"]
    assert [p["name"] for p in ps] == ["remote:latest"] and ps[0]["size"] == 0
    assert ps[0]["upstreams"][0]["url"] == fake.url
    r = await client.post("/api/chat", json={"model": "remote", "messages": [], "keep_alive": 0, "stream": False})
    assert (await r.json())["done_reason"] == "unload"
    assert (await (await client.get("/api/ps")).json())["models"] == []


async def test_images_think_and_other_front_ends(client, fake):
    await make(client, "remote", f"openai+{fake.url} m")
    r = await client.post("/api/chat", json={"model": "remote", "stream": False, "think": False, "messages": [
        {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}]})
    assert r.status == 200, await r.text()
    sent = fake.requests[-1][1]
    assert sent["messages"][0]["content"] == [{"type": "text", "text": "what is this?"}, {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    assert sent["chat_template_kwargs"] == {"enable_thinking": False} and sent["reasoning_effort"] == "none"
    # Anthropic's Messages and OpenAI's Responses go through the same core call
    r = await client.post("/v1/messages", json={"model": "remote", "max_tokens": 9,
                                                "messages": [{"role": "user", "content": "hi"}]})
    body = await r.json()
    assert r.status == 200 and body["content"][0]["text"] == "Hellothere", body
    assert fake.requests[-1][1]["max_tokens"] == 9
    r = await client.post("/v1/responses", json={"model": "remote", "input": "hi"})
    body = await r.json()
    assert r.status == 200 and "Hellothere" in json.dumps(body["output"]), body


async def test_error_event_mid_stream_frees_the_upstream(client, fake):
    await make(client, "remote", f"openai+{fake.url} m")
    fake.reply = [{"choices": [{"index": 0, "delta": {"content": "par"}}]},
                  {"error": {"message": "the upstream ran out of memory"}}]
    r = await client.post("/api/chat", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
    lines = [json.loads(x) for x in (await r.text()).splitlines()]
    assert lines[0]["message"]["content"] == "par" and "ran out of memory" in lines[-1]["error"]
    pool = next(iter(client.server.app[CORE].upstreams.pools.values()))
    assert pool.backends[0].outstanding == 0


def test_llama_server_build_is_cached_outside_the_repo(tmp_path):
    """bench/build_llama_server.sh answers from its cache without building; a missing compiler is named."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "build_llama_server.sh"
    exe = tmp_path / "llama-server-0.3.36" / "bin" / "llama-server"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "OLLAMALIKE_LLAMA_SERVER_CACHE": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == str(exe)
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "dirname", "mkdir", "mktemp", "rm"):
        (bare / tool).symlink_to(f"/bin/{tool}" if Path(f"/bin/{tool}").exists() else f"/usr/bin/{tool}")
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30,
                         env={"PATH": str(bare), "OLLAMALIKE_LLAMA_SERVER_CACHE": str(tmp_path / "empty")})
    assert out.returncode == 2 and "cmake not found" in out.stderr


async def test_an_upstream_that_is_not_openai_is_a_clear_502(client, aiohttp_server):
    async def html(request):
        return web.Response(text="<html>hello</html>", content_type="text/html")
    app = web.Application()
    app.router.add_post("/v1/chat/completions", html)
    server = await aiohttp_server(app)
    await make(client, "web", f"openai+http://127.0.0.1:{server.port}/v1 m")
    r = await client.post("/api/chat", json={"model": "web", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 502 and "other than JSON" in (await r.json())["error"]


async def test_a_silent_upstream_times_out_with_a_502_naming_it(aiohttp_client, aiohttp_server, tmp_path, factory,
                                                                 monkeypatch):
    async def silent(request):
        await asyncio.sleep(60)  # accepts the request, never answers
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", silent)
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}/v1"
    monkeypatch.setenv("OLLAMALIKE_UPSTREAM_HEALTH_INTERVAL", "0")
    monkeypatch.setenv("OLLAMALIKE_UPSTREAM_READ_TIMEOUT", "1s")
    client = await aiohttp_client(create_app(tmp_path / "models", spawn=factory))
    await make(client, "quiet", f"openai+{url} m")
    t0 = asyncio.get_running_loop().time()
    r = await client.post("/api/chat", json={"model": "quiet", "messages": [{"role": "user", "content": "hi"}]})
    body = await r.json()
    assert r.status == 502 and url in body["error"] and "timed out" in body["error"], body
    assert asyncio.get_running_loop().time() - t0 < 10
