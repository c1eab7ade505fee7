"""Go values as a template sees them: structs, truth, `fmt` printing (Sprint, Sprintf) and
`encoding/json` output.

Python stands in for Go's types: str/bool/int/float/None, list (slice), dict (map, ranged and
marshalled in sorted key order), OrderedMap (an insertion-ordered map, like Ollama's
ToolPropertiesMap), PropertyType (a []string with Ollama's String and JSON forms) and GoStruct.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any, Callable

from ollamalike.template.gotemplate import TemplateError


class _NoValue:
    """A missing map key or a nil interface: prints `<no value>`, is false, compares as nil."""

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


NO_VALUE = _NoValue()


class OrderedMap(dict):
    """A map that keeps insertion order when ranged, printed and marshalled."""


class PropertyType(list):
    """Ollama's api.PropertyType: one type prints and marshals as a plain string."""

    def go_string(self) -> str:
        if not self:
            return ""
        return self[0] if len(self) == 1 else "[" + " ".join(self) + "]"

    def go_json(self) -> str:
        return to_json(self[0]) if len(self) == 1 else to_json(list(self))


class GoStruct:
    """A struct value: `fields` in declaration order; `json` lists (field, key, omitempty);
    `stringer` gives fmt's output (Go's String method); `methods` are callable from templates."""

    __slots__ = ("type_name", "fields", "json", "stringer", "methods", "ptr")

    def __init__(self, type_name: str, fields: dict[str, Any], *,
                 json: list[tuple[str, str, bool]] | None = None,
                 stringer: Callable[["GoStruct"], str] | None = None,
                 methods: dict[str, Callable[..., Any]] | None = None, ptr: bool = False):
        self.type_name, self.fields, self.json = type_name, fields, json
        self.stringer, self.methods, self.ptr = stringer, methods or {}, ptr

    def __repr__(self) -> str:
        return fmt_value(self)


def is_true(v: Any) -> bool:
    if v is None or v is NO_VALUE:
        return False
    if isinstance(v, GoStruct):
        return True
    if isinstance(v, (bool, int, float, str, list, dict, tuple)):
        return bool(v)
    return True


# --- fmt ------------------------------------------------------------------------------------
def fmt_float(f: float, verb: str = "g") -> str:
    """Go's %v for float64: the shortest repr, exponent form when exp < -4 or exp >= 6."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    sign, digits, exp = Decimal(repr(f)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    point = len(digits) + exp          # position of the decimal point in the digit string
    e = point - 1
    s = "-" if sign else ""
    if e < -4 or e >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{s}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{s}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return s + ds + "0" * (point - len(ds))
    return f"{s}{ds[:point]}.{ds[point:]}"


def fmt_value(v: Any, top: bool = False) -> str:
    """fmt.Sprint of one operand (`top`: as a template prints a pipeline's value)."""
    if v is NO_VALUE or (v is None and top):
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return fmt_float(v)
    if isinstance(v, str):
        return v
    if hasattr(v, "go_string"):
        return v.go_string()
    if isinstance(v, GoStruct):
        if v.stringer:
            return v.stringer(v)
        inner = "{" + " ".join(fmt_value(x) for x in v.fields.values()) + "}"
        return "&" + inner if v.ptr else inner
    if isinstance(v, dict):
        items = v.items() if isinstance(v, OrderedMap) else sorted(v.items(), key=lambda kv: _key(kv[0]))
        return "map[" + " ".join(f"{fmt_value(k)}:{fmt_value(x)}" for k, x in items) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def _key(k: Any) -> Any:
    return (0, k) if isinstance(k, (int, float)) and not isinstance(k, bool) else (1, str(k))


def sorted_items(d: dict) -> list[tuple[Any, Any]]:
    return list(d.items()) if isinstance(d, OrderedMap) else sorted(d.items(), key=lambda kv: _key(kv[0]))


# --- encoding/json --------------------------------------------------------------------------
_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_str(s: str) -> str:
    out = []
    for ch in s:
        e = _JSON_ESC.get(ch)
        if e is None and ord(ch) < 0x20:
            e = "\\u%04x" % ord(ch)
        out.append(e or ch)
    return '"' + "".join(out) + '"'


def _json_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"json: unsupported value: {fmt_float(f)}")
    if f == int(f) and abs(f) < 1e21:
        return str(int(f)) if f or math.copysign(1, f) > 0 else "-0"
    a = abs(f)
    if 1e-6 <= a < 1e21:
        return format(Decimal(repr(f)), "f")
    sign, digits, exp = Decimal(repr(f)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    e = len(digits) + exp - 1
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{'-' if sign else ''}{mant}e{'-' if e < 0 else '+'}{abs(e)}"


def _empty(v: Any) -> bool:
    if isinstance(v, OrderedMap):
        return False  # a pointer to a map: present even when empty
    return v is None or v is NO_VALUE or v is False or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0) \
        or (isinstance(v, (str, list, dict)) and len(v) == 0)


