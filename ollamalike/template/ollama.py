"""Ollama's rules for its Go templates: the added functions, the data a template sees, how
messages are collated, and how a template without `.Messages` is rendered turn by turn.

Mirrors Ollama's template package (MIT): a template naming neither `.Messages` nor `.Response`
gets `{{ .Response }}` appended; `.Messages` templates render once; other templates render once
per turn with `.System/.Prompt/.Response`, the last turn cut right after `.Response`.
"""

from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from typing import Any

from ollamalike.template.goexec import BUILTINS, Budget, Executor
from ollamalike.template.gotemplate import (Action, Branch, Command, Field, ListNode, Pipe, TemplateCall,
                                            TemplateError, Text, Variable, parse)
from ollamalike.template.govalues import GoStruct, OrderedMap, PropertyType, to_json


def _json(v: Any) -> str:
    try:
        return to_json(v)
    except ValueError:
        return ""


def _ts_type(v: Any) -> str:
    if isinstance(v, GoStruct) and "ToTypeScriptType" in v.methods:
        return v.methods["ToTypeScriptType"]()
    return "any"


FUNCS = {**BUILTINS,
         "json": _json,
         "currentDate": lambda *a: date.today().isoformat(),
         "yesterdayDate": lambda *a: (date.today() - timedelta(days=1)).isoformat(),
         "toTypeScriptType": _ts_type}


class JSONMap(dict):
    """A Go map type whose String method is its JSON (Ollama's templateArgs/templateProperties)."""

    def go_string(self) -> str:
        return to_json(self)


def _stringer_json(v: GoStruct) -> str:
    return to_json(v)


# --- the data -------------------------------------------------------------------------------
def go_any(v: Any) -> Any:
    """A JSON value as Go decodes it into `any`: numbers are float64, objects are maps."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        return {str(k): go_any(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [go_any(x) for x in v]
    return v


_TS = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
       "array": "any[]", "object": "Record<string, any>", "null": "null"}


def tool_property(d: Any) -> GoStruct:
    d = d if isinstance(d, dict) else {}
    t = d.get("type")
    ptype = PropertyType([t] if isinstance(t, str) else [x for x in t or [] if isinstance(x, str)])
    props = d.get("properties")
    any_of = [tool_property(x) for x in d.get("anyOf") or [] if isinstance(x, dict)]
    p = GoStruct("api.ToolProperty", {
        "AnyOf": any_of, "Type": ptype, "Items": go_any(d.get("items")),
        "Description": d.get("description") or "" if isinstance(d.get("description", ""), str) else "",
        "Enum": go_any(d.get("enum") or []),
        "Properties": OrderedMap((k, tool_property(x)) for k, x in props.items()) if isinstance(props, dict) else None,
        "Required": [x for x in d.get("required") or [] if isinstance(x, str)],
    }, json=[("AnyOf", "anyOf", True), ("Type", "type", True), ("Items", "items", True),
             ("Description", "description", True), ("Enum", "enum", True),
             ("Properties", "properties", True), ("Required", "required", True)])

    def ts() -> str:
        if p.fields["AnyOf"]:
            return " | ".join(x.methods["ToTypeScriptType"]() for x in p.fields["AnyOf"])
        types = p.fields["Type"]
        return " | ".join(_TS.get(x, "any") for x in types) if types else "any"
    p.methods["ToTypeScriptType"] = ts
    return p


def template_tools(tools: list[Any] | None) -> list[GoStruct] | None:
    """Ollama's templateTools: each prints as its JSON, unknown schema keys dropped."""
    if tools is None:
        return ToolList(nil=True)
    out = []
    for t in tools:
        t = t if isinstance(t, dict) else {}
        f = t.get("function") if isinstance(t.get("function"), dict) else {}
        params = f.get("parameters") if isinstance(f.get("parameters"), dict) else {}
        props = params.get("properties")
        parameters = GoStruct("template.templateToolFunctionParameters", {
            "Type": params.get("type") or "", "Defs": go_any(params.get("$defs")),
            "Items": go_any(params.get("items")),
            "Required": [x for x in params.get("required") or [] if isinstance(x, str)],
            "Properties": JSONMap((k, tool_property(x)) for k, x in props.items()) if isinstance(props, dict) else None,
        }, json=[("Type", "type", False), ("Defs", "$defs", True), ("Items", "items", True),
                 ("Required", "required", True), ("Properties", "properties", False)])
        function = GoStruct("template.templateToolFunction", {
            "Name": f.get("name") or "", "Description": f.get("description") or "", "Parameters": parameters,
        }, json=[("Name", "name", False), ("Description", "description", False), ("Parameters", "parameters", False)])
        out.append(GoStruct("template.templateTool", {
            "Type": t.get("type") or "", "Items": go_any(t.get("items")), "Function": function,
        }, json=[("Type", "type", False), ("Items", "items", True), ("Function", "function", False)],
            stringer=_stringer_json))
    return ToolList(out)


