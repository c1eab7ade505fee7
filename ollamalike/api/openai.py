"""OpenAI wire models and pure converters to and from the native requests and `Core` events.

Requests become native `ChatRequest`/`GenerateRequest`s (so every operation runs through the same
`Core` call as /api/*); Core events (`{"content"}`, `{"thinking"}`, `{"tool_calls"}`, final `{"done"}`)
become OpenAI chunks and responses. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ollamalike.api.types import ChatRequest, GenerateRequest, _Request
from ollamalike.durations import parse_duration
from ollamalike.errors import BadRequest
from ollamalike.names import Name

FINGERPRINT = "fp_ollamalike"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error"}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape; `type` follows Ollama's mapping of statuses."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "api_error"), "param": param,
                      "code": None}}


class _Body(_Request):
    """OpenAI request bodies: the native parse, with OpenAI's wording for a missing field."""

    model_config = ConfigDict(extra="ignore", populate_by_name=False)

    @classmethod
    def _missing(cls, where: str) -> str | None:
        return f"'{where}' is required"


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(_Body):
    model: str = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # extensions, since Ollama users ask for them: a context size and any native option
    num_ctx: int | None = Field(None, description="context length for this request (extension)")
    options: dict[str, Any] | None = Field(None, description="native runner options (extension)")
    keep_alive: float | str | None = Field(None, description="how long to keep the model loaded (extension)")
    priority: int | None = Field(None, description="admission order while requests wait, lower first (vLLM's extension)")

    def native_options(self, max_tokens: int | None = None) -> dict[str, Any]:
        """Ollama's mapping: temperature and top_p default to 1.0; max_tokens is num_predict."""
        opts: dict[str, Any] = {"temperature": 1.0 if self.temperature is None else self.temperature,
                                "top_p": 1.0 if self.top_p is None else self.top_p}
        for key in ("seed", "frequency_penalty", "presence_penalty", "num_ctx"):
            if getattr(self, key) is not None:
                opts[key] = getattr(self, key)
        if max_tokens is not None:
            opts["num_predict"] = max_tokens
        if self.stop is not None:
            opts["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        return opts | {k: v for k, v in (self.options or {}).items() if v is not None}

    def native_common(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "stream": bool(self.stream)}
        if self.keep_alive is not None:
            out["keep_alive"] = self.keep_alive
        if self.priority is not None:
            out["priority"] = self.priority
        return out

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    reasoning_effort: str | None = None
    reasoning: dict[str, Any] | None = Field(None, description='{"effort": ...}, as reasoning_effort')
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def think(self) -> bool | str | None:
        """Ollama's reading of `reasoning_effort` / `reasoning.effort`: `none` is off, the
        levels pass, other values are clamped to the nearest level."""
        effort = self.reasoning_effort
        if effort is None and isinstance(self.reasoning, dict):
            effort = self.reasoning.get("effort")
        if not isinstance(effort, str):
            return None
        effort = effort.strip().lower()
        if effort == "none":
            return False
        return effort if effort in ("low", "medium", "high", "max") else \
            {"minimal": "low", "xhigh": "max"}.get(effort, "medium")


class CompletionRequest(_Sampling):
    prompt: str | list[str] = ""
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)


def _obj(value: Any, where: str, required: bool = False) -> dict[str, Any]:
    """`value` when it is a JSON object ({} when absent and optional), else a 400 naming the field."""
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"invalid {where}: expected an object")
    return value


def _image(part: dict[str, Any]) -> str:
    url = part.get("image_url")
    url = url.get("url", "") if isinstance(url, dict) else (url or "")
    if not url.startswith("data:"):
        raise BadRequest("image URLs are not currently supported, please use base64 encoded data instead")
    header, _, data = url.partition(",")
    if ";base64" not in header or not data:
        raise BadRequest("invalid image data: expected a base64 data URL")
    return data


