"""Prompt building in the daemon with a fake runner: Go templates from a create, whole messages
dropped to fit num_ctx (the fake runner counts one token per word), truncate:false, think."""

from __future__ import annotations

import pytest

import asyncio
import json
import time

from tests.test_api_fake import client, create  # noqa: F401  (fixtures)

CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
          "<|im_start|>assistant\n")


@pytest.fixture(autouse=True)
def _count_words(factory):
    factory.tokenize_words = True  # these tests count a prompt's length in words


def chat(n: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You are Zorblax the pirate."}]
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": f"msg-{i} " + "word " * 10})
    return msgs


async def test_go_template_from_create_renders_messages(client, tmp_path, factory):
    await create(client, tmp_path, "gochat", template=CHATML)
    r = await client.post("/api/chat", json={"model": "gochat", "stream": False,
                                             "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200, await r.text()
    assert factory.spawned[-1].prompts[-1] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


async def test_long_chat_drops_oldest_messages_but_keeps_system(client, tmp_path, factory):
    await create(client, tmp_path, "gochat", template=CHATML)
    msgs = chat(29)  # system + 29 messages of 11 words each: ~330 words
    r = await client.post("/api/chat", json={"model": "gochat", "stream": False, "messages": msgs,
                                             "options": {"num_ctx": 64}})
    assert r.status == 200, await r.text()
    prompt = factory.spawned[-1].prompts[-1]
    assert prompt.startswith("<|im_start|>system\nYou are Zorblax the pirate.<|im_end|>\n")
    assert "msg-28" in prompt and "msg-0 " not in prompt
    assert len(prompt.split()) <= 64
    kept = prompt.count("<|im_start|>") - 2  # less the system turn and the generation prompt
    # the largest suffix that fits: one more message would not
    assert len(prompt.split()) + 11 > 64 and 0 < kept < 29


async def test_truncate_false_refuses_what_does_not_fit(client, tmp_path, factory):
    await create(client, tmp_path, "gochat", template=CHATML)
    body = {"model": "gochat", "stream": False, "messages": chat(29), "options": {"num_ctx": 64}, "truncate": False}
    r = await client.post("/api/chat", json=body)
    assert r.status == 400
    assert (await r.json())["error"] == "the input length exceeds the context length"
    r = await client.post("/api/generate", json={"model": "gochat", "stream": False, "prompt": "word " * 100,
                                                 "options": {"num_ctx": 64}, "truncate": False})
    assert r.status == 400
    r = await client.post("/api/chat", json={**body, "messages": chat(2)})
    assert r.status == 200


async def test_think_reaches_go_template(client, tmp_path, factory):
    tmpl = ("{{ range .Messages }}{{ .Content }}{{ end }}|{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}"
            "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}")
    await create(client, tmp_path, "thinker", template=tmpl)
    show = await (await client.post("/api/show", json={"model": "thinker"})).json()
    assert "thinking" in show["capabilities"]
    seen = []
    for think in (None, False, True, "high"):
        body = {"model": "thinker", "stream": False, "messages": [{"role": "user", "content": "q"}]}
        if think is not None:
            body["think"] = think
        r = await client.post("/api/chat", json=body)
        assert r.status == 200, await r.text()
        seen.append(factory.spawned[-1].prompts[-1])
    # unset on a thinking model means on, as in Ollama
    assert seen == ["q|true|medium|true", "q|false||true", "q|true|medium|true", "q|true|high|true"]


async def test_bad_template_is_400_and_does_not_block_the_loop(client, tmp_path, factory):
    await create(client, tmp_path, "gochat", template=CHATML)
    bad = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    task = asyncio.ensure_future(client.post("/api/generate", json={"model": "gochat", "prompt": "x", "template": bad}))
    answered = []
    while not task.done():
        t0 = time.monotonic()
        r = await client.get("/api/version")
        assert r.status == 200
        answered.append((time.monotonic() - t0, task.done()))
        await asyncio.sleep(0.01)
    r = await task
    assert r.status == 400
    assert (await r.json())["error"].startswith("template error: rendering exceeded")
    assert any(not done for _, done in answered), "no /api/version answer while the template rendered"
    r = await client.post("/api/generate", json={"model": "gochat", "prompt": "x", "stream": False,
                                                 "template": "{{ .Prompt "})
    assert r.status == 400 and "template error" in json.loads(await r.text())["error"]


async def test_think_value_is_validated(client, tmp_path, factory):
    await create(client, tmp_path, "gochat", template=CHATML)
    r = await client.post("/api/chat", json={"model": "gochat", "think": "bogus",
                                             "messages": [{"role": "user", "content": "q"}]})
    assert r.status == 400
    assert 'invalid think value: "bogus"' in (await r.json())["error"]


async def test_openai_reasoning_effort_reaches_template(client, tmp_path, factory):
    tmpl = ("{{ range .Messages }}{{ .Content }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}"
            "|{{ .Think }}|{{ .ThinkLevel }}")
    await create(client, tmp_path, "thinker", template=tmpl)
    seen = []
    for extra in ({"reasoning_effort": "minimal"}, {"reasoning": {"effort": "high"}}, {"reasoning_effort": "none"},
                  {"reasoning_effort": "max"}):
        r = await client.post("/v1/chat/completions", json={"model": "thinker", "messages": [
            {"role": "user", "content": "q"}], **extra})
        assert r.status == 200, await r.text()
        seen.append(factory.spawned[-1].prompts[-1])
    assert seen == ["q|true|low", "q|true|high", "q|false|", "q|true|max"]


async def test_create_refuses_a_template_that_does_not_parse(client, tmp_path, factory):
    from tests.test_api_fake import upload
    from tests.ggufwriter import tiny_model
    digest = await upload(client, tiny_model(tmp_path))
    for bad in ("{{ .Prompt ", "{% for m in messages %}"):
        r = await client.post("/api/create", json={"model": "bad", "files": {"tiny.gguf": digest}, "template": bad})
        assert r.status == 400, await r.text()
        assert (await r.json())["error"].startswith("template error:")
    assert (await client.post("/api/show", json={"model": "bad"})).status == 404
