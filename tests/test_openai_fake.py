"""/v1 (OpenAI), tools, thinking, format and access control against the real app with a fake runner."""

from __future__ import annotations

import json

import pytest

from ollamalike.server.app import create_app
from tests.test_api_fake import TEMPLATE, create

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def sse_events(text: str) -> list:
    assert text.endswith("data: [DONE]\n\n")
    blocks = text.split("\n\n")[:-1]
    assert all(b.startswith("data: ") for b in blocks)
    return [json.loads(b[6:]) for b in blocks[:-1]]


async def test_chat_completions_non_stream(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = ["Hello there"]
    r = await client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 5, "seed": 7, "stop": "x", "temperature": 0, "num_ctx": 1024})
    body = await r.json()
    assert r.status == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    opts = factory.spawned[0].payloads[0]["options"]
    assert opts["num_predict"] == 5 and opts["seed"] == 7 and opts["stop"] == ["x"] and opts["temperature"] == 0
    assert factory.spawned[0].spec.num_ctx == 1024


async def test_chat_completions_stream_with_usage(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = ["a b c"]
    r = await client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.headers["Content-Type"].startswith("text/event-stream")
    chunks = sse_events(await r.text())
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert "".join(d.get("content", "") for d in deltas) == "a b c"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert len({c["id"] for c in chunks}) == 1


async def test_tool_calls_openai_and_native(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = [CALL, CALL, CALL]
    r = await client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "weather?"}], "tools": [TOOL]})
    choice = (await r.json())["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert "<tools>" in factory.spawned[0].prompts[-1]  # the template has no tools: Hermes fallback
    r = await client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "weather?"}], "tools": [TOOL], "stream": True})
    chunks = sse_events(await r.text())
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    r = await client.post("/api/chat", json={"model": "tiny", "stream": False, "tools": [TOOL],
                                             "messages": [{"role": "user", "content": "weather?"}]})
    msg = (await r.json())["message"]
    assert msg["content"] == "" and msg["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}


async def test_tool_history_and_forced_tool_choice(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = ['{"name": "get_weather", "arguments": {"city": "Oslo"}}']
    r = await client.post("/v1/chat/completions", json={
        "model": "tiny", "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [{"role": "user", "content": "weather?"},
                     {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                         "name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})
    assert (await r.json())["choices"][0]["finish_reason"] == "tool_calls"
    payload = factory.spawned[0].payloads[-1]
    assert payload["format"]["properties"]["name"] == {"const": "get_weather"}
    assert '"city": "Rome"' in payload["prompt"] and "<tool>sunny</tool>" in payload["prompt"]


async def test_response_format_and_native_format(client, tmp_path, factory):
    await create(client, tmp_path)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    factory.replies = ['{"a": 1}'] * 4
    await client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                    "response_format": {"type": "json_object"}})
    await client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}})
    await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "format": schema, "stream": False})
    await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "format": "", "stream": False})
    formats = [p.get("format") for p in factory.spawned[0].payloads]
    assert formats == ["json", schema, schema, None]


async def test_thinking_split(client, tmp_path, factory):
    await create(client, tmp_path, template=TEMPLATE + "{# <think> #}")
    factory.replies = ["<think>hmm, ok</think> Answer."] * 3
    r = await client.post("/api/chat", json={"model": "tiny", "stream": False,
                                             "messages": [{"role": "user", "content": "q"}]})
    msg = (await r.json())["message"]
    assert msg["thinking"] == "hmm, ok" and msg["content"] == "Answer."
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "q", "think": False, "stream": False})
    body = await r.json()
    assert body["response"] == "Answer." and "thinking" not in body
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "q"}]})
    assert (await r.json())["choices"][0]["message"]["reasoning"] == "hmm, ok"