def _messages(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"invalid message at index {i}: 'role' is required")
        msg: dict[str, Any] = {"role": m["role"], "content": ""}
        content = m.get("content")
        if isinstance(content, list):
            texts, images = [], []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(str(part.get("text", "")))
                elif kind == "image_url":
                    images.append(_image(part))
                else:
                    raise BadRequest(f"invalid message content type: {kind}")
            msg["content"] = "\n".join(texts)
            if images:
                msg["images"] = images
        elif content is not None:
            msg["content"] = str(content)
        if m.get("reasoning") or m.get("reasoning_content"):
            msg["thinking"] = m.get("reasoning") or m.get("reasoning_content")
        calls = []
        raw_calls = m.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise BadRequest(f"invalid message at index {i}: 'tool_calls' must be an array")
        for j, tc in enumerate(raw_calls):
            tc = _obj(tc, f"messages[{i}].tool_calls[{j}]", required=True)
            fn = _obj(tc.get("function"), f"messages[{i}].tool_calls[{j}].function")
            args = fn.get("arguments") or "{}"
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    raise BadRequest(f"invalid tool call arguments in message {i}: not JSON") from None
            if not isinstance(args, dict):
                raise BadRequest(f"invalid tool call arguments in message {i}: expected a JSON object")
            if tc.get("id"):
                names[tc["id"]] = fn.get("name", "")
            calls.append({"function": {"name": fn.get("name", ""), "arguments": args}})
        if calls:
            msg["tool_calls"] = calls
        if m["role"] == "tool":
            msg["tool_call_id"] = m.get("tool_call_id")
            name = m.get("name") or names.get(m.get("tool_call_id") or "")
            if name:
                msg["tool_name"] = name
        out.append(msg)
    return out


def _format(rf: dict[str, Any] | None) -> str | dict[str, Any] | None:
    if not rf:
        return None
    kind = rf.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = _obj(rf.get("json_schema"), "response_format.json_schema").get("schema")
        return schema if isinstance(schema, dict) else "json"
    if kind in (None, "text"):
        return None
    raise BadRequest(f"invalid response_format type: {kind}")


def call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one call to `tool`: used as a grammar to force that call."""
    fn = tool.get("function") or {}
    params = fn.get("parameters") or {"type": "object"}
    return {"type": "object", "properties": {"name": {"const": fn.get("name", "")}, "arguments": params},
            "required": ["name", "arguments"]}


def _forced_tool(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """The tool a `tool_choice` forces, so the call can be grammar-constrained."""
    tools = req.tools or []
    choice = req.tool_choice
    if isinstance(choice, dict):
        name = _obj(choice.get("function"), "tool_choice.function", required=True).get("name")
        for t in tools:
            if t["function"].get("name") == name:
                return t
        raise BadRequest(f"tool_choice names an unknown function: {name}")
    if choice == "required" and len(tools) == 1:
        return tools[0]
    return None


def to_chat(req: ChatCompletionRequest) -> ChatRequest:
    native: dict[str, Any] = req.native_common() | {
        "messages": _messages(req.messages),
        "options": req.native_options(req.max_completion_tokens or req.max_tokens)}
    fmt = _format(req.response_format)
    for i, t in enumerate(req.tools or []):
        _obj(_obj(t, f"tools[{i}]", required=True).get("function"), f"tools[{i}].function", required=True)
    if req.tools and req.tool_choice != "none":
        native["tools"] = req.tools
        forced = _forced_tool(req)
        if forced is not None:
            fmt = call_schema(forced)
    if fmt is not None:
        native["format"] = fmt
    if req.think() is not None:
        native["think"] = req.think()
    if req.logprobs:
        native["logprobs"], native["top_logprobs"] = True, req.top_logprobs or 0
    return ChatRequest.parse(native)


def to_generate(req: CompletionRequest) -> GenerateRequest:
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise BadRequest("prompt must be a string or an array of one string")
        prompt = prompt[0]
    native = req.native_common() | {"prompt": prompt, "options": req.native_options(req.max_tokens)}
    if req.suffix:
        native["suffix"] = req.suffix
    if req.logprobs is not None:
        native["logprobs"], native["top_logprobs"] = True, req.logprobs
    return GenerateRequest.parse(native)


# --- responses --------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(done: dict[str, Any]) -> dict[str, int]:
    p, c = int(done.get("prompt_eval_count") or 0), int(done.get("eval_count") or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def finish_reason(done: dict[str, Any], called: bool) -> str:
    if done.get("done_reason") == "length":
        return "length"
    return "tool_calls" if called else "stop"


def tool_calls(calls: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    """Native calls (arguments as an object) as OpenAI's (arguments as a JSON string)."""
    return [{"index": start + i, "id": c.get("id") or "call_" + secrets.token_hex(4), "type": "function",
             "function": {"name": c["function"]["name"],
                          "arguments": json.dumps(c["function"].get("arguments", {}), ensure_ascii=False)}}
            for i, c in enumerate(calls)]


