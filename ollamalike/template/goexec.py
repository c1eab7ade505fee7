"""Executing a parsed Go template (gotemplate.py) with Go's semantics and a bounded budget.

Every node, loop iteration and function call costs a step; the steps, the output size and a
wall-clock deadline are bounded so that no template can hold a worker for long.
"""

from __future__ import annotations

import html as _html
import time
from typing import Any, Callable
from urllib.parse import quote_plus

from ollamalike.template.gotemplate import (Action, Branch, Break, Chain, Command, Continue, Dot, Field,
                                            Ident, ListNode, Literal, Nil, Pipe, TemplateCall,
                                            TemplateError, Text, Variable)
from ollamalike.template.govalues import (NO_VALUE, GoStruct, OrderedMap, PropertyType, type_name, fmt_value,
                                          go_sprint, go_sprintf, is_true, sorted_items, to_json)


class Budget:
    """Limits on one render: steps, output characters and seconds."""

    def __init__(self, steps: int = 1_000_000, output: int = 16 << 20, seconds: float = 5.0):
        self.steps, self.output, self.seconds = steps, output, seconds
        self.deadline = time.monotonic() + seconds
        self.used = 0

    def spend(self, n: int = 1) -> None:
        self.used += n
        if self.used > self.steps:
            raise TemplateError(f"rendering exceeded {self.steps} steps")
        if not self.used & 1023 and time.monotonic() > self.deadline:
            raise TemplateError(f"rendering exceeded {self.seconds:g} seconds")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_MAX_DEPTH = 200