class ToolList(list):
    """templateTools: a slice whose String method is its JSON (a nil one prints `null`)."""

    def __init__(self, items: Any = (), nil: bool = False):
        super().__init__(items)
        self.nil = nil

    def go_json(self) -> str:
        return "null" if self.nil else "[" + ",".join(to_json(x) for x in self) + "]"

    def go_string(self) -> str:
        return self.go_json()


def template_message(m: dict[str, Any]) -> GoStruct:
    calls = []
    for tc in m.get("tool_calls") or []:
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):  # OpenAI clients send arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                args = {}
        calls.append(GoStruct("template.templateToolCall", {
            "ID": tc.get("id") or "",
            "Function": GoStruct("template.templateToolCallFunction", {
                "Index": int(fn.get("index") or 0), "Name": fn.get("name") or "",
                "Arguments": JSONMap(go_any(args)) if isinstance(args, dict) else JSONMap(),
            })}))
    return GoStruct("*template.templateMessage", {
        "Role": m.get("role") or "", "Content": m.get("content") or "", "Thinking": m.get("thinking") or "",
        "Images": list(m.get("images") or []), "ToolCalls": calls, "ToolName": m.get("tool_name") or "",
        "ToolCallID": m.get("tool_call_id") or "",
    }, ptr=True)


