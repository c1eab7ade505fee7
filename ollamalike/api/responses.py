"""OpenAI Responses wire models (/v1/responses, stateless as Ollama's) and pure converters.

A Responses request becomes a native `ChatRequest` (the same `Core.run` as /api/chat); Core events
become a `response` object or the Responses SSE events (`response.created` ... `response.completed`).
Nothing here does I/O.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from pydantic import Field

from ollamalike.api.openai import _Body, _image, _obj, call_schema
from ollamalike.api.types import PRIORITY, ChatRequest
from ollamalike.errors import BadRequest

EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class ResponsesRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[Any]
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = False
    previous_response_id: str | None = None
    conversation: Any = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
    # extensions, as on /v1/chat/completions
    options: dict[str, Any] | None = Field(None, description="native runner options (extension)")
    keep_alive: float | str | None = Field(None, description="how long to keep the model loaded (extension)")
    priority: int | None = Field(None, description=PRIORITY)


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """A message item's content (a string or input_text/output_text/input_image parts)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise BadRequest(f"invalid {where}: expected a string or an array of content parts")
    texts, images = [], []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "refusal"):
            texts.append(str(part.get("text", part.get("refusal", ""))))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise BadRequest(f"invalid {where}[{i}]: only base64 data URLs are supported for input_image")
            images.append(_image({"image_url": url}))
        else:
            raise BadRequest(f"invalid {where}[{i}]: content type {kind!r} is not supported")
    return "".join(texts), images


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        args = json.loads(raw or "{}")
    except (json.JSONDecodeError, TypeError):
        raise BadRequest(f"invalid {where}.arguments: not JSON") from None
    if not isinstance(args, dict):
        raise BadRequest(f"invalid {where}.arguments: expected a JSON object")
    return args


def messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """`instructions` and `input` as native messages: function_call items join the assistant turn as
    tool_calls, function_call_output items become tool messages, reasoning items the next turn's thinking."""
    out: list[dict[str, Any]] = []
    if req.instructions:
        out.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        return out + [{"role": "user", "content": req.input}]
    names: dict[str, str] = {}  # call_id -> function name
    thinking = ""
    for i, item in enumerate(req.input):
        where = f"input[{i}]"
        item = _obj(item, where, required=True)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"invalid {where}.role: {role!r}")
            text, images = _content(item.get("content", ""), f"{where}.content")
            msg: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
            if images:
                msg["images"] = images
            if role == "assistant" and thinking:
                msg["thinking"], thinking = thinking, ""
            out.append(msg)
        elif kind == "function_call":
            if not item.get("name"):
                raise BadRequest(f"invalid {where}: a function_call needs a 'name'")
            call = {"function": {"name": str(item["name"]), "arguments": _arguments(item.get("arguments"), where)}}
            names[str(item.get("call_id") or "")] = str(item["name"])
            if out and out[-1]["role"] == "assistant":  # several calls (and their text) are one turn
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
            if thinking:
                out[-1]["thinking"], thinking = thinking, ""
        elif kind == "function_call_output":
            output = item.get("output", "")
            text, images = (output, []) if isinstance(output, str) else _content(output, f"{where}.output")
            call_id = str(item.get("call_id") or "")
            msg = {"role": "tool", "content": text, "tool_call_id": call_id}
            if call_id in names:
                msg["tool_name"] = names[call_id]
            if images:
                msg["images"] = images
            out.append(msg)
        elif kind == "reasoning":
            thinking += "".join(str(s.get("text", "")) for s in item.get("summary") or [] if isinstance(s, dict))
        elif kind == "item_reference":
            raise BadRequest(f"invalid {where}: item references need stored responses, which this server "
                             "does not keep; send the items themselves")
        else:
            raise BadRequest(f"invalid {where}: input item type {kind!r} is not supported")
    return out


def tools(raw: list[Any] | None) -> list[dict[str, Any]]:
    """Responses function tools (flat: name, description, parameters) as native ones. Hosted tools
    (web_search, file_search, ...) run on OpenAI's side: agents send them unasked, so they are left out."""
    out = []
    for i, t in enumerate(raw or []):
        t = _obj(t, f"tools[{i}]", required=True)
        if t.get("type") != "function":
            continue
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise BadRequest(f"invalid tools[{i}]: 'name' is required")
        out.append({"type": "function", "function": {"name": t["name"], "description": t.get("description") or "",
                                                      "parameters": t.get("parameters") or {"type": "object"}}})
    return out