class Executor:
    def __init__(self, defines: dict[str, ListNode], funcs: dict[str, Callable[..., Any]], budget: Budget):
        self.defines, self.funcs, self.budget = defines, funcs, budget
        self.out: list[str] = []
        self.size = 0
        self.vars: list[list[Any]] = []
        self.depth = 0

    def run(self, root: ListNode, data: Any) -> str:
        self.vars = [["$", data]]
        self.walk(root, data)
        return "".join(self.out)

    def write(self, s: str) -> None:
        self.size += len(s)
        if self.size > self.budget.output:
            raise TemplateError(f"rendering exceeded {self.budget.output} characters of output")
        self.out.append(s)

    # --- statements ---
    def walk(self, node: ListNode, dot: Any) -> None:
        for n in node.nodes:
            self.budget.spend()
            if isinstance(n, Text):
                self.write(n.text)
            elif isinstance(n, Action):
                v = self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    self.write(_printable(v))
            elif isinstance(n, Branch):
                self.branch(n, dot)
            elif isinstance(n, Break):
                raise _Break()
            elif isinstance(n, Continue):
                raise _Continue()
            elif isinstance(n, TemplateCall):
                self.call_template(n, dot)

    def branch(self, n: Branch, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if n.kind == "range":
                self.range_(n, dot)
                return
            v = self.pipe(n.pipe, dot)
            if is_true(v):
                self.walk(n.body, v if n.kind == "with" else dot)
            elif n.else_body is not None:
                self.walk(n.else_body, dot)
        finally:
            del self.vars[mark:]

    def range_(self, n: Branch, dot: Any) -> None:
        v = self.pipe(n.pipe, dot, declare=False)
        if isinstance(v, dict):
            items = sorted_items(v)
        elif isinstance(v, (list, tuple)):
            items = list(enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            items = [(i, i) for i in range(max(v, 0))]
        elif v is None or v is NO_VALUE:
            items = []
        else:
            raise TemplateError(f"range can't iterate over {fmt_value(v)}")
        if not items:
            if n.else_body is not None:
                self.walk(n.else_body, dot)
            return
        mark = len(self.vars)
        for k, elem in items:
            self.budget.spend()
            if len(n.pipe.decl) == 1:
                self._declare(n.pipe, [elem])
            elif len(n.pipe.decl) == 2:
                self._declare(n.pipe, [k, elem])
            try:
                self.walk(n.body, elem)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                del self.vars[mark:]

    def call_template(self, n: TemplateCall, dot: Any) -> None:
        body = self.defines.get(n.name)
        if body is None:
            raise TemplateError(f'template: no template "{n.name}" associated with template')
        if self.depth >= _MAX_DEPTH:
            raise TemplateError(f"exceeded maximum template depth ({_MAX_DEPTH})")
        value = self.pipe(n.pipe, dot) if n.pipe else None
        saved, self.vars = self.vars, [["$", value]]
        self.depth += 1
        try:
            self.walk(body, value)
        finally:
            self.depth -= 1
            self.vars = saved

    # --- pipelines ---
    def _declare(self, pipe: Pipe, values: list[Any]) -> None:
        for name, value in zip(pipe.decl, values):
            if pipe.is_assign:
                for slot in reversed(self.vars):
                    if slot[0] == name:
                        slot[1] = value
                        break
            else:
                self.vars.append([name, value])

    def pipe(self, p: Pipe, dot: Any, declare: bool = True) -> Any:
        value: Any = _MISSING
        for cmd in p.cmds:
            value = self.command(cmd, dot, value)
        if declare and p.decl:
            self._declare(p, [value])
        return value

    def command(self, cmd: Command, dot: Any, final: Any) -> Any:
        first, rest = cmd.args[0], cmd.args[1:]
        self.budget.spend()
        if isinstance(first, Ident):
            return self.call(first.name, rest, dot, final)
        if isinstance(first, Field):
            return self.field_chain(dot, first.idents, rest, dot, final)
        if isinstance(first, Variable):
            value = self.variable(first.idents[0])
            if len(first.idents) == 1:
                self._no_args(first.idents[0], rest, final)
                return value
            return self.field_chain(value, first.idents[1:], rest, dot, final)
        if isinstance(first, Chain):
            return self.field_chain(self.arg(first.node, dot), first.fields, rest, dot, final)
        if isinstance(first, Nil):
            raise TemplateError("nil is not a command")
        self._no_args(fmt_value(self.arg(first, dot)), rest, final)
        return self.arg(first, dot)

    def _no_args(self, name: str, rest: list[Any], final: Any) -> None:
        if rest or final is not _MISSING:
            raise TemplateError(f"can't give argument to non-function {name}")

    def variable(self, name: str) -> Any:
        for slot in reversed(self.vars):
            if slot[0] == name:
                return slot[1]
        raise TemplateError(f"undefined variable: {name}")

    def field_chain(self, recv: Any, idents: list[str], args: list[Any], dot: Any, final: Any) -> Any:
        for i, name in enumerate(idents):
            last = i == len(idents) - 1
            recv = self.field(recv, name, args if last else [], dot, final if last else _MISSING)
        return recv

    def field(self, recv: Any, name: str, args: list[Any], dot: Any, final: Any) -> Any:
        has_args = bool(args) or final is not _MISSING
        if isinstance(recv, GoStruct):
            if name in recv.methods:
                vals = [self.arg(a, dot) for a in args] + ([] if final is _MISSING else [final])
                return recv.methods[name](*vals)
            if name in recv.fields:
                if has_args:
                    raise TemplateError(f"{name} has arguments but cannot be invoked as function")
                return recv.fields[name]
            raise TemplateError(f"can't evaluate field {name} in type {recv.type_name}")
        if isinstance(recv, dict):
            if has_args:
                raise TemplateError(f"{name} is not a method but has arguments")
            return recv.get(name, NO_VALUE)
        if recv is None or recv is NO_VALUE:
            raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
        raise TemplateError(f"can't evaluate field {name} in type {type_name(recv)}")

    def arg(self, node: Any, dot: Any) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Nil):
            return None
        if isinstance(node, Field):
            return self.field_chain(dot, node.idents, [], dot, _MISSING)
        if isinstance(node, Variable):
            value = self.variable(node.idents[0])
            return self.field_chain(value, node.idents[1:], [], dot, _MISSING) if len(node.idents) > 1 else value
        if isinstance(node, Pipe):
            mark = len(self.vars)
            value = self.pipe(node, dot)
            del self.vars[mark:]
            return value
        if isinstance(node, Chain):
            return self.field_chain(self.arg(node.node, dot), node.fields, [], dot, _MISSING)
        if isinstance(node, Ident):
            return self.call(node.name, [], dot, _MISSING)
        raise TemplateError(f"can't evaluate {node!r}")

    def call(self, name: str, args: list[Any], dot: Any, final: Any) -> Any:
        if name in ("and", "or"):  # short-circuit, returning the deciding operand as Go does
            nodes = list(args)
            if not nodes and final is _MISSING:
                raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
            value: Any = None
            for i, node in enumerate(nodes + ([None] if final is not _MISSING else [])):
                value = final if node is None and i == len(nodes) else self.arg(node, dot)
                if is_true(value) != (name == "and"):
                    return value
            return value
        fn = self.funcs.get(name)
        if fn is None:
            raise TemplateError(f'function "{name}" not defined')
        vals = [self.arg(a, dot) for a in args] + ([] if final is _MISSING else [final])
        self.budget.spend()
        try:
            return fn(*vals)
        except TemplateError:
            raise
        except TypeError as exc:
            raise TemplateError(f"error calling {name}: wrong number of args ({exc})") from None
        except (ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError) as exc:
            raise TemplateError(f"error calling {name}: {exc}") from None


_MISSING = object()


def _printable(v: Any) -> str:
    if v is _MISSING:
        return "<no value>"
    return fmt_value(v, top=True)


# --- built-in functions ---------------------------------------------------------------------
def _basic(v: Any) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return None


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise TemplateError("missing argument for comparison")
    for b in bs:
        ka, kb = _basic(a), _basic(b)
        if ka != kb:
            if a not in (None, NO_VALUE) and b not in (None, NO_VALUE):
                raise TemplateError("incompatible types for comparison")
            truth = (a in (None, NO_VALUE)) and (b in (None, NO_VALUE))
        elif ka is None:
            if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
                raise TemplateError("non-comparable types")
            truth = a is b or (a in (None, NO_VALUE) and b in (None, NO_VALUE))
        else:
            truth = a == b
        if truth:
            return True
    return False


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def f(a: Any, b: Any) -> bool:
        ka, kb = _basic(a), _basic(b)
        if ka is None or kb is None or ka == "bool" or kb == "bool":
            raise TemplateError("invalid type for comparison")
        if ka != kb:
            raise TemplateError("incompatible types for comparison")
        return op(a, b)
    return f


def _len(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, (list, tuple, dict)):
        return len(v)
    raise TemplateError(f"len of type {type_name(v)}")


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            if not isinstance(k, str):
                raise TemplateError(f"value has type {type_name(k)}; should be string")
            v = v.get(k, NO_VALUE)
        elif isinstance(v, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise TemplateError(f"cannot index slice/array with type {type_name(k)}")
            seq = v.encode() if isinstance(v, str) else v
            if not 0 <= k < len(seq):
                raise TemplateError(f"index out of range: {k}")
            v = seq[k]
        elif v is None or v is NO_VALUE:
            raise TemplateError("index of untyped nil")
        else:
            raise TemplateError(f"can't index item of type {type_name(v)}")
    return v


def _slice(v: Any, *idx: Any) -> Any:
    if not isinstance(v, (list, tuple, str)):
        raise TemplateError(f"can't slice item of type {type_name(v)}")
    if len(idx) > 3 or (len(idx) == 3 and isinstance(v, str)):
        raise TemplateError("too many slice indexes")
    n = len(v.encode()) if isinstance(v, str) else len(v)
    i = idx[0] if idx else 0
    j = idx[1] if len(idx) > 1 else n
    if not (0 <= i <= j <= n):
        raise TemplateError(f"index out of range: {i}:{j}")
    return v.encode()[i:j].decode("utf-8", "replace") if isinstance(v, str) else v[i:j]


def _js(s: str) -> str:
    out = []
    for ch in s:
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch in "<>&=" or ord(ch) < 0x20:
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def _html_escape(s: str) -> str:
    return _html.escape(s, quote=False).replace('"', "&#34;").replace("'", "&#39;").replace("\0", "\uFFFD")


def _not_callable(*args: Any) -> Any:
    raise TemplateError("call of nil")


BUILTINS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _cmp(lambda a, b: a < b), "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b), "ge": _cmp(lambda a, b: a >= b),
    "not": lambda a: not is_true(a),
    "and": _not_callable, "or": _not_callable,  # evaluated lazily by Executor.call
    "len": _len, "index": _index, "slice": _slice,
    "print": go_sprint, "printf": go_sprintf,
    "println": lambda *a: " ".join(fmt_value(x) for x in a) + "\n",
    "html": lambda *a: _html_escape(go_sprint(*a)),
    "js": lambda *a: _js(go_sprint(*a)),
    "urlquery": lambda *a: quote_plus(go_sprint(*a), safe="-_.~"),
    "call": _not_callable,
}

__all__ = ["BUILTINS", "Budget", "Executor", "GoStruct", "NO_VALUE", "OrderedMap", "PropertyType",
           "to_json", "go_sprint", "go_sprintf"]
