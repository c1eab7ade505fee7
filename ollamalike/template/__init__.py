"""Prompt rendering: Ollama's Go template dialect and Hugging Face Jinja templates, both bounded.

`render()` is the one entry point the server uses; `kind()` tells which language a template is.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ollamalike.template.goexec import Budget
from ollamalike.template.gotemplate import TemplateError
from ollamalike.template.jinja import compile_jinja, render_jinja
from ollamalike.template.ollama import GoTemplate, capabilities as _go_capabilities, infer_think_tags

__all__ = ["Budget", "TemplateError", "check", "kind", "render", "go_template", "go_capabilities", "think_tags"]


@lru_cache(maxsize=64)
def _go(src: str) -> GoTemplate | TemplateError:
    try:
        return GoTemplate(src)
    except TemplateError as exc:
        return exc
    except RecursionError:
        return TemplateError("template nesting is too deep")


def go_template(src: str) -> GoTemplate:
    t = _go(src)
    if isinstance(t, TemplateError):
        raise t
    return t


def kind(src: str) -> str:
    """"go" or "jinja". Jinja when it has `{%`/`{#` tags or does not parse as Go but does as
    Jinja (`{{ bos_token }}`, `{{ messages[0]['content'] }}`); Go otherwise (Ollama's choice for
    plain text). A template neither language accepts reports Go's error when it looks like Go
    (`{{ .Field }}`), Jinja's otherwise."""
    if "{%" in src or "{#" in src:
        return "jinja"
    if not isinstance(_go(src), TemplateError):
        return "go"
    try:
        compile_jinja(src)
    except TemplateError:
        return "go" if "{{ ." in src or "{{." in src or "{{- ." in src else "jinja"
    return "jinja"


def check(src: str) -> None:
    """TemplateError when `src` parses neither as a Go nor as a Jinja template."""
    if kind(src) == "go":
        go_template(src)
    else:
        compile_jinja(src)


def render(src: str, messages: list[dict[str, Any]], *, tools: list[Any] | None = None,
           think: bool | str | None = None, prompt: str = "", suffix: str = "", bos: str = "", eos: str = "",
           budget: Budget | None = None) -> str:
    """The prompt `src` makes of `messages` (Ollama's message dicts: role, content, thinking,
    images, tool_calls, tool_name). `prompt` + `suffix` render a fill-in-the-middle Go template.
    Raises TemplateError for a template that does not parse, fails, or exceeds its budget."""
    budget = budget or Budget()
    if kind(src) == "go":
        try:
            return go_template(src).execute(messages, tools=tools, prompt=prompt, suffix=suffix,
                                            think=think, budget=budget)
        except RecursionError:
            raise TemplateError("template recursion is too deep") from None
    return render_jinja(src, messages, tools=tools, think=think, bos=bos, eos=eos, budget=budget)


def go_capabilities(src: str) -> list[str] | None:
    """Ollama's capabilities of a Go template (tools, insert, thinking); None for Jinja or a
    template that does not parse."""
    if kind(src) != "go" or isinstance(_go(src), TemplateError):
        return None
    return _go_capabilities(go_template(src))


def think_tags(src: str) -> tuple[str, str]:
    """The thinking tags a Go template wraps `.Thinking` in, ("", "") when none."""
    if kind(src) != "go" or isinstance(_go(src), TemplateError):
        return "", ""
    return infer_think_tags(go_template(src))
