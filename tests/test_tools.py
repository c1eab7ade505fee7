"""The output parsers on fixed strings: tool calls in each model convention, and <think> splitting."""

from __future__ import annotations

import pytest

from ollamalike.server.tools import ThinkSplitter, ToolParser, inline_calls, tools_system_prompt

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def run(text: str, pieces: int = 3, tools=TOOLS) -> tuple[str, list[dict]]:
    """Feed `text` in small pieces (as a stream would) and collect the content and calls."""
    p = ToolParser(tools)
    content, calls = [], []
    for i in range(0, len(text), pieces):
        c, k = p.feed(text[i:i + pieces])
        content.append(c)
        calls += k
    c, k = p.finish()
    return "".join(content) + c, calls + k


def simple(calls):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


@pytest.mark.parametrize("pieces", [1, 2, 5, 1000])
def test_hermes_tool_call(pieces):
    text = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    content, calls = run(text, pieces)
    assert content == "Let me check."
    assert simple(calls) == [("get_weather", {"city": "Paris"})]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["index"] == 0


def test_hermes_several_calls_and_unterminated():
    text = ('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    content, calls = run(text)
    assert simple(calls) == [("add", {"a": 1}), ("get_weather", {"city": "Oslo"})]
    assert [c["function"]["index"] for c in calls] == [0, 1]
    assert content.strip() == ""


def test_llama3_json_styles():
    assert simple(run('{"name": "get_weather", "parameters": {"city": "Rome"}}')[1]) == [
        ("get_weather", {"city": "Rome"})]
    assert simple(run(' [{"name": "add", "arguments": "{\\"a\\": 2}"}]')[1]) == [("add", {"a": 2})]


def test_mistral_style():
    content, calls = run('[TOOL_CALLS] [{"name": "add", "arguments": {"a": 3}}]')
    assert simple(calls) == [("add", {"a": 3})] and content == ""


def test_not_a_call_is_content():
    for text in ('{"answer": 42}', '{"name": "unknown_tool", "arguments": {}}', "plain <tool text",
                 "<tool_call>not json</tool_call> after", "[1, 2, 3]"):
        content, calls = run(text)
        assert calls == [] and content == text, text


def test_no_tools_given_accepts_any_name():
    assert simple(run('{"name": "anything", "arguments": {}}', tools=[{"type": "function"}])[1]) == [
        ("anything", {})]


SPLITS = [  # (reply, its thinking, its content)
    ("<think>\nLet me think.\n</think>\n\nThe answer.", "Let me think.\n", "The answer."),
    # anywhere in the reply, not only at its start; a longer word like <thinking> stays text
    ("First part. <think>second thoughts</think> Second part; a < b and <thinking> is text.",
     "second thoughts", "First part. Second part; a < b and <thinking> is text."),
]


@pytest.mark.parametrize("pieces", [1, 2, 3, 5, 100])
@pytest.mark.parametrize("text,want_thinking,want_content", SPLITS)
def test_think_split(pieces, text, want_thinking, want_content):
    s = ThinkSplitter()
    thinking, content = [], []
    for i in range(0, len(text), pieces):
        t, c = s.feed(text[i:i + pieces])
        thinking.append(t)
        content.append(c)
    t, c = s.finish()
    assert "".join(thinking) + t == want_thinking
    assert "".join(content) + c == want_content


def test_think_opened_by_prompt_and_absent():
    s = ThinkSplitter(opened=True)
    assert s.feed("a</think>b") == ("a", "b")
    s = ThinkSplitter()
    assert s.feed("Hello") == ("", "Hello")
    s = ThinkSplitter()
    assert s.feed("<thi") == ("", "") and s.finish() == ("", "<thi")


def test_prompt_helpers():
    text = tools_system_prompt(TOOLS)
    assert "<tools>" in text and '"get_weather"' in text and "<tool_call>" in text
    msg = inline_calls({"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1}}}]})
    assert msg == {"role": "assistant", "content": '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'}
