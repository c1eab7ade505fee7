"""Turning messages into the prompt text a model expects, and fitting a chat into the context.

A model's template is the GGUF's own Jinja chat template (auto-detected at create) or a Modelfile
TEMPLATE in Ollama's Go dialect; ollamalike.template renders both, bounded. Rendering is CPU work
a user controls, so callers run it off the event loop (`render_async`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from ollamalike import template as templates
from ollamalike.errors import BadRequest

log = logging.getLogger(__name__)

CONTEXT_EXCEEDED = "the input length exceeds the context length"


def is_jinja(template: str) -> bool:
    return templates.kind(template) == "jinja"


go_capabilities = templates.go_capabilities


def is_go_with_suffix(template: str) -> bool:
    """A Go template that reads .Suffix renders fill-in-the-middle prompts itself."""
    try:
        return templates.kind(template) == "go" and "suffix" in templates.go_template(template).vars
    except templates.TemplateError:
        return False


def render(template: str | None, messages: list[dict[str, Any]], *, tools: list[Any] | None = None,
           think: bool | str | None = None, bos: str = "", eos: str = "", prompt: str = "",
           suffix: str = "") -> str:
    """The prompt for `messages` under `template` (no template: the contents joined)."""
    if not template:
        if prompt and suffix:
            return prompt
        return "\n\n".join(m.get("content") or "" for m in messages if m.get("content"))
    try:
        return templates.render(template, messages, tools=tools, think=think, bos=bos, eos=eos,
                                prompt=prompt, suffix=suffix)
    except templates.TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


async def render_async(template: str | None, messages: list[dict[str, Any]], **kw: Any) -> str:
    """render() in a worker thread, so a slow template never holds the event loop."""
    return await asyncio.to_thread(render, template, messages, **kw)


# Ollama's estimate of one image's tokens while fitting a chat into the context
IMAGE_TOKENS = 768


def attach_images(messages: list[dict[str, Any]], start: int = 0) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Ollama's image tags: each message's images become [img-N] markers (numbered across the
    conversation) at an "[img]" the text holds, else in front of it; returns the messages and N -> image."""
    out, images = [], {}
    for m in messages:
        imgs = m.get("images") or []
        if not imgs:
            out.append(m)
            continue
        content, prefix = m.get("content") or "", ""
        for data in imgs:
            n = start + len(images)
            images[n] = data
            tag = f"[img-{n}]"
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        out.append({**m, "content": prefix + content})
    return out, images


def _fits_without_counting(text: str, num_ctx: int) -> bool:
    # every token stands for at least one byte, plus BOS/EOS the tokenizer may add
    return len(text.encode()) + 2 <= num_ctx


async def fit_chat(messages: list[dict[str, Any]], num_ctx: int, render_fn: Callable[[list[dict[str, Any]]], Awaitable[str]],
                   tokenize: Callable[[str], Awaitable[list[int]]], *, truncate: bool = True,
                   first: str | None = None) -> str:
    """Ollama's chatPrompt: the prompt of the largest suffix of `messages` that fits `num_ctx`,
    with the system messages of the dropped part kept in front; at least the last message.
    `truncate=False` answers 400 when the whole chat does not fit. `first` is the render of all
    messages when the caller has it already."""
    text = first if first is not None else await render_fn(messages)
    if _fits_without_counting(text, num_ctx) or len(await tokenize(text)) <= num_ctx:
        return text
    if not truncate:
        raise BadRequest(CONTEXT_EXCEEDED)

    def keep(i: int) -> list[dict[str, Any]]:
        return [m for m in messages[:i] if m.get("role") == "system"] + messages[i:]

    async def fits(i: int) -> tuple[bool, str]:
        t = await render_fn(keep(i))
        return _fits_without_counting(t, num_ctx) or len(await tokenize(t)) <= num_ctx, t

    # the smallest start index whose render fits (binary search: fewer messages, shorter prompt)
    lo, hi, best = 1, len(messages) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        ok, t = await fits(mid)
        if ok:
            best, hi = (mid, t), mid - 1
        else:
            lo = mid + 1
    if best is None:
        best = (len(messages) - 1, await render_fn(keep(len(messages) - 1)))
    log.debug("truncating input messages which exceed context length: kept %d of %d",
              len(messages) - best[0], len(messages))
    return best[1]
