"""Real clients against the real daemon and SmolLM2: openai, ollama (Python and npm), langchain-ollama.

The model is tiny, so answers whose shape matters are forced: structured output through `format` /
`response_format` (a grammar in the runner) and tool calls through a forced `tool_choice` or a
call-shaped `format`, all greedy.
"""

from __future__ import annotations

import json
import subprocess

import ollama
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.conftest import NODE_DIR, node_with_ollama_npm

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}}


class Color(BaseModel):
    color: str
    count: int


COLOR_SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                                 "count": {"type": "integer", "minimum": 0, "maximum": 9}},
                "required": ["color", "count"], "additionalProperties": False}


@pytest.fixture(scope="module")
def oai(daemon):
    return OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_chat_and_stream(oai):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = oai.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=12, seed=1)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    chunks = list(oai.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=12, seed=1,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content  # greedy: streamed and whole answers agree
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    r = oai.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2


def test_openai_completions_and_models(oai):
    r = oai.completions.create(model=MODEL, prompt="The sky is", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model=MODEL, prompt="The sky is", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text
    ids = [m.id for m in oai.models.list().data]
    assert MODEL in ids
    assert oai.models.retrieve(MODEL).id == MODEL


def test_openai_json_schema_parses_and_validates(oai):
    r = oai.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=40,
        messages=[{"role": "user", "content": "Name a color and a small number, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "color", "schema": COLOR_SCHEMA}})
    value = Color.model_validate_json(r.choices[0].message.content)
    assert value.color in ("red", "green", "blue") and 0 <= value.count <= 9


def test_openai_forced_tool_call(oai):
    r = oai.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=60, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    args = json.loads(call.function.arguments)  # a JSON string on the OpenAI API
    assert isinstance(args["city"], str)
    # the result goes back as a tool message; the model answers in text
    r2 = oai.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=20, tools=[WEATHER],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}, choice.message.model_dump(),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}])
    assert r2.choices[0].message.content is not None


def test_openai_embeddings(oai):
    r = oai.embeddings.create(model=MODEL, input=["The sky is blue.", "Grass is green."])  # base64 by default
    assert [d.index for d in r.data] == [0, 1] and r.usage.prompt_tokens > 0
    v = r.data[0].embedding
    assert len(v) > 100 and abs(sum(x * x for x in v) - 1) < 1e-3
    f = oai.embeddings.create(model=MODEL, input="The sky is blue.", encoding_format="float", dimensions=8)
    assert len(f.data[0].embedding) == 8 and abs(sum(x * x for x in f.data[0].embedding) - 1) < 1e-3


def test_openai_errors(oai):
    import openai

    with pytest.raises(openai.NotFoundError) as exc:
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "not found" in exc.value.message
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[])


def test_ollama_client_format_and_tools(ollama_client):
    r = ollama_client.chat(model=MODEL, format=COLOR_SCHEMA, options={"temperature": 0, "num_predict": 40},
                           messages=[{"role": "user", "content": "Name a color and a small number, as JSON."}])
    assert Color.model_validate_json(r.message.content).color in ("red", "green", "blue")
    call_schema = {"type": "object", "required": ["name", "arguments"], "properties": {
        "name": {"const": "get_weather"}, "arguments": WEATHER["function"]["parameters"]}}
    r = ollama_client.chat(model=MODEL, tools=[WEATHER], format=call_schema,
                           options={"temperature": 0, "num_predict": 60},
                           messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert r.message.content == "" and r.message.tool_calls
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    r = ollama_client.chat(model=MODEL, tools=[WEATHER], options={"temperature": 0, "num_predict": 16},
                           messages=[{"role": "user", "content": "Weather in Paris?"},
                                     {"role": "assistant", "tool_calls": [call]},
                                     {"role": "tool", "tool_name": "get_weather", "content": "sunny"}])
    assert r.done and isinstance(r.message.content, str)
    with pytest.raises(ollama.ResponseError) as exc:
        ollama_client.chat(model=MODEL, messages=[{"role": "user", "content": "x", "images": ["aGVsbG8="]}])
    assert exc.value.status_code == 400 and "vision" in exc.value.error


def test_langchain_chat_ollama(daemon):
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model=MODEL, base_url=daemon.url, temperature=0, num_predict=12, seed=1)
    msg = llm.invoke("Say hello.")
    assert isinstance(msg.content, str) and msg.content
    assert msg.usage_metadata["output_tokens"] > 0
    streamed = "".join(c.content for c in llm.stream("Say hello."))
    assert streamed == msg.content
    structured = ChatOllama(model=MODEL, base_url=daemon.url, temperature=0, num_predict=40,
                            format=COLOR_SCHEMA).invoke("Name a color and a small number, as JSON.")
    assert Color.model_validate_json(structured.content)


def test_node_ollama_client(daemon):
    node = node_with_ollama_npm()
    out = subprocess.run([node, "smoke.mjs", daemon.url, MODEL], cwd=NODE_DIR, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert MODEL in res["list"] and "completion" in res["show"]
    assert res["chat"]["role"] == "assistant" and res["chat"]["content"]
    assert res["chatStream"]["done"] is True and res["chatStream"]["text"] == res["chat"]["content"]
    assert res["generate"] and res["format"]["color"] in ("red", "green", "blue")
    assert res["create"][-1] == "success"
    assert "node-copy:latest" not in res["after"] and "node-copy2:latest" not in res["after"]


def test_logprobs_native_and_openai(daemon, ollama_client):
    from openai import OpenAI

    r = ollama_client.generate(model="smollm2:135m", prompt="The capital of France is", raw=True,
                               options={"temperature": 0, "num_predict": 5}, logprobs=True, top_logprobs=3)
    assert len(r.logprobs) == 5
    first = r.logprobs[0]
    assert first.logprob <= 0 and len(first.top_logprobs) == 3
    assert first.top_logprobs[0].logprob >= first.top_logprobs[1].logprob >= first.top_logprobs[2].logprob
    assert first.top_logprobs[0].token == first.token  # greedy takes the most likely token
    assert "".join(x.token for x in r.logprobs) == r.response
    stream = list(ollama_client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "Hi"}],
                                     options={"temperature": 0, "num_predict": 4}, logprobs=True, stream=True))
    assert sum(len(c.logprobs or []) for c in stream) == 4
    client = OpenAI(base_url=daemon.url + "/v1", api_key="unused")
    chat = client.chat.completions.create(model="smollm2:135m", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and len(content[0].top_logprobs) == 2
    comp = client.completions.create(model="smollm2:135m", prompt="The capital of France is", max_tokens=3,
                                     temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and len(lp.top_logprobs[0]) == 2
    with pytest.raises(Exception) as err:
        ollama_client.generate(model="smollm2:135m", prompt="x", logprobs=True, top_logprobs=21)
    assert "top_logprobs must be between 0 and 20" in str(err.value)
