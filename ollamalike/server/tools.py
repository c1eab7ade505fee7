"""Reading a model's raw output: tool calls in the model's own conventions, and `<think>` blocks.

Tool calls are recognised in the styles the common templates teach their models:
- Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` anywhere in the reply;
- Llama 3 JSON: the whole reply is `{"name": ..., "parameters"|"arguments": {...}}` (or a list of them);
- Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`.
Text that might be the start of a call is held back while streaming, so a call never leaks as content.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from ollamalike import template as templates

OPEN, CLOSE = "<tool_call>", "</tool_call>"
MISTRAL = "[TOOL_CALLS]"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def tool_names(tools: list[dict[str, Any]] | None) -> set[str]:
    out = set()
    for t in tools or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out.add(fn["name"])
    return out


def template_knows_tools(template: str | None) -> bool:
    if not template:
        return False
    go_caps = templates.go_capabilities(template)
    if go_caps is not None:  # a Go template renders tools when it reads .Tools
        return "tools" in go_caps
    return "tools" in template or "tool_call" in template


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """Hermes-style tool instructions, for models whose own template does not render tools."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("You may call one or more functions to assist with the user query. The available functions are:\n"
            f"<tools>\n{listing}\n</tools>\n"
            "To call a function, reply with a JSON object inside <tool_call></tool_call> tags:\n"
            '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def inline_calls(msg: dict[str, Any]) -> dict[str, Any]:
    """An assistant message's tool calls written back as Hermes text, for templates without tools."""
    if not msg.get("tool_calls"):
        return msg
    text = "".join(f"{OPEN}\n" + json.dumps({"name": tc["function"]["name"],
                                              "arguments": tc["function"].get("arguments", {})},
                                             ensure_ascii=False) + f"\n{CLOSE}" for tc in msg["tool_calls"])
    return {**{k: v for k, v in msg.items() if k != "tool_calls"}, "content": (msg.get("content") or "") + text}


