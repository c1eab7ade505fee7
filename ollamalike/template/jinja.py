"""Jinja chat templates (Hugging Face style), sandboxed and bounded.

A user template is code: it runs in jinja2's immutable sandbox, and every hook the sandbox offers
(calls, attribute and item reads, the `* ** % +` operators, `range`, filters, each output chunk)
spends from a Budget (steps, output size, a deadline) and refuses operands that would build
huge values in one go, so no template can hold a worker or its memory for long.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ollamalike.template.goexec import Budget
from ollamalike.template.gotemplate import TemplateError

_MAX_INT_ARG = 1 << 20          # the largest count a filter or method may be asked to build
_WIDTH = re.compile(r"(\d{7,})")


class _Limit(Exception):
    """Raised inside Jinja; render() turns it into a TemplateError."""


class BudgetRange:
    """`range()` that spends a step per item it yields."""

    def __init__(self, env: "BoundedEnvironment", *args: int):
        self.env, self.r = env, range(*args)

    def __iter__(self) -> Any:
        for x in self.r:
            self.env.spend()
            yield x

    def __len__(self) -> int:
        return len(self.r)

    def __getitem__(self, i: Any) -> Any:
        return self.r[i]


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True)
        self._local = threading.local()  # one compiled template may render in several threads
        self.globals.pop("lipsum", None)
        self.globals["range"] = lambda *a: BudgetRange(self, *a)
        self.globals["raise_exception"] = _raise
        self.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt)[:256])
        self.filters["tojson"] = _tojson
        self.filters = {k: self._wrap(f) for k, f in self.filters.items()}

    @property
    def budget(self) -> Budget | None:
        return getattr(self._local, "budget", None)

    @budget.setter
    def budget(self, value: Budget | None) -> None:
        self._local.budget = value

    def spend(self, n: int = 1) -> None:
        if self.budget is not None:
            try:
                self.budget.spend(n)
            except TemplateError as exc:
                raise _Limit(str(exc)) from None

    def _check(self, value: Any) -> Any:
        if self.budget is not None and isinstance(value, (str, list, tuple, dict)) and len(value) > self.budget.output:
            raise _Limit(f"rendering exceeded {self.budget.output} characters of output")
        return value

    def _args(self, args: tuple, kwargs: dict) -> None:
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > _MAX_INT_ARG:
                raise _Limit(f"argument {a} is too large")
            if isinstance(a, str) and "%" in a and _WIDTH.search(a):
                raise _Limit("format width is too large")
            self._check(a)

    def _wrap(self, f: Callable[..., Any]) -> Callable[..., Any]:
        def filt(*args: Any, **kwargs: Any) -> Any:
            self.spend()
            self._args(args[1:], kwargs)
            return self._check(f(*args, **kwargs))
        for attr in ("jinja_pass_arg",):  # keep @pass_context / @pass_environment markers
            if hasattr(f, attr):
                setattr(filt, attr, getattr(f, attr))
        return filt

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.spend()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > _MAX_INT_ARG * 16:
                    raise _Limit(f"rendering exceeded {_MAX_INT_ARG * 16} characters of output")
        elif operator == "**":
            if isinstance(right, (int, float)) and isinstance(left, (int, float)) and abs(left) > 1 and abs(right) > 128:
                raise _Limit("exponent is too large")
        elif operator == "%":
            if isinstance(left, str) and _WIDTH.search(left):
                raise _Limit("format width is too large")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) \
                    and len(left) + len(right) > _MAX_INT_ARG * 16:
                raise _Limit(f"rendering exceeded {_MAX_INT_ARG * 16} characters of output")
        return self._check(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self.spend()
        __self._args(args, kwargs)
        return __self._check(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        f = super().wrap_str_format(value)
        if f is not None and _WIDTH.search(str(value.__self__)):
            raise _Limit("format width is too large")
        return f

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.spend()
        return self._check(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.spend()
        return self._check(super().getitem(obj, argument))


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """Hugging Face's tojson (transformers' chat templates): insertion order, no HTML escaping."""
    if indent is not None and not 0 <= int(indent) <= 16:
        raise _Limit("tojson indent is too large")
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


@lru_cache(maxsize=32)
def compile_jinja(src: str) -> jinja2.Template:
    """The compiled template; TemplateError when it does not parse."""
    try:
        return BoundedEnvironment().from_string(src)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.message} (line {exc.lineno})") from None
    except (jinja2.TemplateError, RecursionError, MemoryError) as exc:
        raise TemplateError(str(exc) or type(exc).__name__) from None


def wants_parts(src: str) -> bool:
    """Whether a template reads a message's content only as a list of typed parts (SmolVLM and
    other vision templates: `for line in message['content']` ... `line['text']`), never as a string."""
    return "is string" not in src and re.search(r"""\[['"]type['"]\]|\.type\b""", src) is not None \
        and re.search(r"""\[['"]text['"]\]|\.text\b""", src) is not None


def hf_message(msg: dict[str, Any], parts: bool = False) -> dict[str, Any]:
    """A message as Hugging Face chat templates expect it; with `parts`, its content as one text
    part (image tags such as [img-0] stay in the text: the runner puts each image there)."""
    content = msg.get("content") or ""
    out = {"role": msg["role"], "content": [{"type": "text", "text": content}] if parts else content}
    if msg.get("thinking"):
        out["reasoning_content"] = msg["thinking"]
    if msg.get("tool_calls"):
        out["tool_calls"] = [{"type": "function", "function": tc["function"],
                              **({"id": tc["id"]} if tc.get("id") else {})} for tc in msg["tool_calls"]]
    if msg.get("tool_name"):
        out["name"] = msg["tool_name"]
    if msg.get("tool_call_id"):
        out["tool_call_id"] = msg["tool_call_id"]
    return out


def render_jinja(src: str, messages: list[dict[str, Any]], *, tools: list[Any] | None = None,
                 think: bool | str | None = None, bos: str = "", eos: str = "",
                 add_generation_prompt: bool = True, budget: Budget | None = None) -> str:
    tmpl = compile_jinja(src)
    env: BoundedEnvironment = tmpl.environment  # type: ignore[assignment]
    budget = budget or Budget()
    parts = wants_parts(src)
    values: dict[str, Any] = {"messages": [hf_message(m, parts) for m in messages], "tools": tools or None,
                              "add_generation_prompt": add_generation_prompt,
                              "bos_token": bos, "eos_token": eos}
    if think is not None:  # the names thinking templates read (Qwen3, DeepSeek, gpt-oss, ...)
        values["think"] = think
        values["enable_thinking"] = think in ("high", "medium", "low", "max") if isinstance(think, str) else bool(think)
        if isinstance(think, str):
            values["reasoning_effort"] = "high" if think == "max" else think
    out, size = [], 0
    env.budget = budget
    try:
        for chunk in tmpl.generate(**values):
            size += len(chunk)
            if size > budget.output:
                raise _Limit(f"rendering exceeded {budget.output} characters of output")
            budget.spend()
            out.append(chunk)
    except _Limit as exc:
        raise TemplateError(str(exc)) from None
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(str(exc)) from None
    except RecursionError:
        raise TemplateError("template recursion is too deep") from None
    except MemoryError:
        raise TemplateError("rendering exceeded the memory available") from None
    except Exception as exc:  # a template's own runtime error (TypeError, ZeroDivisionError, ...)
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None
    finally:
        env.budget = None
    return "".join(out)