async def test_completions_and_models(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = ["x y", "x y"]
    r = await client.post("/v1/completions", json={"model": "tiny", "prompt": "Once", "max_tokens": 3})
    body = await r.json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "x y"
    r = await client.post("/v1/completions", json={"model": "tiny", "prompt": "Once", "stream": True})
    chunks = sse_events(await r.text())
    assert "".join(c["choices"][0]["text"] for c in chunks) == "x y"
    models = await (await client.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny:latest"
    assert models["data"][0]["owned_by"] == "library" and models["data"][0]["created"] > 0
    one = await (await client.get("/v1/models/tiny:latest")).json()
    assert one["id"] == "tiny:latest" and one["object"] == "model"


@pytest.mark.parametrize("method,path,body,status,etype", [
    ("post", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404,
     "not_found_error"),
    ("post", "/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "invalid_request_error"),
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "invalid_request_error"),
    ("post", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400, "invalid_request_error"),
    ("post", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, "invalid_request_error"),
    ("post", "/v1/completions", {"model": "tiny", "prompt": ["a", "b"]}, 400, "invalid_request_error"),
    ("get", "/v1/models/nope", None, 404, "not_found_error"),
])
async def test_openai_errors(client, tmp_path, method, path, body, status, etype):
    await create(client, tmp_path)
    r = await getattr(client, method)(path, json=body)
    err = (await r.json())["error"]
    assert r.status == status and err["type"] == etype and err["message"] and "param" in err and "code" in err


async def test_native_variants(client, tmp_path, factory):
    await create(client, tmp_path)
    r = await client.post("/api/chat", json={"name": "tiny", "stream": False, "keep_alive": "10m", "messages": [
        {"role": "user"}, {"role": "tool", "tool_name": "f", "content": "1"},
        {"role": "tool", "tool_call_id": "x", "content": "2"}], "options": {"num_ctx": 100000, "top_k": None}})
    assert r.status == 200, await r.text()
    r = await client.post("/api/chat", json={"model": "tiny", "keep_alive": 30, "stream": False,
                                             "messages": [{"role": "user", "content": "x", "images": ["AAAA"]}]})
    assert r.status == 400 and "vision" in (await r.json())["error"]
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "think": True})
    assert r.status == 400 and "thinking" in (await r.json())["error"]


async def test_cors_and_host(aiohttp_client, tmp_path, factory, monkeypatch):
    monkeypatch.setenv("OLLAMALIKE_ORIGINS", "https://*.example.com")
    client = await aiohttp_client(create_app(tmp_path / "models", spawn=factory, bind_host="127.0.0.1"))
    ok = ["http://localhost:3000", "https://127.0.0.1", "app://obsidian.md", "tauri://localhost",
          "vscode-webview://abc", "https://chat.example.com"]
    for origin in ok:
        r = await client.get("/api/tags", headers={"Origin": origin})
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == origin, origin
        r = await client.options("/api/chat", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert r.status == 204 and "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    for origin in ["https://evil.com", "chrome-extension://abc"]:
        assert (await client.get("/api/tags", headers={"Origin": origin})).status == 403
    for host in ["localhost:11434", "127.0.0.1", "[::1]:1", "10.1.2.3", "box.local", "foo.localhost"]:
        assert (await client.get("/api/tags", headers={"Host": host})).status == 200, host
    for host in ["evil.com", "attacker.example:11434", "8.8.8.8"]:
        assert (await client.get("/api/tags", headers={"Host": host})).status == 403, host
    open_client = await aiohttp_client(create_app(tmp_path / "m2", spawn=factory, bind_host="0.0.0.0"))
    assert (await open_client.get("/api/tags", headers={"Host": "evil.com"})).status == 200


async def test_api_keys(aiohttp_client, tmp_path, factory, monkeypatch):
    monkeypatch.setenv("OLLAMALIKE_API_KEYS", "k1, k2")
    client = await aiohttp_client(create_app(tmp_path / "models", spawn=factory))
    assert (await client.get("/")).status == 200
    r = await client.get("/api/tags")
    assert r.status == 401 and "API key" in (await r.json())["error"]
    r = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error"
    assert (await client.get("/api/tags", headers={"Authorization": "Bearer k2"})).status == 200


async def test_embeddings_float_base64_dimensions(client, tmp_path, factory):
    import base64
    import struct

    await create(client, tmp_path)
    r = await client.post("/v1/embeddings", json={"model": "tiny", "input": ["ab", "abcd"]})
    body = await r.json()
    assert r.status == 200 and body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    v = body["data"][0]["embedding"]
    assert abs(sum(x * x for x in v) - 1) < 1e-6 and body["usage"]["prompt_tokens"] == 6
    r = await client.post("/v1/embeddings", json={"model": "tiny", "input": "ab", "encoding_format": "base64",
                                                  "dimensions": 2})
    raw = base64.b64decode((await r.json())["data"][0]["embedding"])
    assert [round(x, 4) for x in struct.unpack("<2f", raw)] == [0.6, 0.8]
    for bad in ({"model": "tiny", "input": []}, {"model": "tiny", "input": "x", "encoding_format": "hex"}):
        r = await client.post("/v1/embeddings", json=bad)
        assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