def collate(msgs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """All system contents joined, and the messages with consecutive same-role ones (not tool)
    merged with a blank line between them."""
    system, out = [], []
    for m in msgs:
        if m.get("role") == "system":
            system.append(m.get("content") or "")
        if out and out[-1].get("role") == m.get("role") and m.get("role") != "tool":
            out[-1] = {**out[-1], "content": (out[-1].get("content") or "") + "\n\n" + (m.get("content") or "")}
        else:
            out.append(dict(m))
    return "\n\n".join(system), out


# --- the template ---------------------------------------------------------------------------
def identifiers(node: Any) -> list[str]:
    if isinstance(node, ListNode):
        return [x for n in node.nodes for x in identifiers(n)]
    if isinstance(node, TemplateCall):
        if node.pipe is None:
            raise TemplateError("undefined template specified")
        return identifiers(node.pipe)
    if isinstance(node, Action):
        return identifiers(node.pipe)
    if isinstance(node, Branch):
        out = identifiers(node.pipe) + identifiers(node.body)
        return out + (identifiers(node.else_body) if node.else_body else [])
    if isinstance(node, Pipe):
        return [x for c in node.cmds for a in c.args for x in identifiers(a)]
    if isinstance(node, (Field, Variable)):
        return list(node.idents)
    return []


_RESPONSE = Action(Pipe([], [Command([Field(["Response"])])]))


def _cut_after_response(root: ListNode) -> ListNode:
    """Ollama's deleteNode: keep everything up to the first `.Response` field, drop the rest."""
    cut = False

    def fn(n: Any) -> bool:
        nonlocal cut
        if isinstance(n, Field) and "Response" in n.idents:
            cut = True
            return False
        return cut

    def walk(n: Any) -> Any:
        if fn(n):
            return None
        if isinstance(n, ListNode):
            n.nodes = [c for c in (walk(c) for c in n.nodes) if c is not None]
        elif isinstance(n, Branch):
            n.body = walk(n.body) or ListNode()
            if n.else_body is not None:
                n.else_body = walk(n.else_body) or ListNode()
        elif isinstance(n, Action):
            pipe = walk(n.pipe)
            if pipe is None:
                return None
            n.pipe = pipe
        elif isinstance(n, Pipe):
            cmds = []
            for c in n.cmds:
                args = [a for a in (walk(a) for a in c.args) if a is not None]
                if not args:
                    return None
                c.args = args
                cmds.append(c)
            if not cmds:
                return None
            n.cmds = cmds
        return n
    return walk(copy.deepcopy(root))


class GoTemplate:
    """A parsed Ollama template; `execute` renders it for messages the way Ollama does."""

    def __init__(self, src: str):
        self.src = src
        self.root, self.defines = parse(src, set(FUNCS))
        self.vars = self._vars()
        if "messages" not in self.vars and "response" not in self.vars:
            self.root.nodes.append(copy.deepcopy(_RESPONSE))
            self.vars = self._vars()
        self._cut: ListNode | None = None

    def _vars(self) -> list[str]:
        names = identifiers(self.root) + [x for d in self.defines.values() for x in identifiers(d)]
        return sorted({n.lower() for n in names})

    def _run(self, root: ListNode, data: dict[str, Any], budget: Budget) -> str:
        return Executor(self.defines, FUNCS, budget).run(root, data)

    def execute(self, messages: list[dict[str, Any]], *, tools: list[Any] | None = None,
                prompt: str = "", suffix: str = "", think: bool | str | None = None,
                budget: Budget | None = None) -> str:
        budget = budget or Budget()
        think_vals = {"Think": think_bool(think), "ThinkLevel": think_level(think), "IsThinkSet": think is not None}
        system, msgs = collate(messages)
        if prompt and suffix:
            return self._run(self.root, {"Prompt": prompt, "Suffix": suffix, "Response": "", **think_vals}, budget)
        if "messages" in self.vars:
            return self._run(self.root, {"System": system, "Messages": [template_message(m) for m in msgs],
                                         "Tools": template_tools(tools), "Response": "", **think_vals}, budget)
        out, turn = [], {"System": "", "Prompt": "", "Response": ""}

        def flush() -> None:
            out.append(self._run(self.root, {**turn, **think_vals}, budget))
            turn.update(System="", Prompt="", Response="")
        for m in msgs:
            role, content = m.get("role"), m.get("content") or ""
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    flush()
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    flush()
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
        if self._cut is None:
            self._cut = _cut_after_response(self.root)
        out.append(self._run(self._cut, {**turn, **think_vals}, budget))
        return "".join(out)


def think_bool(think: bool | str | None) -> bool:
    return think in ("high", "medium", "low", "max") if isinstance(think, str) else bool(think)


def think_level(think: bool | str | None) -> str:
    if isinstance(think, str):
        return think
    return "medium" if think is True else ""


# --- what a template tells about the model --------------------------------------------------
def _uses_field(node: Any, name: str) -> bool:
    if isinstance(node, Field):
        return node.idents[0] == name
    if isinstance(node, Pipe):
        return any(_uses_field(a, name) for c in node.cmds for a in c.args)
    return False


def infer_think_tags(t: GoTemplate) -> tuple[str, str]:
    """Ollama's heuristic: around a `.Thinking` inside `range .Messages`, the first and last text
    of the nearest enclosing list are the opening and closing tags ("" when not found)."""
    tags = ["", ""]

    def visit(n: Any, ancestors: list[Any]) -> None:
        ancestors = ancestors + [n]
        if isinstance(n, Field) and n.idents[0] == "Thinking":
            ranges = [a for a in ancestors if isinstance(a, Branch) and a.kind == "range"]
            if ranges and _uses_field(ranges[-1].pipe, "Messages"):
                lst = next((a for a in reversed(ancestors) if isinstance(a, ListNode)), None)
                if lst is not None and lst.nodes:
                    if isinstance(lst.nodes[0], Text):
                        tags[0] = lst.nodes[0].text.strip()
                    if isinstance(lst.nodes[-1], Text):
                        tags[1] = lst.nodes[-1].text.strip()
        children: list[Any] = []
        if isinstance(n, ListNode):
            children = n.nodes
        elif isinstance(n, Branch):
            children = [n.pipe, n.body] + ([n.else_body] if n.else_body else [])
        elif isinstance(n, Action):
            children = [n.pipe]
        elif isinstance(n, TemplateCall) and n.pipe:
            children = [n.pipe]
        elif isinstance(n, Pipe):
            children = [a for c in n.cmds for a in c.args]
        for c in children:
            visit(c, ancestors)
    visit(t.root, [])
    return tags[0], tags[1]


def capabilities(t: GoTemplate) -> list[str]:
    """What Ollama reads off a Go template: `.Tools` -> tools, `.Suffix` -> insert, think tags
    -> thinking."""
    caps = [c for c, var in (("tools", "tools"), ("insert", "suffix")) if var in t.vars]
    opening, closing = infer_think_tags(t)
    if opening and closing:
        caps.append("thinking")
    return caps