def to_json(v: Any) -> str:
    """json.Marshal's output: compact, HTML-escaped, map keys sorted, struct tags honoured."""
    if v is None or v is NO_VALUE:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, str):
        return _json_str(v)
    if hasattr(v, "go_json"):
        return v.go_json()
    if isinstance(v, GoStruct):
        spec = v.json or [(k, k, False) for k in v.fields]
        parts = [f"{_json_str(key)}:{to_json(v.fields[f])}" for f, key, omit in spec
                 if not (omit and _empty(v.fields[f]))]
        return "{" + ",".join(parts) + "}"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_json_str(str(k))}:{to_json(x)}" for k, x in sorted_items(v)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(to_json(x) for x in v) + "]"
    raise ValueError(f"json: unsupported type {type(v).__name__}")


# --- fmt.Sprint / fmt.Sprintf -----------------------------------------------------------------
def _go_type(v: Any) -> str:
    if isinstance(v, GoStruct):
        return v.type_name
    if isinstance(v, dict):
        return "map[string]interface {}"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    return "<nil>" if v is None else type_name(v)


def type_name(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string"}.get(type(v), type(v).__name__)


def go_sprint(*args: Any) -> str:
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(fmt_value(a))
    return "".join(out)


_MAX_WIDTH = 1 << 16
_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    out, pos, ai = [], 0, 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if width == "*" and ai < len(args) and isinstance(args[ai], int):
            width, ai = str(args[ai]), ai + 1
        if prec == "*" and ai < len(args) and isinstance(args[ai], int):
            prec, ai = str(args[ai]), ai + 1
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[ai]
        ai += 1
        if any(x and x != "*" and abs(int(x)) > _MAX_WIDTH for x in (width, prec)):
            raise TemplateError(f"printf width or precision over {_MAX_WIDTH}")
        out.append(_pad(_verb(verb, a, flags, prec), flags, width))
    out.append(fmt[pos:])
    if ai < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{type_name(a)}={fmt_value(a)}" for a in args[ai:]) + ")")
    return "".join(out)


_QUOTE = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
          '"': '\\"', "\\": "\\\\"}


def go_quote(s: str) -> str:
    """strconv.Quote: printable characters as they are, the rest escaped."""
    out = []
    for ch in s:
        if ch in _QUOTE:
            out.append(_QUOTE[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append("\\u%04x" % ord(ch) if ord(ch) < 0x10000 else "\\U%08x" % ord(ch))
    return '"' + "".join(out) + '"'


def _verb(verb: str, a: Any, flags: str, prec: str | None) -> str:
    num = isinstance(a, (int, float)) and not isinstance(a, bool)
    sign = "+" if "+" in flags else (" " if " " in flags else "")
    if isinstance(a, (list, tuple)) and verb != "v" and not hasattr(a, "go_string"):
        return "[" + " ".join(_verb(verb, x, flags, prec) for x in a) + "]"
    if verb == "T":
        return _go_type(a)
    if a is None and verb != "v":
        return f"%!{verb}(<nil>)"
    if verb == "s" and (num or isinstance(a, bool)):
        return f"%!s({type_name(a)}={fmt_value(a)})"
    if verb in "vs":
        s = fmt_value(a)
        return s[:int(prec)] if prec and verb == "s" else s
    if verb == "q":
        return go_quote(fmt_value(a)) if not isinstance(a, int) or isinstance(a, bool) else "'" + chr(a) + "'"
    if verb == "t" and isinstance(a, bool):
        return fmt_value(a)
    if verb == "d" and isinstance(a, int) and not isinstance(a, bool):
        return format(a, sign + "d")
    if verb in "xX" and isinstance(a, str):
        return a.encode().hex() if verb == "x" else a.encode().hex().upper()
    if verb in "xXob" and isinstance(a, int) and not isinstance(a, bool):
        return format(a, sign + verb)
    if verb == "c" and isinstance(a, int):
        return chr(a)
    if verb == "U" and isinstance(a, int) and not isinstance(a, bool):
        return "U+%04X" % a
    if verb in "eEfFgG" and num:
        if verb in "gG" and prec is None:
            s = fmt_float(float(a))
            return s.upper() if verb == "G" else s
        s = format(float(a), sign + "." + (prec or "6") + verb)
        return re.sub(r"e([+-])(\d)$", r"e\g<1>0\2", s)
    return f"%!{verb}({type_name(a)}={fmt_value(a)})"


def _pad(s: str, flags: str, width: str | None) -> str:
    if not width or width == "*":
        return s
    w = int(width)
    if "-" in flags:
        return s.ljust(w)
    if "0" in flags and re.fullmatch(r"[+-]?[\d.]+(e[+-]\d+)?", s):
        sign = s[0] if s[0] in "+-" else ""
        return sign + s[len(sign):].rjust(w - len(sign), "0")
    return s.rjust(w)
