"""Models served by OpenAI-compatible upstream servers (vLLM, llama-server, another ollamalike...):
the Modelfile reference, and pure converters between native requests / Core events and the OpenAI
wire. Nothing here does I/O; server/upstream.py sends the requests.

A reference is `openai+http://HOST:PORT/v1 MODEL_ID [api_key=$ENV_NAME]`: the base URL of the
server's OpenAI API, the model id it serves, and optionally the NAME of an environment variable of
the daemon holding a bearer key (the key itself is never stored).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ollamalike.api import openai as oa
from ollamalike.errors import BadRequest

SCHEME = "openai+"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Native options an upstream request can carry, and the OpenAI (or common extension) field they become.
# top_k/min_p are read by vLLM and llama-server; repeat_penalty is `repetition_penalty` on vLLM.
OPTION_FIELDS = {"temperature": ["temperature"], "top_p": ["top_p"], "seed": ["seed"], "stop": ["stop"],
                 "num_predict": ["max_tokens"], "frequency_penalty": ["frequency_penalty"],
                 "presence_penalty": ["presence_penalty"], "top_k": ["top_k"], "min_p": ["min_p"],
                 "repeat_penalty": ["repeat_penalty", "repetition_penalty"]}


@dataclass(frozen=True)
class UpstreamRef:
    url: str  # the base of the OpenAI API, e.g. http://host:8000/v1 (no trailing slash)
    model: str  # the model id the upstream serves
    api_key_env: str | None = None  # the environment variable holding its bearer key

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model} | ({"api_key_env": self.api_key_env} if self.api_key_env else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "UpstreamRef":
        return cls(str(data["url"]), str(data["model"]), data.get("api_key_env") or None)

    def modelfile(self) -> str:
        """The FROM value that creates this upstream again."""
        key = f" api_key=${self.api_key_env}" if self.api_key_env else ""
        return f"{SCHEME}{self.url} {self.model}{key}"


def is_upstream(ref: str | None) -> bool:
    return bool(ref) and ref.strip().lower().startswith((SCHEME + "http://", SCHEME + "https://"))


def parse_ref(text: str) -> UpstreamRef:
    """One `openai+URL MODEL_ID [api_key=$NAME]` reference; anything else is a 400 saying what to write."""
    words = text.split()
    usage = "write FROM openai+http://HOST:PORT/v1 MODEL_ID [api_key=$ENV_NAME]"
    if not words or not is_upstream(words[0]):
        raise BadRequest(f"invalid upstream '{text.strip()}': {usage}")
    url = words[0][len(SCHEME):].rstrip("/")
    parts = urlsplit(url)
    if not parts.hostname:
        raise BadRequest(f"invalid upstream url '{url}': it has no host")
    if parts.username or parts.password:
        raise BadRequest(f"invalid upstream url '{url}': credentials in the url would be stored in the manifest; "
                         "put the key in an environment variable and name it with api_key=$ENV_NAME")
    if parts.query or parts.fragment:
        raise BadRequest(f"invalid upstream url '{url}': a query or fragment is not allowed")
    if len(words) < 2:
        raise BadRequest(f"upstream '{url}' needs the model id it serves: {usage}")
    model, key_env = words[1], None
    for extra in words[2:]:
        name, eq, value = extra.partition("=")
        if name.lower() != "api_key" or not eq:
            raise BadRequest(f"invalid upstream option '{extra}': only api_key=$ENV_NAME is known")
        if not value.startswith("$") or not _ENV_NAME.match(value[1:].strip("{}")):
            raise BadRequest("the upstream api_key must name an environment variable of the daemon (api_key=$ENV_NAME), "
                             "never the key itself: the manifest would store it")
        key_env = value[1:].strip("{}")
    return UpstreamRef(url, model, key_env)


# --- native requests -> OpenAI bodies ------------------------------------------------------
def upstream_options(opts: dict[str, Any], model: str) -> dict[str, Any]:
    """Native options (the Modelfile's, then the request's) as OpenAI body fields. One that cannot have
    an effect upstream (num_ctx, num_gpu, typical_p...) is a 400 rather than silently dropped."""
    out: dict[str, Any] = {}
    for name, value in opts.items():
        if value is None:
            continue
        if name not in OPTION_FIELDS:
            raise BadRequest(f"option '{name}' has no effect on upstream model '{model}': the upstream server "
                             "sets it (only " + ", ".join(sorted(OPTION_FIELDS)) + " pass through)")
        if name == "num_predict" and int(value) < 0:
            continue  # -1 (until done) / -2 (fill the context): the upstream's own default
        if name == "seed" and int(value) < 0:
            continue  # -1: random, the upstream's default
        if name == "stop":
            value = [value] if isinstance(value, str) else list(value)
            if not value:
                continue
        for field in OPTION_FIELDS[name]:
            out[field] = value
    return out


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Native `format` ("json" or a JSON schema) as OpenAI's `response_format`."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt, "strict": True}}
    raise BadRequest(f'invalid format: "{fmt}" (expected "json" or a JSON schema)')


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Native messages as OpenAI's: tool call arguments as JSON strings with ids, tool results tied to
    the call they answer (by id, else the oldest unanswered call of that name), images as data URLs."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, function name) of calls not yet answered
    for m in messages:
        role = m.get("role", "user")
        msg: dict[str, Any] = {"role": role, "content": m.get("content") or ""}
        if m.get("images"):
            msg["content"] = ([{"type": "text", "text": msg["content"]}] if msg["content"] else []) + [
                {"type": "image_url", "image_url": {"url": _data_url(img)}} for img in m["images"]]
        if m.get("thinking") and role == "assistant":
            msg["reasoning_content"] = m["thinking"]
        if m.get("tool_calls"):
            calls = oa.tool_calls([{**c, "function": {**c["function"], "arguments": _args(
                c["function"].get("arguments"))}} for c in m["tool_calls"]])
            for c in calls:
                c.pop("index", None)
                pending.append((c["id"], c["function"]["name"]))
            msg["tool_calls"] = calls
            if not msg["content"]:
                msg["content"] = None
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not call_id:
                name = m.get("tool_name") or m.get("name")
                match = next((p for p in pending if p[1] == name), pending[0] if pending else None)
                call_id = match[0] if match else "call_" + secrets.token_hex(4)
            pending = [p for p in pending if p[0] != call_id]
            msg["tool_call_id"] = call_id
        out.append(msg)
    return out


def _args(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except json.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def _data_url(image: str) -> str:
    if image.startswith("data:"):
        return image
    kind = "png" if image.startswith("iVBOR") else "jpeg"
    return f"data:image/{kind};base64,{image}"


# --- OpenAI responses -> Core events -------------------------------------------------------
class ChunkReader:
    """OpenAI stream chunks (chat or text completion) -> Core events: `{"content"}`, `{"thinking"}`,
    `{"tool_calls"}` (whole calls: streamed argument pieces are joined first), and the final
    `{"done": True, "done_reason", counts, durations}`."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(chunk.get("error"), (dict, str)):
            raise UpstreamStreamError(error_message(chunk))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):  # llama-server's own measurements
            self.timings = chunk["timings"]
        out: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            if "text" in choice and "delta" not in choice and "message" not in choice:
                if choice["text"]:
                    out.append({"content": choice["text"]})
            else:
                delta = choice.get("delta") or choice.get("message") or {}
                thinking = delta.get("reasoning_content") or delta.get("reasoning")
                if thinking:
                    out.append({"thinking": thinking})
                if delta.get("content"):
                    out.append({"content": delta["content"]})
                for i, tc in enumerate(delta.get("tool_calls") or []):
                    slot = self.calls.setdefault(int(tc.get("index", i)), {"id": None, "name": "", "arguments": ""})
                    fn = tc.get("function") or {}
                    slot["id"] = tc.get("id") or slot["id"]
                    slot["name"] += fn.get("name") or ""
                    args = fn.get("arguments")
                    slot["arguments"] += json.dumps(args) if isinstance(args, dict) else (args or "")
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def finish_events(self, ttft: float | None, total: float) -> list[dict[str, Any]]:
        """The joined tool calls (if any), then the final record; durations from the upstream's own
        timings when it sends them (llama-server), else measured here around the first token."""
        out: list[dict[str, Any]] = []
        if self.calls:
            out.append({"tool_calls": [
                {"id": c["id"] or "call_" + secrets.token_hex(4),
                 "function": {"name": c["name"], "arguments": _args(c["arguments"])}}
                for _, c in sorted(self.calls.items())]})
        t = self.timings
        prompt_s = (t["prompt_ms"] / 1000) if "prompt_ms" in t else (ttft or 0.0)
        eval_s = (t["predicted_ms"] / 1000) if "predicted_ms" in t else max(total - (ttft or 0.0), 0.0)
        prompt_n = self.usage.get("prompt_tokens", t.get("prompt_n", 0))
        eval_n = self.usage.get("completion_tokens", t.get("predicted_n", 0))
        out.append({"done": True, "done_reason": "length" if self.finish == "length" else "stop",
                    "prompt_eval_count": int(prompt_n or 0), "eval_count": int(eval_n or 0),
                    "prompt_eval_duration": int(prompt_s * 1e9), "eval_duration": int(eval_s * 1e9)})
        return out


