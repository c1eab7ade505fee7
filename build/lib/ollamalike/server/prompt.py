"""Turning messages into the prompt text a model expects.

A model's template is the GGUF's own Jinja chat template (auto-detected at create) or a Modelfile
TEMPLATE. Jinja templates are rendered as Hugging Face does; simple Go-style templates
(`{{ .System }}`, `{{ .Prompt }}`, `{{ if .System }}...{{ end }}`) are rendered turn by turn.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ollamalike.errors import BadRequest

_GO_ACTION = re.compile(r"^-?\s*(\.|if\s|else|end|range\s|with\s|\$|-?\s*$)")


def is_jinja(template: str) -> bool:
    """Jinja unless every `{{ }}` action looks like Go's (`.Field`, `if`, `end`, `range`...)."""
    if "{%" in template:
        return True
    actions = re.findall(r"\{\{(.*?)\}\}", template, re.S)
    return any(not _GO_ACTION.match(a) for a in actions)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _plain(msg: dict[str, Any]) -> dict[str, Any]:
    out = {"role": msg["role"], "content": msg.get("content") or ""}
    if msg.get("tool_calls"):
        out["tool_calls"] = [{"type": "function", "function": tc["function"]} for tc in msg["tool_calls"]]
    if msg.get("tool_name"):
        out["name"] = msg["tool_name"]
    return out


_GO_IF = re.compile(r"\{\{-?\s*if\s+\.(\w+)\s*-?\}\}(.*?)\{\{-?\s*end\s*-?\}\}", re.S)
_GO_VAR = re.compile(r"\{\{-?\s*\.(\w+)\s*-?\}\}")


def _render_go(template: str, values: dict[str, str]) -> str:
    text = _GO_IF.sub(lambda m: m.group(2) if values.get(m.group(1)) else "", template)
    return _GO_VAR.sub(lambda m: values.get(m.group(1), ""), text)


def render(template: str | None, messages: list[dict[str, Any]], *, tools: list[Any] | None = None,
           bos: str = "", eos: str = "", add_generation_prompt: bool = True) -> str:
    """The prompt for `messages` under `template` (no template: the contents joined)."""
    msgs = [_plain(m) for m in messages]
    if not template:
        return "\n\n".join(m["content"] for m in msgs if m["content"])
    if is_jinja(template):
        try:
            return _compile(template).render(
                messages=msgs, tools=tools or None, add_generation_prompt=add_generation_prompt,
                bos_token=bos, eos_token=eos)
        except jinja2.TemplateError as exc:
            raise BadRequest(f"template error: {exc}") from None
    # Go-style legacy template: one render per user turn, with the preceding system and the reply.
    out, system = [], ""
    pending: dict[str, str] = {}
    for m in msgs:
        if m["role"] == "system":
            system = m["content"]
        elif m["role"] == "user":
            if pending:
                out.append(_render_go(template, pending))
            pending = {"System": system, "Prompt": m["content"], "Response": ""}
            system = ""
        elif m["role"] == "assistant" and pending:
            pending["Response"] = m["content"]
            out.append(_render_go(template, pending))
            pending = {}
    if pending or not out:
        pending = pending or {"System": system, "Prompt": "", "Response": ""}
        text = _render_go(template, pending)
        cut = re.search(r"\{\{-?\s*\.Response", template)
        if cut:  # generation continues where .Response would be
            text = _render_go(template[: cut.start()], pending)
        out.append(text)
    return "".join(out)