def _format(req: ResponsesRequest, fns: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    """The grammar: a forced tool call (tool_choice), else `text.format`."""
    choice = req.tool_choice
    if fns and isinstance(choice, dict):
        if choice.get("type") != "function":
            raise BadRequest(f"invalid tool_choice type: {choice.get('type')!r}")
        for t in fns:
            if t["function"]["name"] == choice.get("name"):
                return call_schema(t)
        raise BadRequest(f"tool_choice names an unknown function: {choice.get('name')}")
    if fns and choice == "required":
        schemas = [call_schema(t) for t in fns]
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    fmt = _obj(_obj(req.text, "text").get("format"), "text.format")
    kind = fmt.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("invalid text.format: a json_schema format needs a 'schema' object")
        return schema
    if kind not in (None, "text"):
        raise BadRequest(f"invalid text.format type: {kind!r}")
    return None


def think(req: ResponsesRequest) -> bool | str | None:
    effort = _obj(req.reasoning, "reasoning").get("effort")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise BadRequest(f"invalid reasoning.effort: {effort!r} (one of {', '.join(EFFORTS)})")
    return EFFORTS[effort]


def to_chat(req: ResponsesRequest) -> ChatRequest:
    if req.previous_response_id or req.conversation:
        raise BadRequest("previous_response_id and conversation are not supported: this server keeps no "
                         "responses (stateless, as Ollama's); send the whole conversation in 'input'")
    opts: dict[str, Any] = {"temperature": 1.0 if req.temperature is None else req.temperature}
    if req.top_p is not None:
        opts["top_p"] = req.top_p
    if req.max_output_tokens is not None:
        opts["num_predict"] = req.max_output_tokens
    native: dict[str, Any] = {"model": req.model, "messages": messages(req), "stream": bool(req.stream),
                              "options": opts | {k: v for k, v in (req.options or {}).items() if v is not None}}
    if req.keep_alive is not None:
        native["keep_alive"] = req.keep_alive
    if req.priority is not None:
        native["priority"] = req.priority
    fns = tools(req.tools)
    if fns and req.tool_choice != "none":
        native["tools"] = fns
    fmt = _format(req, fns if req.tool_choice != "none" else [])
    if fmt is not None:
        native["format"] = fmt
    level = think(req)
    if level is not None:
        native["think"] = level
    return ChatRequest.parse(native)


# --- answers ----------------------------------------------------------------------------
def usage(done: dict[str, Any]) -> dict[str, Any]:
    p, c = int(done.get("prompt_eval_count") or 0), int(done.get("eval_count") or 0)
    cached = min(int(done.get("prompt_cached_count") or 0), p)
    return {"input_tokens": p, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": c, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [_text_part(text)] if status == "completed" else []}


def _call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {"id": new_id("fc"), "type": "function_call", "status": status, "call_id": call.get("id") or new_id("call"),
            "name": call["function"]["name"],
            "arguments": json.dumps(call["function"].get("arguments") or {}, ensure_ascii=False)}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


class Shell:
    """The `response` object around an output, echoing the request's settings."""

    def __init__(self, req: ResponsesRequest):
        self.req, self.id, self.created = req, new_id("resp"), int(time.time())

    def response(self, output: list[dict[str, Any]], done: dict[str, Any] | None) -> dict[str, Any]:
        req = self.req
        status = "in_progress" if done is None else (
            "incomplete" if done.get("done_reason") == "length" else "completed")
        fmt = _obj(req.text, "text").get("format") or {"type": "text"}
        return {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                "completed_at": int(time.time()) if status == "completed" else None,
                "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
                "model": req.model, "output": output, "parallel_tool_calls": req.parallel_tool_calls is not False,
                "previous_response_id": None, "reasoning": {"effort": _obj(req.reasoning, "reasoning").get("effort"),
                                                            "summary": None},
                "store": False, "temperature": 1.0 if req.temperature is None else req.temperature,
                "text": {"format": fmt}, "tool_choice": req.tool_choice or "auto", "tools": req.tools or [],
                "top_p": 1.0 if req.top_p is None else req.top_p, "truncation": "disabled",
                "usage": usage(done) if done is not None else None, "metadata": req.metadata or {}}


def response(req: ResponsesRequest, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole `response` from the collected Core events."""
    shell = Shell(req)
    thinking = "".join(e.get("thinking", "") for e in events)
    text = "".join(e.get("content", "") for e in events)
    calls = [c for e in events for c in e.get("tool_calls", [])]
    done = next((e for e in events if e.get("done")), {})
    output = [_reasoning_item(new_id("rs"), thinking)] if thinking else []
    if text or not calls:
        output.append(_message_item(new_id("msg"), text))
    output += [_call_item(c) for c in calls]
    return shell.response(output, done)


class ResponseStream:
    """Core events -> the Responses SSE events, as `(event name, data)` pairs with sequence numbers:
    `response.created`, `response.in_progress`, then per output item `response.output_item.added`,
    its deltas (`response.output_text.delta` inside a content part, `response.function_call_arguments.delta`,
    `response.reasoning_summary_text.delta`) and `response.output_item.done`, then `response.completed`
    (or `response.incomplete` when max_output_tokens ended it)."""

    def __init__(self, req: ResponsesRequest):
        self.shell = Shell(req)
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.text = ""

    def _ev(self, kind: str, /, **data: Any) -> tuple[str, dict[str, Any]]:
        ev = (kind, {"type": kind, "sequence_number": self.seq, **data})
        self.seq += 1
        return ev

    @property
    def _index(self) -> int:
        return len(self.output)

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        item, self.open = self.open, None
        if item is None:
            return []
        out, i = [], self._index
        if item["type"] == "message":
            item = _message_item(item["id"], self.text)
            part = item["content"][0]
            out += [self._ev("response.output_text.done", item_id=item["id"], output_index=i, content_index=0,
                             text=self.text, logprobs=[]),
                    self._ev("response.content_part.done", item_id=item["id"], output_index=i, content_index=0,
                             part=part)]
        elif item["type"] == "reasoning":
            item = _reasoning_item(item["id"], self.text)
            out.append(self._ev("response.reasoning_summary_text.done", item_id=item["id"], output_index=i,
                                summary_index=0, text=self.text))
        self.text = ""
        self.output.append(item)
        return out + [self._ev("response.output_item.done", output_index=i, item=item)]

    def _open(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        if self.open is not None and self.open["type"] == kind:
            return []
        out = self._close()
        if kind == "message":
            self.open = _message_item(new_id("msg"), "", status="in_progress")
            out += [self._ev("response.output_item.added", output_index=self._index, item=self.open),
                    self._ev("response.content_part.added", item_id=self.open["id"], output_index=self._index,
                             content_index=0, part=_text_part(""))]
        else:
            self.open = _reasoning_item(new_id("rs"), "")
            out.append(self._ev("response.output_item.added", output_index=self._index, item=self.open))
        return out

    def convert(self, ev: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        if self.seq == 0:
            out += [self._ev("response.created", response=self.shell.response([], None)),
                    self._ev("response.in_progress", response=self.shell.response([], None))]
        if ev.get("thinking"):
            out += self._open("reasoning")
            self.text += ev["thinking"]
            out.append(self._ev("response.reasoning_summary_text.delta", item_id=self.open["id"],  # type: ignore[index]
                                output_index=self._index, summary_index=0, delta=ev["thinking"]))
        if ev.get("content"):
            out += self._open("message")
            self.text += ev["content"]
            out.append(self._ev("response.output_text.delta", item_id=self.open["id"],  # type: ignore[index]
                                output_index=self._index, content_index=0, delta=ev["content"], logprobs=[]))
        for call in ev.get("tool_calls") or []:
            out += self._close()
            item, i = _call_item(call), self._index
            out += [self._ev("response.output_item.added", output_index=i,
                             item=item | {"status": "in_progress", "arguments": ""}),
                    self._ev("response.function_call_arguments.delta", item_id=item["id"], output_index=i,
                             delta=item["arguments"]),
                    self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                             name=item["name"], arguments=item["arguments"])]
            self.output.append(item)
            out.append(self._ev("response.output_item.done", output_index=i, item=item))
        if ev.get("done"):
            if not self.output and self.open is None:  # nothing generated: an empty message, as the whole answer has
                out += self._open("message")
            out += self._close()
            final = self.shell.response(self.output, ev)
            name = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
            out.append(self._ev(name, response=final))
        return out


def error_event(seq: int, message: str, status: int) -> dict[str, Any]:
    return {"type": "error", "sequence_number": seq, "code": "server_error" if status >= 500 else "invalid_request",
            "message": message, "param": None}