class UpstreamStreamError(Exception):
    """An error event inside an upstream's stream (after the status line went out)."""


def error_message(body: Any) -> str:
    """The message of an upstream error body: OpenAI's `{"error": {"message"}}`, Ollama's
    `{"error": "..."}`, FastAPI's `{"detail": ...}`, or the raw text."""
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err is not None:
            return err if isinstance(err, str) else json.dumps(err)
        return json.dumps(body)[:500]
    return str(body)[:500]


# --- whole requests ------------------------------------------------------------------------
def _think_fields(think: bool | str | None) -> dict[str, Any]:
    """Native `think` as the fields upstreams read: vLLM and llama-server pass `chat_template_kwargs`
    to the template (enable_thinking), OpenAI-style servers read `reasoning_effort`."""
    if think is None:
        return {}
    out: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": think is not False}}
    if isinstance(think, str):
        out["reasoning_effort"] = think
    elif think is False:
        out["reasoning_effort"] = "none"
    return out


def _common(req: Any, model: str, opts: dict[str, Any]) -> dict[str, Any]:
    if req.logprobs or req.top_logprobs:
        raise BadRequest(f"logprobs are not available through upstream model '{model}' yet")
    body: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    body |= upstream_options(opts, model)
    fmt = response_format(req.format)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def chat_body(req: Any, system: str | None, model_messages: list[dict[str, Any]],
              opts: dict[str, Any]) -> dict[str, Any]:
    """A native chat request (plus the model's SYSTEM and MESSAGEs, in Ollama's order) as an OpenAI
    /chat/completions body; the upstream applies its own chat template."""
    msgs = [m.model_dump(exclude_none=True) for m in req.messages or []]
    msgs = list(model_messages) + msgs
    if system and not (req.messages and req.messages[0].role == "system"):
        msgs.insert(0, {"role": "system", "content": system})
    body = _common(req, req.model, opts) | {"messages": chat_messages(msgs)} | _think_fields(req.think)
    if req.tools:
        body["tools"] = req.tools
    return body


def generate_body(req: Any, system: str | None, model_messages: list[dict[str, Any]],
                  opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A native generate as (path, body): `raw` text goes to /completions as it is; otherwise the prompt
    is a user turn of /chat/completions, since Ollama runs it through the model's template."""
    for field, what in (("suffix", "suffix (fill-in-the-middle)"), ("context", "context"),
                        ("template", "template")):
        if getattr(req, field):
            raise BadRequest(f"{what} is not available through upstream model '{req.model}': the upstream "
                             "server applies its own template")
    body = _common(req, req.model, opts)
    if req.raw:
        if req.images:
            raise BadRequest(f"images need a chat prompt: raw mode cannot send them to upstream model '{req.model}'")
        return "/completions", body | {"prompt": req.prompt or ""}
    sys_text = req.system or system
    msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + list(model_messages) + [
        {"role": "user", "content": req.prompt or ""} | ({"images": req.images} if req.images else {})]
    return "/chat/completions", body | {"messages": chat_messages(msgs)} | _think_fields(req.think)
