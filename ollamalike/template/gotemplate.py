"""Go's text/template language: a lexer and a parser to a tree (the evaluator is goexec.py).

Follows Go's own grammar (text/template/parse): `{{- ` / ` -}}` trim markers, `{{/* comments */}}`,
`if / else if / else / range / with / end`, `break` / `continue`, `define / template / block`,
variable declarations (`$x :=`, `$i, $m := range`), assignment (`$x =`), pipelines with `|`,
parenthesised pipelines, field chains (`.A.B`, `$x.A`, `(pipe).A`) and Go literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class TemplateError(Exception):
    """A template that does not parse or fails while executing; the message is user-facing."""


# --- tree -----------------------------------------------------------------------------------
@dataclass
class Text:
    text: str


@dataclass
class Field:
    idents: list[str]          # `.A.B` -> ["A", "B"]


@dataclass
class Variable:
    idents: list[str]          # `$x.A` -> ["$x", "A"]


@dataclass
class Dot:
    pass


@dataclass
class Nil:
    pass


@dataclass
class Ident:
    name: str                  # a function name


@dataclass
class Literal:
    value: Any                 # str, int, float, bool


@dataclass
class Chain:
    node: Any                  # `(pipe).A.B`
    fields: list[str]


@dataclass
class Command:
    args: list[Any]


@dataclass
class Pipe:
    decl: list[str]            # variable names declared or assigned
    cmds: list[Command]
    is_assign: bool = False


@dataclass
class Action:
    pipe: Pipe


@dataclass
class ListNode:
    nodes: list[Any] = field(default_factory=list)


@dataclass
class Branch:                  # if / range / with
    kind: str
    pipe: Pipe
    body: ListNode
    else_body: ListNode | None = None


@dataclass
class TemplateCall:
    name: str
    pipe: Pipe | None


@dataclass
class Break:
    pass


@dataclass
class Continue:
    pass


# --- lexer ----------------------------------------------------------------------------------
_SPACE = " \t\r\n"
_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|"
                     r"(\d[\d_]*)?\.?\d[\d_]*([eE][+-]?\d+)?|\d[\d_]*\.)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
        '"': '"', "'": "'"}
KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break",
            "continue", "nil", "true", "false"}


@dataclass
class Tok:
    kind: str      # field var ident dot string number char ( ) | := = , kw
    value: Any
    spaced: bool   # preceded by white space
    line: int


def _unquote(body: str, line: int) -> str:
    out, i, raw = [], 0, bytearray()

    def flush() -> None:
        if raw:
            out.append(raw.decode("utf-8", "replace"))
            raw.clear()
    while i < len(body):
        c = body[i]
        if c != "\\":
            flush()
            out.append(c)
            i += 1
            continue
        e = body[i + 1] if i + 1 < len(body) else ""
        if e in _ESC:
            flush()
            out.append(_ESC[e])
            i += 2
        elif e == "x":
            raw.append(int(body[i + 2:i + 4], 16))
            i += 4
        elif e in "01234567":
            raw.append(int(body[i + 1:i + 4], 8))
            i += 4
        elif e in "uU":
            n = 4 if e == "u" else 8
            flush()
            out.append(chr(int(body[i + 2:i + 2 + n], 16)))
            i += 2 + n
        else:
            raise TemplateError(f"template: :{line}: unknown escape sequence \\{e}")
    flush()
    return "".join(out)


def lex(src: str) -> list[tuple[str, Any, int]]:
    """Items: ("text", str, line) and ("action", [Tok...], line), trim markers applied."""
    items: list[tuple[str, Any, int]] = []
    pos, n, trim_next = 0, len(src), False
    counted, line_at = 0, 1  # line numbers counted incrementally: lexing stays linear

    def line_of(i: int) -> int:
        nonlocal counted, line_at
        line_at += src.count("\n", counted, i)
        counted = i
        return line_at
    while pos < n:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        line = line_of(pos)
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                items.append(("text", text, line))
            break
        i = start + 2
        if src.startswith("-", i) and i + 1 < n and src[i + 1] in _SPACE:
            text = text.rstrip(_SPACE)
            i += 2
        if text:
            items.append(("text", text, line))
        line = line_of(start)
        if src.startswith("/*", i):  # comment: must end with */ right before the delimiter
            end = src.find("*/", i + 2)
            if end < 0:
                raise TemplateError(f"template: :{line}: unclosed comment")
            j = end + 2
            if src.startswith(" -}}", j) or src.startswith("\t-}}", j) or src.startswith("\n-}}", j):
                trim_next, pos = True, j + 4
            elif src.startswith("}}", j):
                trim_next, pos = False, j + 2
            else:
                raise TemplateError(f"template: :{line}: comment ends before closing delimiter")
            continue
        toks, i, trim_next = _lex_action(src, i, line)
        items.append(("action", toks, line))
        pos = i
    return items


def _lex_action(src: str, i: int, line: int) -> tuple[list[Tok], int, bool]:
    toks: list[Tok] = []
    n, spaced, depth = len(src), False, 0
    while True:
        if i >= n:
            raise TemplateError(f"template: :{line}: unclosed action")
        c = src[i]
        if c in _SPACE:
            if src[i + 1:i + 4] == "-}}" and depth == 0:
                return toks, i + 4, True
            spaced, i = True, i + 1
            continue
        if src.startswith("}}", i):
            if depth:
                raise TemplateError(f"template: :{line}: unclosed left paren")
            return toks, i + 2, False

        def add(kind: str, value: Any, end: int) -> int:
            nonlocal spaced
            toks.append(Tok(kind, value, spaced, line))
            spaced = False
            return end
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                if src[j] == "\n":
                    raise TemplateError(f"template: :{line}: unterminated quoted string")
                j += 2 if src[j] == "\\" else 1
            if j >= n:
                raise TemplateError(f"template: :{line}: unterminated quoted string")
            i = add("string", _unquote(src[i + 1:j], line), j + 1)
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise TemplateError(f"template: :{line}: unterminated raw quoted string")
            i = add("string", src[i + 1:j].replace("\r", ""), j + 1)
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^'\\])'", src[i:])
            if not m:
                raise TemplateError(f"template: :{line}: malformed character constant")
            i = add("char", ord(_unquote(m.group(1), line)), i + m.end())
        elif c == "(":
            depth += 1
            i = add("(", c, i + 1)
        elif c == ")":
            if not depth:
                raise TemplateError(f"template: :{line}: unexpected right paren")
            depth -= 1
            i = add(")", c, i + 1)
        elif c == "|":
            i = add("|", c, i + 1)
        elif c == ",":
            i = add(",", c, i + 1)
        elif src.startswith(":=", i):
            i = add(":=", ":=", i + 2)
        elif c == "=":
            i = add("=", "=", i + 1)
        elif c == "$":
            m = re.match(r"\$[A-Za-z0-9_]*", src[i:])
            i = add("var", m.group(0), _terminated(src, i + m.end(), line))
        elif c == "." and not (i + 1 < n and src[i + 1].isdigit()):
            m = _WORD.match(src, i + 1)
            if m:
                i = add("field", m.group(0), _terminated(src, m.end(), line))
            else:
                i = add("dot", ".", i + 1)
        elif c.isdigit() or c in "+-.":
            m = _NUMBER.match(src, i)
            if not m or not m.group(0) or m.group(0) in "+-":
                raise TemplateError(f"template: :{line}: bad character {c!r}")
            i = add("number", _number(m.group(0), line), m.end())
        elif _WORD.match(src, i):
            m = _WORD.match(src, i)
            w = m.group(0)
            i = add("kw" if w in KEYWORDS else "ident", w, _terminated(src, m.end(), line))
        else:
            raise TemplateError(f"template: :{line}: unexpected {c!r} in command")


def _terminated(src: str, i: int, line: int) -> int:
    """Go requires a word to end at a space, `.,|:()` or the closing delimiter."""
    if i < len(src) and src[i] not in _SPACE and src[i] not in ".,|:()" and not src.startswith("}}", i):
        raise TemplateError(f"template: :{line}: bad character {src[i]!r}")
    return i


def _number(text: str, line: int) -> int | float:
    t = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+)", t):
            return int(t, 0)
        if re.fullmatch(r"[+-]?0[0-7]+", t):
            return int(t.replace("0", "0o", 1) if t[0] == "0" else t[0] + "0o" + t[2:], 0)
        if re.fullmatch(r"[+-]?\d+", t):
            value = int(t)
            if not -(1 << 63) <= value < (1 << 63):
                raise TemplateError(f"template: :{line}: {text} overflows int")
            return value
        f = float(t)
        if f in (float("inf"), float("-inf")):
            raise ValueError(text)
        return f
    except ValueError:
        raise TemplateError(f"template: :{line}: illegal number syntax: {text!r}") from None


# --- parser ---------------------------------------------------------------------------------
class Parser:
    def __init__(self, src: str, funcs: set[str] | None = None):
        self.items = lex(src)
        self.funcs = funcs
        self.pos = 0
        self.defines: dict[str, ListNode] = {}
        self.vars: list[list[str]] = [["$"]]
        self.ranges = 0  # how many {{range}} bodies enclose the current position

    def parse(self) -> ListNode:
        body, stop = self._list()
        if stop is not None:
            raise TemplateError(f"template: :{stop[2]}: unexpected {{{{{stop[1][0].value}}}}}")
        return body

    # a list of nodes up to {{end}} / {{else}} (returned as the stop item) or the end of input
    def _list(self) -> tuple[ListNode, tuple | None]:
        out = ListNode()
        while self.pos < len(self.items):
            kind, value, line = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                out.nodes.append(Text(value))
                continue
            if not value:
                raise TemplateError(f"template: :{line}: missing value for command")
            head = value[0]
            if head.kind == "kw" and head.value in ("end", "else"):
                return out, (kind, value, line)
            out.nodes.append(self._action(value, line))
        return out, None

    def _action(self, toks: list[Tok], line: int) -> Any:
        head = toks[0]
        if head.kind == "kw":
            if head.value in ("if", "range", "with"):
                return self._branch(head.value, toks[1:], line)
            if head.value in ("break", "continue"):
                if not self.ranges:
                    raise TemplateError(f"template: :{line}: {{{{{head.value}}}}} outside {{{{range}}}}")
                if len(toks) > 1:
                    raise TemplateError(f"template: :{line}: unexpected {toks[1].value} in {head.value}")
                return Break() if head.value == "break" else Continue()
            if head.value in ("define", "block", "template"):
                return self._template(head.value, toks[1:], line)
        return Action(self._pipe(toks, line, decl_ok=True))

    def _branch(self, kind: str, toks: list[Tok], line: int, chained: bool = False) -> Branch:
        self.vars.append(list(self.vars[-1]))
        pipe = self._pipe(toks, line, decl_ok=True, range_ok=kind == "range")
        self.ranges += kind == "range"
        body, stop = self._list()
        self.ranges -= kind == "range"
        else_body = None
        if stop is None:
            raise TemplateError(f"template: :{line}: unexpected EOF")
        stoks = stop[1]
        if stoks[0].value == "else":
            if len(stoks) > 1 and stoks[1].kind == "kw" and stoks[1].value in ("if", "with"):
                if kind == "range" or (stoks[1].value != kind):
                    raise TemplateError(f"template: :{stop[2]}: expected end; found else {stoks[1].value}")
                # `{{else if x}}` is `{{else}}{{if x}}...{{end}}{{end}}` sharing the final end
                else_body = ListNode([self._branch(kind, stoks[2:], stop[2], chained=True)])
            else:
                if len(stoks) > 1:
                    raise TemplateError(f"template: :{stop[2]}: unexpected {stoks[1].value} in else")
                else_body, stop = self._list()
                if stop is None or stop[1][0].value != "end":
                    raise TemplateError(f"template: :{line}: expected end; found {'EOF' if stop is None else 'else'}")
        elif len(stoks) > 1:
            raise TemplateError(f"template: :{stop[2]}: unexpected {stoks[1].value} in end")
        self.vars.pop()
        return Branch(kind, pipe, body, else_body)

    def _template(self, kind: str, toks: list[Tok], line: int) -> Any:
        if not toks or toks[0].kind != "string":
            raise TemplateError(f"template: :{line}: {kind} requires a quoted template name")
        name = toks[0].value
        if kind == "define":
            if len(toks) > 1:
                raise TemplateError(f"template: :{line}: unexpected {toks[1].value} in define")
            saved, self.vars, ranges, self.ranges = self.vars, [["$"]], self.ranges, 0
            body, stop = self._list()
            self.vars, self.ranges = saved, ranges
            if stop is None or stop[1][0].value != "end":
                raise TemplateError(f"template: :{line}: unexpected EOF in define")
            self.defines[name] = body
            return Text("")
        pipe = self._pipe(toks[1:], line) if len(toks) > 1 else None
        if kind == "block":
            saved, self.vars = self.vars, [["$"]]
            body, stop = self._list()
            self.vars = saved
            if stop is None or stop[1][0].value != "end":
                raise TemplateError(f"template: :{line}: unexpected EOF in block")
            self.defines[name] = body
        return TemplateCall(name, pipe)

    def _pipe(self, toks: list[Tok], line: int, decl_ok: bool = False, range_ok: bool = False) -> Pipe:
        decl, is_assign, i = [], False, 0
        if decl_ok and toks and toks[0].kind == "var":
            if len(toks) > 1 and toks[1].kind in (":=", "="):
                decl, is_assign, i = [toks[0].value], toks[1].kind == "=", 2
            elif range_ok and len(toks) > 3 and toks[1].kind == "," and toks[2].kind == "var" \
                    and toks[3].kind in (":=", "="):
                decl, is_assign, i = [toks[0].value, toks[2].value], toks[3].kind == "=", 4
        for v in decl:
            if is_assign and v not in self.vars[-1]:
                raise TemplateError(f"template: :{line}: undefined variable: {v}")
            if not is_assign:
                self.vars[-1].append(v)
        cmds, args = [], []
        end = len(toks)
        while i < end:
            if toks[i].kind == "|":
                if not args:
                    raise TemplateError(f"template: :{line}: missing command")
                cmds.append(Command(args))
                args, i = [], i + 1
                continue
            node, i = self._operand(toks, i, line)
            args.append(node)
        if not args:
            raise TemplateError(f"template: :{line}: missing value for command")
        cmds.append(Command(args))
        return Pipe(decl, cmds, is_assign)

    def _operand(self, toks: list[Tok], i: int, line: int) -> tuple[Any, int]:
        t = toks[i]
        i += 1
        if t.kind == "field":
            node: Any = Field([t.value])
        elif t.kind == "var":
            if t.value not in self.vars[-1]:
                raise TemplateError(f'template: :{line}: undefined variable "{t.value}"')
            node = Variable([t.value])
        elif t.kind == "dot":
            node = Dot()
        elif t.kind in ("string", "number"):
            node = Literal(t.value)
        elif t.kind == "char":
            node = Literal(t.value)
        elif t.kind == "kw" and t.value in ("true", "false"):
            node = Literal(t.value == "true")
        elif t.kind == "kw" and t.value == "nil":
            node = Nil()
        elif t.kind == "ident":
            if self.funcs is not None and t.value not in self.funcs:
                raise TemplateError(f'template: :{line}: function "{t.value}" not defined')
            node = Ident(t.value)
        elif t.kind == "(":
            depth, j = 1, i
            while j < len(toks) and depth:
                depth += {"(": 1, ")": -1}.get(toks[j].kind, 0)
                j += 1
            node, i = self._pipe(toks[i:j - 1], line, decl_ok=True), j
        else:
            raise TemplateError(f"template: :{line}: unexpected {t.value!r} in operand")
        fields = []
        while i < len(toks) and toks[i].kind == "field" and not toks[i].spaced:
            fields.append(toks[i].value)
            i += 1
        if fields:
            if isinstance(node, Field):
                node.idents += fields
            elif isinstance(node, Variable):
                node.idents += fields
            elif isinstance(node, (Literal, Nil)):
                raise TemplateError(f"template: :{line}: unexpected . after term {t.value!r}")
            else:
                node = Chain(node, fields)
        return node, i


def parse(src: str, funcs: set[str] | None = None) -> tuple[ListNode, dict[str, ListNode]]:
    """The tree of `src` and its `define`d templates; TemplateError when it does not parse
    (including a call of a function not in `funcs`, as Go checks at parse time)."""
    p = Parser(src, funcs)
    return p.parse(), p.defines
