"""The real `openai` SDK's Responses API (`client.responses.create`) against the real daemon and SmolLM2.

Greedy and few tokens; a tool call is forced through `tool_choice` and structured output through
`text.format` (grammars in the runner), since the model is tiny.
"""

from __future__ import annotations

import json

import openai
import pytest
from openai import OpenAI

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                          "required": ["city"]}}
COLOR_SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                                 "count": {"type": "integer", "minimum": 0, "maximum": 9}},
                "required": ["color", "count"], "additionalProperties": False}


@pytest.fixture(scope="module")
def oai(daemon):
    return OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_create_and_stream(oai):
    kw = dict(model=MODEL, instructions="You are a helpful assistant.", temperature=0, max_output_tokens=12,
              input=[{"role": "user", "content": [{"type": "input_text", "text": "What is the capital of France?"}]}])
    r = oai.responses.create(**kw)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL
    assert r.output_text and r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.status in ("completed", "incomplete") and r.instructions == "You are a helpful assistant."
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    events = list(oai.responses.create(**kw, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == r.output_text  # greedy: streamed and whole answers agree
    assert events[-1].type == f"response.{r.status}" and events[-1].response.output_text == text
    # the SDK's stream helper, with a plain string input and enough room to finish
    with oai.responses.stream(model=MODEL, input="What is 2+2?", temperature=0, max_output_tokens=60) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(deltas) != ""


def test_max_output_tokens_is_incomplete(oai):
    r = oai.responses.create(model=MODEL, input="Tell me a long story.", temperature=0, max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3


def test_tool_round_trip(oai):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = oai.responses.create(model=MODEL, input=ask, tools=[WEATHER], temperature=0, max_output_tokens=60,
                             tool_choice={"type": "function", "name": "get_weather"})
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "get_weather" and call.call_id and isinstance(json.loads(call.arguments)["city"], str)
    events = list(oai.responses.create(model=MODEL, input=ask, tools=[WEATHER], temperature=0,
                                       max_output_tokens=60, tool_choice="required", stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(args) == json.loads(call.arguments) and done.arguments == args
    # the call and its output go back as items; the model answers in text
    r2 = oai.responses.create(model=MODEL, tools=[WEATHER], temperature=0, max_output_tokens=20, input=ask + [
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    assert r2.output_text


def test_text_format_json_schema(oai):
    r = oai.responses.create(model=MODEL, temperature=0, max_output_tokens=40,
                             input="Name a color and a small number, as JSON.",
                             text={"format": {"type": "json_schema", "name": "color", "schema": COLOR_SCHEMA}})
    value = json.loads(r.output_text)
    assert value["color"] in ("red", "green", "blue") and 0 <= value["count"] <= 9
    assert r.text.format.type == "json_schema"


def test_errors(oai):
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as exc:
        oai.responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
    assert "stateless" in exc.value.message
    # reasoning.effort on a model that cannot think runs without thinking (agents always send it)
    r = oai.responses.create(model=MODEL, input="hi", reasoning={"effort": "medium"}, max_output_tokens=3)
    assert r.output_text and not any(o.type == "reasoning" for o in r.output)
