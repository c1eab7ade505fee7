"""The real `anthropic` SDK against the real daemon and SmolLM2 (/v1/messages, count_tokens).

The model is tiny, so shapes that matter are forced: a tool call through `tool_choice` (a grammar in
the runner), greedy sampling, few tokens.
"""

from __future__ import annotations

import base64

import anthropic
import pytest

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                            "required": ["city"]}}
GREEDY = {"temperature": 0}  # this SDK no longer has sampling arguments; the API still takes them
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(daemon):
    return anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0, timeout=120)


def test_messages_plain_and_streamed(client):
    m = client.messages.create(model=MODEL, max_tokens=12, extra_body=GREEDY, messages=ASK,
                               system=[{"type": "text", "text": "You are a helpful assistant."}])
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL and m.id.startswith("msg_")
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens > 0 and m.usage.output_tokens > 0
    with client.messages.stream(model=MODEL, max_tokens=12, extra_body=GREEDY, messages=ASK,
                                system=[{"type": "text", "text": "You are a helpful assistant."}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == m.content[0].text  # greedy: streamed and whole answers agree
    assert final.stop_reason == m.stop_reason and final.usage.output_tokens == m.usage.output_tokens
    # stream=True: the raw event sequence
    events = list(client.messages.create(model=MODEL, max_tokens=3, extra_body=GREEDY, messages=ASK, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start" and kinds[-2:] == [
        "message_delta", "message_stop"]
    assert kinds[-3] == "content_block_stop" and "content_block_delta" in kinds
    assert events[-2].delta.stop_reason == "max_tokens" and events[-2].usage.output_tokens == 3


def test_stop_sequences(client):
    m = client.messages.create(model=MODEL, max_tokens=30, extra_body=GREEDY, messages=[
        {"role": "user", "content": "Count from 1 to 9, separated by commas."}])
    text = m.content[0].text
    assert "3" in text, text  # the model counts; stopping at "3" then is the stop sequence's doing
    m = client.messages.create(model=MODEL, max_tokens=30, extra_body=GREEDY, stop_sequences=["3"], messages=[
        {"role": "user", "content": "Count from 1 to 9, separated by commas."}])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "3"
    assert m.content[0].text == text[:text.index("3")]


def test_tool_use_round_trip(client):
    m = client.messages.create(model=MODEL, max_tokens=60, extra_body=GREEDY, tools=[WEATHER],
                               tool_choice={"type": "tool", "name": "get_weather"},
                               messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.id.startswith("toolu_") and isinstance(use.input["city"], str)
    # streamed, the same call arrives as input_json_delta and the SDK assembles it
    with client.messages.stream(model=MODEL, max_tokens=60, extra_body=GREEDY, tools=[WEATHER],
                                tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "What is the weather in Paris?"}]) as s:
        events = list(s)
        final = s.get_final_message()
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and streamed.input == use.input
    # the result goes back as a tool_result block; the model answers in text
    r = client.messages.create(model=MODEL, max_tokens=20, extra_body=GREEDY, tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]}])
    assert r.content[0].type == "text" and r.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_count_tokens_matches_usage(client):
    n = client.messages.count_tokens(model=MODEL, messages=ASK).input_tokens
    m = client.messages.create(model=MODEL, max_tokens=1, extra_body=GREEDY, messages=ASK)
    assert n > 5 and n == m.usage.input_tokens + m.usage.cache_read_input_tokens
    with_tools = client.messages.count_tokens(model=MODEL, messages=ASK, tools=[WEATHER]).input_tokens
    assert with_tools > n + 20  # the tools are part of the rendered prompt


def test_errors(client):
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    assert exc.value.body["error"]["type"] == "not_found_error" and "not found" in exc.value.message
    with pytest.raises(anthropic.BadRequestError) as exc:  # max_tokens is required, as on Anthropic's API
        client.post("/v1/messages", body={"model": MODEL, "messages": ASK}, cast_to=object)
    assert exc.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                         "message": "max_tokens: Field required"}}
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(b"\x89PNG fake").decode()}}]}])
    assert "does not support vision" in exc.value.message
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}])
    assert "send base64 image data" in exc.value.message
