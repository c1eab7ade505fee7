"""/v1/responses (OpenAI Responses) against the real app with a fake runner: the prompt input items
become, the event sequence with reasoning, text and function calls, and the 400s of a stateless server."""

from __future__ import annotations

import json


from tests.fakes import named_events
from tests.test_api_fake import TEMPLATE, create

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
WEATHER = {"type": "function", "name": "get_weather", "description": "weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def events(text: str) -> list[tuple[str, dict]]:
    out = named_events(text)
    assert [d["sequence_number"] for _, d in out] == list(range(len(out)))
    return out


async def test_input_items_become_the_native_chat(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = ["It is sunny"]
    r = await client.post("/v1/responses", json={
        "model": "tiny", "instructions": "Be brief.", "max_output_tokens": 9, "temperature": 0.2, "top_p": 0.5,
        "tools": [WEATHER],
        "input": [{"role": "developer", "content": "Use tools."},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                  {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                  {"type": "function_call_output", "call_id": "c1", "output": "21 C"}]})
    body = await r.json()
    assert r.status == 200, body
    assert body["object"] == "response" and body["status"] == "completed" and body["previous_response_id"] is None
    assert body["output"][0]["content"][0]["text"] == "It is sunny" and body["output"][0]["status"] == "completed"
    assert body["usage"]["input_tokens"] == 3 and body["usage"]["output_tokens"] == 3
    payload = factory.spawned[0].payloads[0]
    assert payload["options"]["num_predict"] == 9 and payload["options"]["top_p"] == 0.5
    prompt = payload["prompt"]
    assert prompt.startswith("<system>Be brief.\n\n")  # the instructions (the tools taught after them)
    assert "</system><system>Use tools.</system><user>weather?</user>" in prompt  # developer is a system turn
    assert "<user>weather?</user><assistant><tool_call>" in prompt and '"Paris"' in prompt  # the call, replayed
    assert prompt.endswith("<tool>21 C</tool><assistant>")


async def test_stream_reasoning_text_and_function_call(client, tmp_path, factory):
    await create(client, tmp_path, template=TEMPLATE + "{# <think> #}")
    factory.replies = ["<think>hmm</think> Calling. " + CALL]
    r = await client.post("/v1/responses", json={"model": "tiny", "input": "w?", "stream": True,
                                                 "reasoning": {"effort": "high"}, "tools": [WEATHER]})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    evs = events(await r.text())
    names = [n for n, _ in evs]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    added = [d["item"]["type"] for n, d in evs if n == "response.output_item.added"]
    done = [d["item"]["type"] for n, d in evs if n == "response.output_item.done"]
    assert added == done == ["reasoning", "message", "function_call"]
    assert [d["output_index"] for n, d in evs if n == "response.output_item.done"] == [0, 1, 2]
    assert "".join(d["delta"] for n, d in evs if n == "response.reasoning_summary_text.delta") == "hmm"
    assert "".join(d["delta"] for n, d in evs if n == "response.output_text.delta").strip() == "Calling."
    args = "".join(d["delta"] for n, d in evs if n == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    final = evs[-1][1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["name"] == "get_weather" and final["output"][2]["call_id"]
    assert final["usage"]["total_tokens"] == final["usage"]["input_tokens"] + final["usage"]["output_tokens"]
    # the same answer whole
    factory.replies = ["<think>hmm</think> Calling. " + CALL]
    r = await client.post("/v1/responses", json={"model": "tiny", "input": "w?", "reasoning": {"effort": "low"},
                                                 "tools": [WEATHER]})
    assert [o["type"] for o in (await r.json())["output"]] == ["reasoning", "message", "function_call"]
    assert factory.spawned[0].payloads[-1]["prompt"].count("get_weather") == 1  # one tool listing


async def test_formats_and_tool_choice(client, tmp_path, factory):
    await create(client, tmp_path)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    base = {"model": "tiny", "input": "x", "tools": [WEATHER, {**WEATHER, "name": "get_time"}]}
    for extra, fmt in [({"text": {"format": {"type": "json_schema", "name": "a", "schema": schema}}}, schema),
                       ({"text": {"format": {"type": "json_object"}}}, "json"),
                       ({"tool_choice": "required"}, lambda f: len(f["anyOf"]) == 2),
                       ({"tool_choice": {"type": "function", "name": "get_time"}},
                        lambda f: f["properties"]["name"] == {"const": "get_time"}),
                       ({"tool_choice": "auto"}, None)]:
        r = await client.post("/v1/responses", json=base | extra)
        assert r.status == 200, await r.text()
        got = factory.spawned[0].payloads[-1].get("format")
        assert fmt(got) if callable(fmt) else got == fmt, extra
    # hosted tools (run on OpenAI's side) are left out, not refused: agents send them unasked
    r = await client.post("/v1/responses", json=base | {"tools": [{"type": "web_search"}, WEATHER]})
    assert r.status == 200 and "web_search" not in factory.spawned[0].payloads[-1]["prompt"]


async def test_errors(client, tmp_path, factory):
    await create(client, tmp_path)
    cases = [({"model": "tiny", "input": "x", "previous_response_id": "resp_1"}, 400, "stateless"),
             ({"model": "tiny", "input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "references"),
             ({"model": "tiny", "input": "x", "reasoning": {"effort": "huge"}}, 400, "reasoning.effort"),
             ({"model": "tiny", "input": [{"type": "function_call", "name": "f", "arguments": "{"}]}, 400, "not JSON"),
             ({"model": "tiny"}, 400, "'input' is required"),
             ({"model": "missing", "input": "x"}, 404, "not found")]
    for body, status, words in cases:
        r = await client.post("/v1/responses", json=body)
        got = await r.json()
        assert r.status == status and words in got["error"]["message"], (body, got)
    factory.crash_after = 1
    r = await client.post("/v1/responses", json={"model": "tiny", "input": "x", "stream": True})
    evs = events(await r.text())
    assert evs[-1][0] == "error" and "crash" in evs[-1][1]["message"]
