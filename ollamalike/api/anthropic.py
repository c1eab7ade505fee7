"""Anthropic Messages wire models (/v1/messages) and pure converters to and from the native types.

A Messages request becomes a native `ChatRequest` (so it runs through the same `Core.run` as /api/chat);
Core events (`{"content"}`, `{"thinking"}`, `{"tool_calls"}`, final `{"done"}`) become a `message` or
Anthropic's SSE event sequence. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

from pydantic import ConfigDict, Field

from ollamalike.api.openai import call_schema
from ollamalike.api.types import PRIORITY, ChatRequest, _Request
from ollamalike.errors import BadRequest

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               503: "overloaded_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`."""
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class _Body(_Request):
    """Anthropic request bodies: the native parse, worded as Anthropic's API words a missing field."""

    model_config = ConfigDict(extra="ignore", populate_by_name=False)

    @classmethod
    def _missing(cls, where: str) -> str | None:
        return f"{where}: Field required"


class CountTokensRequest(_Body):
    model: str = Field(min_length=1)
    messages: list[Any]
    system: str | list[Any] | None = None
    tools: list[Any] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, description="the most tokens to generate (required, as in Anthropic's API)")
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None
    # extensions, as on /v1/chat/completions
    options: dict[str, Any] | None = Field(None, description="native runner options (extension)")
    keep_alive: float | str | None = Field(None, description="how long to keep the model loaded (extension)")
    priority: int | None = Field(None, description=PRIORITY)


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's `content`: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{where}: expected a string or an array of content blocks")
    for i, b in enumerate(content):
        if not isinstance(b, dict) or not isinstance(b.get("type"), str):
            raise BadRequest(f"{where}.{i}: expected a content block object with a 'type'")
    return content