class ChatStream:
    """Core events -> `chat.completion.chunk`s: role on the first delta only, then a final chunk with
    `finish_reason`, then (with include_usage) one usage chunk with no choices."""

    def __init__(self, model: str, include_usage: bool = False):
        self.id, self.created, self.model = new_id("chatcmpl"), int(datetime.now().timestamp()), model
        self.include_usage = include_usage
        self.first = True
        self.calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}

    def convert(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        if "logprobs" in ev and not ev.get("done"):
            chunks = self._convert(ev)
            chunks[0]["choices"][0]["logprobs"] = chat_logprobs(ev["logprobs"])
            return chunks
        return self._convert(ev)

    def _convert(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        if ev.get("done"):
            out = [self._chunk({}, finish_reason(ev, self.calls > 0))]
            if self.include_usage:
                out.append({**self._chunk({}), "choices": [], "usage": usage(ev)})
            return out
        delta: dict[str, Any] = {"role": "assistant"} if self.first else {}
        self.first = False
        if "content" in ev:
            delta["content"] = ev["content"]
        if "thinking" in ev:
            delta["reasoning"] = ev["thinking"]
        if ev.get("tool_calls"):
            delta["tool_calls"] = tool_calls(ev["tool_calls"], self.calls)
            self.calls += len(ev["tool_calls"])
        return [self._chunk(delta)]


def chat_completion(model: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole `chat.completion` from the collected Core events."""
    text = "".join(e.get("content", "") for e in events)
    thinking = "".join(e.get("thinking", "") for e in events)
    calls = [c for e in events for c in e.get("tool_calls", [])]
    done = next((e for e in events if e.get("done")), {})
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["reasoning"] = thinking
    if calls:
        message["tool_calls"] = tool_calls(calls)
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(datetime.now().timestamp()),
            "model": model, "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": _all_logprobs(events, chat_logprobs),
                         "finish_reason": finish_reason(done, bool(calls))}],
            "usage": usage(done)}


class CompletionStream:
    def __init__(self, model: str, include_usage: bool = False):
        self.id, self.created, self.model = new_id("cmpl"), int(datetime.now().timestamp()), model
        self.include_usage = include_usage

    def _chunk(self, text: str, finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    def convert(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        if ev.get("done"):
            out = [self._chunk("", finish_reason(ev, False))]
            if self.include_usage:
                out.append({**self._chunk(""), "choices": [], "usage": usage(ev)})
            return out
        if "logprobs" in ev:
            chunk = self._chunk(ev.get("content", ""))
            chunk["choices"][0]["logprobs"] = completion_logprobs(ev["logprobs"])
            return [chunk]
        return [self._chunk(ev["content"])] if ev.get("content") else []


def completion(model: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    done = next((e for e in events if e.get("done")), {})
    s = CompletionStream(model)
    body = s._chunk("".join(e.get("content", "") for e in events), finish_reason(done, False))
    body["choices"][0]["logprobs"] = _all_logprobs(events, completion_logprobs)
    return body | {"usage": usage(done)}


def chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Native logprob records as chat.completion's `logprobs.content`."""
    return {"content": [{"token": e["token"], "logprob": e["logprob"], "bytes": e.get("bytes"),
                         "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t.get("bytes")}
                                          for t in e.get("top_logprobs", [])]} for e in entries]}


def completion_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Native logprob records in the legacy completions shape."""
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top_logprobs", [])} for e in entries],
            "text_offset": []}


def _all_logprobs(events: list[dict[str, Any]], shape) -> dict[str, Any] | None:
    entries = [x for e in events for x in e.get("logprobs", [])]
    return shape(entries) if entries else None


def model_card(name: str, modified_at: str) -> dict[str, Any]:
    """A `/v1/models` entry from a native tags entry."""
    try:
        created = int(datetime.fromisoformat(modified_at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        created = 0
    try:
        owner = Name.parse(name).namespace
    except Exception:
        owner = "library"
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


# --- embeddings -------------------------------------------------------------------------
class EmbeddingRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None
    priority: int = Field(0, description="admission order while requests wait, lower first (vLLM's extension)")

    def keep_alive_seconds(self) -> float | None:
        if self.keep_alive is None:
            return None
        try:
            return parse_duration(self.keep_alive)
        except ValueError:
            raise BadRequest(f"time: invalid duration {self.keep_alive!r}") from None

    def inputs(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        if not self.input:
            raise BadRequest("invalid input")
        if not all(isinstance(x, str) for x in self.input):
            raise BadRequest("invalid input type: token arrays are not supported, send strings")
        return list(self.input)  # type: ignore[arg-type]


def embedding_list(model: str, vectors: list[list[float]], encoding: str, prompt_tokens: int) -> dict[str, Any]:
    def enc(v: list[float]) -> Any:
        if encoding == "base64":
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        return v
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": enc(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