def _held(text: str, tags: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could be the start of one of `tags`."""
    best = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), 0, -1):
            if text.endswith(tag[:k]):
                best = max(best, k)
                break
    return best


def _as_calls(value: Any, names: set[str]) -> list[dict[str, Any]] | None:
    """Tool calls from decoded JSON (an object or a list of them), or None if it is not calls."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        if names and item["name"] not in names:
            return None
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append({"name": item["name"], "arguments": args})
    return calls or None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


class ToolParser:
    """Feed text pieces; get back (content to show, tool calls found). Call `finish` at the end."""

    def __init__(self, tools: list[dict[str, Any]] | None):
        self.names = tool_names(tools)
        self.state = "start"  # start -> text | json | tag | mistral
        self.buf = ""
        self.count = 0

    def _call(self, c: dict[str, Any]) -> dict[str, Any]:
        out = {"id": "call_" + secrets.token_hex(4),
               "function": {"index": self.count, "name": c["name"], "arguments": c["arguments"]}}
        self.count += 1
        return out

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self.buf += text
        out, calls = [], []
        while True:
            if self.state == "start":
                stripped = self.buf.lstrip()
                if not stripped:
                    return "", calls
                if stripped.startswith(MISTRAL):
                    self.state, self.buf = "mistral", stripped[len(MISTRAL):]
                elif MISTRAL.startswith(stripped):
                    return "", calls
                elif stripped[0] in "{[":
                    self.state, self.buf = "json", stripped
                else:
                    self.state = "text"
            if self.state == "text":
                i = self.buf.find(OPEN)
                if i < 0:
                    keep = _held(self.buf, (OPEN,))
                    out.append(self.buf[: len(self.buf) - keep])
                    self.buf = self.buf[len(self.buf) - keep:]
                    return "".join(out), calls
                out.append(self.buf[:i])
                self.state, self.buf = "tag", self.buf[i + len(OPEN):]
            if self.state == "tag":
                j = self.buf.find(CLOSE)
                if j < 0:
                    return "".join(out), calls
                found = _as_calls(_loads(self.buf[:j].strip()), self.names)
                if found:
                    calls += [self._call(c) for c in found]
                else:
                    out.append(OPEN + self.buf[: j + len(CLOSE)])
                self.state, self.buf = "text", self.buf[j + len(CLOSE):]
                continue
            if self.state == "json":
                found = _as_calls(_loads(self.buf.strip()), self.names)
                if found:  # a complete call: later text is ordinary content
                    calls += [self._call(c) for c in found]
                    self.state, self.buf = "text", ""
                return "".join(out), calls
            if self.state == "mistral":
                found = _as_calls(_loads(self.buf.strip()), self.names)
                if found:
                    calls += [self._call(c) for c in found]
                    self.state, self.buf = "text", ""
                return "".join(out), calls

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """Whatever is still held back: an unterminated `<tool_call>` that parses is a call,
        anything else turns out to be plain content."""
        text, self.buf = self.buf, ""
        state, self.state = self.state, "text"
        if state == "tag":
            found = _as_calls(_loads(text.strip()), self.names)
            return ("", [self._call(c) for c in found]) if found else (OPEN + text, [])
        if state == "mistral":
            return MISTRAL + text, []
        return text, []


class ThinkSplitter:
    """Splits `<think>...</think>` blocks out of a reply into thinking and content: the one a reply
    starts with, and any the model opens later (after a tool result, between answers)."""

    def __init__(self, opened: bool = False):
        self.state = "think" if opened else "start"
        self.buf = ""
        self.trim = opened  # drop the whitespace right after a tag, however it is split

    def _trim(self) -> None:
        if self.trim:
            self.buf = self.buf.lstrip()
            self.trim = not self.buf

    def feed(self, text: str) -> tuple[str, str]:
        """(thinking, content) safe to emit so far; a possible start of a tag is held back."""
        self.buf += text
        if self.state == "start":
            stripped = self.buf.lstrip()
            if THINK_OPEN.startswith(stripped) and stripped != THINK_OPEN:
                return "", ""
            self.state = "content"
            if stripped.startswith(THINK_OPEN):
                self.buf = stripped
        thinking = content = ""
        while True:
            tag = THINK_CLOSE if self.state == "think" else THINK_OPEN
            self._trim()
            i = self.buf.find(tag)
            if i < 0:
                keep = _held(self.buf, (tag,))
                part, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep:]
                if self.state == "think":
                    thinking += part
                else:
                    content += part
                return thinking, content
            if self.state == "think":
                thinking += self.buf[:i]
                self.state = "content"
            else:
                content += self.buf[:i]
                self.state = "think"
            self.buf, self.trim = self.buf[i + len(tag):], True

    def finish(self) -> tuple[str, str]:
        text, self.buf = self.buf, ""
        return (text, "") if self.state == "think" else ("", text)


async def parse_output(events: AsyncIterator[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                       think: ThinkSplitter | None = None, keep_thinking: bool = True
                       ) -> AsyncIterator[dict[str, Any]]:
    """Runner events in, daemon events out: `{"content"}`, `{"thinking"}` and `{"tool_calls"}` pieces,
    then the final `{"done": ...}` record (done_reason unchanged)."""
    parser = ToolParser(tools) if tools else None

    def split(text: str, final: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if think is not None:
            thinking, text = think.finish() if final else think.feed(text)
            if thinking and keep_thinking:
                out.append({"thinking": thinking})
        if parser is not None:
            content, calls = parser.feed(text) if text else ("", [])
            if final:
                more, late = parser.finish()
                content, calls = content + more, calls + late
            if content:
                out.append({"content": content})
            if calls:
                out.append({"tool_calls": calls})
        elif text:
            out.append({"content": text})
        return out

    async for ev in events:
        if "content" in ev:
            outs = split(ev["content"])
            if "logprobs" in ev:  # ride on this token's text, or travel alone while it is held back
                texts = [o for o in outs if "content" in o]
                if texts:
                    texts[0]["logprobs"] = ev["logprobs"]
                else:
                    outs.append({"logprobs": ev["logprobs"]})
            for out in outs:
                yield out
        elif ev.get("done"):
            for out in split("", final=True):
                yield out
            yield ev
        else:
            yield ev