def _image(block: dict[str, Any], where: str) -> str:
    src = block.get("source")
    if not isinstance(src, dict):
        raise BadRequest(f"{where}.source: Field required")
    if src.get("type") != "base64":
        raise BadRequest(f"{where}: image source type {src.get('type')!r} is not supported, "
                         "send base64 image data")
    data = src.get("data")
    try:
        base64.b64decode(data or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        data = None
    if not data:
        raise BadRequest(f"{where}: invalid base64 image data")
    return data


def _text(content: Any, where: str) -> tuple[str, list[str]]:
    """Text and images of a tool_result's content (a string or text/image blocks)."""
    if content is None:
        return "", []
    texts, images = [], []
    for i, b in enumerate(_blocks(content, where)):
        if b["type"] == "text":
            texts.append(str(b.get("text", "")))
        elif b["type"] == "image":
            images.append(_image(b, f"{where}.{i}"))
    return "\n".join(texts), images


def system_text(system: str | list[Any] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(str(b.get("text", "")) for b in _blocks(system, "system") if b["type"] == "text")


def messages(raw: list[Any], system: str | list[Any] | None = None) -> list[dict[str, Any]]:
    """Anthropic messages as native ones: tool_use blocks become the assistant's tool_calls, each
    tool_result becomes a `tool` message (before the user's own text, as it answers the last turn)."""
    out: list[dict[str, Any]] = []
    sys = system_text(system)
    if sys:
        out.append({"role": "system", "content": sys})
    names: dict[str, str] = {}  # tool_use id -> tool name
    for i, m in enumerate(raw):
        where = f"messages.{i}"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: expected 'user' or 'assistant'")
        texts, images, calls, thinking, results = [], [], [], "", []
        for j, b in enumerate(_blocks(m.get("content"), f"{where}.content")):
            kind, at = b["type"], f"{where}.content.{j}"
            if kind == "text":
                texts.append(str(b.get("text", "")))
            elif kind == "image":
                images.append(_image(b, at))
            elif kind == "tool_use":
                if not b.get("id") or not b.get("name"):
                    raise BadRequest(f"{at}: a tool_use block needs 'id' and 'name'")
                args = b.get("input") if b.get("input") is not None else {}
                if not isinstance(args, dict):
                    raise BadRequest(f"{at}.input: expected an object")
                names[str(b["id"])] = str(b["name"])
                calls.append({"function": {"name": str(b["name"]), "arguments": args}})
            elif kind == "tool_result":
                text, imgs = _text(b.get("content"), f"{at}.content")
                if b.get("is_error") and not text.startswith("Error"):
                    text = f"Error: {text}"
                call_id = str(b.get("tool_use_id") or "")
                results.append({"role": "tool", "content": text, "tool_call_id": call_id,
                                **({"tool_name": names[call_id]} if call_id in names else {}),
                                **({"images": imgs} if imgs else {})})
            elif kind == "thinking":
                thinking += str(b.get("thinking", ""))
            elif kind == "redacted_thinking":
                pass  # opaque to us; nothing to show the model
            else:
                raise BadRequest(f"{at}: content block type '{kind}' is not supported")
        out.extend(results)
        if texts or images or calls or thinking or not results:
            msg: dict[str, Any] = {"role": m["role"], "content": "".join(texts)}
            if images:
                msg["images"] = images
            if calls:
                msg["tool_calls"] = calls
            if thinking:
                msg["thinking"] = thinking
            out.append(msg)
    return out


def tools(raw: list[Any] | None) -> list[dict[str, Any]]:
    """Anthropic tools (name, description, input_schema) as native function tools. Server tools
    (web_search_..., code_execution_...) run on Anthropic's side: agents send them unasked, so they are
    left out."""
    out = []
    for i, t in enumerate(raw or []):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise BadRequest(f"tools.{i}.name: Field required")
        if t.get("type") not in (None, "custom"):
            continue
        schema = t.get("input_schema") if t.get("input_schema") is not None else {"type": "object"}
        if not isinstance(schema, dict):
            raise BadRequest(f"tools.{i}.input_schema: expected an object")
        out.append({"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                                      "parameters": schema}})
    return out


def forced_format(native_tools: list[dict[str, Any]], choice: dict[str, Any] | None) -> dict[str, Any] | None:
    """The call-shaped JSON schema that forces a tool call (`any` or a named `tool`), used as a grammar."""
    kind = (choice or {}).get("type", "auto")
    if kind == "tool":
        name = choice.get("name")  # type: ignore[union-attr]
        for t in native_tools:
            if t["function"]["name"] == name:
                return call_schema(t)
        raise BadRequest(f"tool_choice: tool '{name}' is not in tools")
    if kind == "any" and native_tools:
        schemas = [call_schema(t) for t in native_tools]
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if kind not in ("auto", "any", "none"):
        raise BadRequest(f"tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got {kind!r}")
    return None


def _think(thinking: dict[str, Any] | None) -> bool | None:
    kind = (thinking or {}).get("type")
    return {"enabled": True, "disabled": False}.get(kind) if kind else None


def to_chat(req: CountTokensRequest) -> ChatRequest:
    """The native chat request of a Messages (or count_tokens) request."""
    native: dict[str, Any] = {"model": req.model, "messages": messages(req.messages, req.system),
                              "stream": bool(getattr(req, "stream", False))}
    opts: dict[str, Any] = {}
    if isinstance(req, MessagesRequest):
        opts["num_predict"] = req.max_tokens
        for key in ("temperature", "top_p", "top_k"):
            if getattr(req, key) is not None:
                opts[key] = getattr(req, key)
        if req.stop_sequences:
            opts["stop"] = req.stop_sequences
        opts |= {k: v for k, v in (req.options or {}).items() if v is not None}
        if req.keep_alive is not None:
            native["keep_alive"] = req.keep_alive
        if req.priority is not None:
            native["priority"] = req.priority
    native["options"] = opts
    fns = tools(req.tools)
    if fns and (req.tool_choice or {}).get("type") != "none":
        native["tools"] = fns
        fmt = forced_format(fns, req.tool_choice)
        if fmt is not None:
            native["format"] = fmt
    think = _think(req.thinking)
    if think is not None:
        native["think"] = think
    return ChatRequest.parse(native)


# --- answers ----------------------------------------------------------------------------
def stop_reason(done: dict[str, Any], called: bool, stops: list[str] | None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of the final Core event."""
    if called:
        return "tool_use", None
    if done.get("done_reason") == "length":
        return "max_tokens", None
    hit = done.get("stop_sequence")
    if hit and hit in (stops or []):  # the model's own stop strings (its template's) are a natural end
        return "stop_sequence", hit
    return "end_turn", None


def usage(done: dict[str, Any]) -> dict[str, int]:
    """Prompt tokens served from the prefix cache count as `cache_read_input_tokens`, as Anthropic's do."""
    total, cached = int(done.get("prompt_eval_count") or 0), int(done.get("prompt_cached_count") or 0)
    cached = min(cached, total)
    return {"input_tokens": total - cached, "output_tokens": int(done.get("eval_count") or 0),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": new_id("toolu"), "name": call["function"]["name"],
            "input": call["function"].get("arguments") or {}}


def _message(msg_id: str, model: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}


def message(model: str, events: list[dict[str, Any]], stops: list[str] | None = None) -> dict[str, Any]:
    """A whole `message` from the collected Core events."""
    thinking = "".join(e.get("thinking", "") for e in events)
    text = "".join(e.get("content", "") for e in events)
    calls = [c for e in events for c in e.get("tool_calls", [])]
    done = next((e for e in events if e.get("done")), {})
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if text or not calls:
        content.append({"type": "text", "text": text})
    content += [_tool_use(c) for c in calls]
    out = _message(new_id("msg"), model, content)
    out["stop_reason"], out["stop_sequence"] = stop_reason(done, bool(calls), stops)
    return out | {"usage": usage(done)}


class MessageStream:
    """Core events -> Anthropic's SSE events, as `(event name, data)` pairs: `message_start`, then per
    content block `content_block_start`/`_delta`.../`_stop` (thinking, text, one per tool_use),
    then `message_delta` (stop_reason, usage) and `message_stop`."""

    def __init__(self, model: str, stops: list[str] | None = None):
        self.id, self.model, self.stops = new_id("msg"), model, stops
        self.started = False
        self.index = -1
        self.open: str | None = None  # the type of the block being streamed
        self.calls = 0

    def _start(self) -> list[tuple[str, dict[str, Any]]]:
        if self.started:
            return []
        self.started = True
        return [("message_start", {"type": "message_start", "message": _message(self.id, self.model, [])})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _block(self, kind: str, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Open a block of `kind` unless one is open already."""
        if self.open == kind:
            return []
        out = self._close()
        self.index += 1
        self.open = kind
        return out + [("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}

    def convert(self, ev: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = self._start()
        if ev.get("thinking"):
            out += self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": ev["thinking"]}))
        if ev.get("content"):
            out += self._block("text", {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": ev["content"]}))
        for call in ev.get("tool_calls") or []:
            block = _tool_use(call)
            args = json.dumps(block["input"], ensure_ascii=False)
            out += self._close() + self._block("tool_use", block | {"input": {}})
            out += [self._delta({"type": "input_json_delta", "partial_json": args})] + self._close()
            self.calls += 1
        if ev.get("done"):
            if self.index < 0:  # nothing generated: one empty text block, as Anthropic answers
                out += self._block("text", {"type": "text", "text": ""})
            out += self._close()
            reason, seq = stop_reason(ev, self.calls > 0, self.stops)
            out.append(("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": reason, "stop_sequence": seq},
                                          "usage": usage(ev)}))
            out.append(("message_stop", {"type": "message_stop"}))
        return out
