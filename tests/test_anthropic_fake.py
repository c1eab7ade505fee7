"""/v1/messages (Anthropic) against the real app with a fake runner: the prompt each request becomes,
the SSE event sequence (thinking, text, tool_use), the error shape and the x-api-key header."""

from __future__ import annotations

import json


from ollamalike.server.app import create_app
from tests.fakes import named_events
from tests.test_api_fake import TEMPLATE, create

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
WEATHER = {"name": "get_weather", "description": "weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


events = named_events


async def test_request_becomes_the_native_chat(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = ["Sunny it is"]
    r = await client.post("/v1/messages", headers={"anthropic-version": "2023-06-01"}, json={
        "model": "tiny", "max_tokens": 7, "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 7,
        "messages": [{"role": "user", "content": "weather?"},
                     {"role": "assistant", "content": [
                         {"type": "text", "text": "Let me look."},
                         {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                     {"role": "user", "content": [
                         {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21 C"}]},
                         {"type": "text", "text": "and so?"}]}]})
    body = await r.json()
    assert r.status == 200, body
    assert body["content"] == [{"type": "text", "text": "Sunny it is"}] and body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 3, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0}
    payload = factory.spawned[0].payloads[0]
    assert payload["options"]["num_predict"] == 7 and payload["options"]["stop"] == ["END"]
    assert (payload["options"]["temperature"], payload["options"]["top_p"], payload["options"]["top_k"]) == (0.5, 0.9, 7)
    # the tool result is a tool message before the user's own words, right after the call it answers
    assert payload["prompt"] == ("<system>Be brief.</system><user>weather?</user><assistant>Let me look.</assistant>"
                                 "<tool>21 C</tool><user>and so?</user><assistant>")


async def test_stream_thinking_text_and_tool_use(client, tmp_path, factory):
    await create(client, tmp_path, template=TEMPLATE + "{# <think> #}")
    factory.replies = ["<think>hmm</think> Calling. " + CALL]
    r = await client.post("/v1/messages", json={"model": "tiny", "max_tokens": 50, "stream": True,
                                                "thinking": {"type": "enabled", "budget_tokens": 1024},
                                                "tools": [WEATHER], "messages": [{"role": "user", "content": "w?"}]})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    evs = events(await r.text())
    names = [n for n, _ in evs]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [d["content_block"]["type"] for n, d in evs if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    # every block is opened, then deltas, then closed, with increasing indexes
    order = [(n, d["index"]) for n, d in evs if n.startswith("content_block")]
    assert [i for _, i in order] == sorted(i for _, i in order)
    assert [n for n, _ in order if n != "content_block_delta"] == ["content_block_start", "content_block_stop"] * 3
    deltas = [d["delta"] for n, d in evs if n == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "hmm"
    assert "".join(d.get("text", "") for d in deltas).strip() == "Calling."
    assert json.loads("".join(d.get("partial_json", "") for d in deltas)) == {"city": "Paris"}
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use" and evs[-2][1]["usage"]["output_tokens"] > 0
    tool_start = next(d["content_block"] for n, d in evs if n == "content_block_start" and d["index"] == 2)
    assert tool_start["name"] == "get_weather" and tool_start["input"] == {} and tool_start["id"].startswith("toolu_")
    # thinking disabled: no thinking block at all
    factory.replies = ["<think>hmm</think> Plain."]
    r = await client.post("/v1/messages", json={"model": "tiny", "max_tokens": 50, "thinking": {"type": "disabled"},
                                                "messages": [{"role": "user", "content": "w?"}]})
    assert [b["type"] for b in (await r.json())["content"]] == ["text"]


async def test_tool_choice(client, tmp_path, factory):
    await create(client, tmp_path)
    second = {**WEATHER, "name": "get_time"}
    base = {"model": "tiny", "max_tokens": 20, "messages": [{"role": "user", "content": "w?"}],
            "tools": [WEATHER, second]}
    for choice, check in [({"type": "tool", "name": "get_time"},
                           lambda f: f["properties"]["name"] == {"const": "get_time"}),
                          ({"type": "any"}, lambda f: len(f["anyOf"]) == 2),
                          ({"type": "auto"}, lambda f: f is None)]:
        r = await client.post("/v1/messages", json=base | {"tool_choice": choice})
        assert r.status == 200
        assert check(factory.spawned[0].payloads[-1].get("format")), choice
    r = await client.post("/v1/messages", json=base | {"tool_choice": {"type": "none"}})
    assert "get_weather" not in factory.spawned[0].payloads[-1]["prompt"]
    r = await client.post("/v1/messages", json=base | {"tools": [{"type": "web_search_20250305", "name": "web_search"},
                                                                 WEATHER]})
    assert r.status == 200 and "web_search" not in factory.spawned[0].payloads[-1]["prompt"]  # a server tool
    r = await client.post("/v1/messages", json=base | {"tool_choice": {"type": "tool", "name": "nope"}})
    assert r.status == 400 and "nope" in (await r.json())["error"]["message"]


async def test_errors_in_anthropic_shape(client, tmp_path, factory):
    await create(client, tmp_path)
    cases = [({"model": "tiny", "messages": [{"role": "user", "content": "x"}]}, 400, "max_tokens: Field required"),
             ({"model": "tiny", "max_tokens": 5}, 400, "messages: Field required"),
             ({"model": "missing", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, 404, "not found"),
             ({"model": "tiny", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, "role"),
             ({"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": [
                 {"type": "document", "source": {}}]}]}, 400, "'document' is not supported"),
             ({"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": [
                 {"type": "image", "source": {"type": "base64", "data": "!!"}}]}]}, 400, "invalid base64"),
             ({"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": [
                 {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}]}]},
              400, "does not support vision")]
    kinds = {400: "invalid_request_error", 404: "not_found_error"}
    for body, status, words in cases:
        r = await client.post("/v1/messages", json=body)
        got = await r.json()
        assert r.status == status and got["type"] == "error", got
        assert got["error"]["type"] == kinds[status] and words in got["error"]["message"], got
    r = await client.post("/v1/messages", data=b"{not json")
    assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
    # a failure after the stream began is an `error` event
    factory.crash_after = 1
    r = await client.post("/v1/messages", json={"model": "tiny", "max_tokens": 5, "stream": True,
                                                "messages": [{"role": "user", "content": "x"}]})
    evs = events(await r.text())
    assert evs[-1][0] == "error" and evs[-1][1]["error"]["type"] == "api_error"


async def test_x_api_key(aiohttp_client, tmp_path, factory, monkeypatch):
    monkeypatch.setenv("OLLAMALIKE_API_KEYS", "k1")
    client = await aiohttp_client(create_app(tmp_path / "models", spawn=factory))
    body = {"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    r = await client.post("/v1/messages", json=body, headers={"x-api-key": "wrong"})
    got = await r.json()
    assert r.status == 401 and got["error"]["type"] == "authentication_error" and "x-api-key" in got["error"]["message"]
    r = await client.post("/v1/messages", json=body, headers={"x-api-key": "k1"})
    assert r.status == 404  # past the key check: the model does not exist
    assert (await client.get("/api/tags", headers={"x-api-key": "k1"})).status == 200
    assert (await client.get("/api/tags", headers={"Authorization": "Bearer k1"})).status == 200


async def test_thinking_relaxed_and_count_tokens(client, tmp_path, factory):
    await create(client, tmp_path)  # a template without <think>: the model cannot think
    r = await client.post("/v1/messages", json={"model": "tiny", "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 2048}})
    assert r.status == 200, await r.text()  # Claude Code asks for thinking whatever the model
    r = await client.post("/v1/messages/count_tokens", json={
        "model": "tiny", "system": "S", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status == 200 and (await r.json()) == {"input_tokens": 1 + len("<system>S</system><user>hello</user><assistant>")}
    r = await client.post("/v1/messages/count_tokens", json={
        "model": "tiny", "tools": [WEATHER], "messages": [{"role": "user", "content": "hello"}]})
    assert (await r.json())["input_tokens"] > 100 and "get_weather" in factory.spawned[0].tokenized[-1]
    r = await client.post("/v1/messages/count_tokens", json={"model": "missing", "messages": []})
    assert r.status == 404 and (await r.json())["error"]["type"] == "not_found_error"
