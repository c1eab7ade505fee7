"""Runner options: their types and defaults, Modelfile PARAMETER typing, and layering.

Layers: DEFAULTS -> the model's params -> the request's `options`. Null values are ignored; unknown
keys are ignored (Ollama logs and ignores them); a value of the wrong type is a 400 naming the option.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ollamalike.errors import BadRequest

log = logging.getLogger(__name__)

INT, FLOAT, BOOL, STRINGS = "integer", "float", "boolean", "[]string"

# name -> (type, default). Defaults follow Ollama's DefaultOptions (repeat_penalty 1.0 as in v0.32.10+).
OPTIONS: dict[str, tuple[str, Any]] = {
    "num_keep": (INT, 4),
    "seed": (INT, -1),
    "num_predict": (INT, -1),
    "top_k": (INT, 40),
    "top_p": (FLOAT, 0.9),
    "min_p": (FLOAT, 0.0),
    "typical_p": (FLOAT, 1.0),
    "repeat_last_n": (INT, 64),
    "temperature": (FLOAT, 0.8),
    "repeat_penalty": (FLOAT, 1.0),
    "presence_penalty": (FLOAT, 0.0),
    "frequency_penalty": (FLOAT, 0.0),
    "stop": (STRINGS, []),
    # speculative decoding by prompt lookup (ollamalike's own): up to this many draft tokens a step
    # taken from earlier text that continues the same n-gram; 0 = off. Output is unchanged.
    "lookup_max": (INT, 0),
    "lookup_ngram": (INT, 3),
    # speculative decoding by the model's draft model (Modelfile DRAFT): up to this many greedy draft
    # tokens a step (Ollama's experimental name; draft_max is accepted too); 0 = off
    "draft_num_predict": (INT, 0),
    "draft_max": (INT, 0),
    # load-time options: a change means a different runner
    "num_ctx": (INT, 0),  # 0 = OLLAMALIKE_CONTEXT_LENGTH
    "num_batch": (INT, 512),
    "num_gpu": (INT, -1),
    "main_gpu": (INT, 0),
    "use_mmap": (BOOL, None),
    "num_thread": (INT, 0),
}
# Valid ranges (inclusive); a value outside is a 400 naming the option, before any runner is touched.
_BIG = 2**31 - 1
RANGES: dict[str, tuple[float, float]] = {
    "num_keep": (-1, _BIG), "num_predict": (-2, _BIG), "top_k": (0, _BIG), "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0), "typical_p": (0.0, 1.0), "repeat_last_n": (-1, _BIG), "temperature": (0.0, 1e6),
    "repeat_penalty": (0.0, 1e6), "presence_penalty": (-1e6, 1e6), "frequency_penalty": (-1e6, 1e6),
    "num_ctx": (0, 1 << 24), "num_batch": (1, 1 << 16), "num_gpu": (-1, 100_000), "main_gpu": (0, 1024),
    "num_thread": (0, 4096), "seed": (-(2**63), 2**64 - 1), "lookup_max": (0, 64), "lookup_ngram": (1, 16),
    "draft_num_predict": (0, 64), "draft_max": (0, 64),
}
LOAD_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")
DEPRECATED = {
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
    "mirostat", "mirostat_tau", "mirostat_eta", "tfs_z", "numa", "num_gqa",
}


def _type_error(name: str, kind: str) -> BadRequest:
    return BadRequest(f'option "{name}" must be of type {kind}')


def _in_range(name: str, value: Any) -> Any:
    lo, hi = RANGES.get(name, (-math.inf, math.inf))
    if not lo <= value <= hi:
        got = f"{value:.6g}" if abs(value) > 1e12 else format_value(value)
        raise BadRequest(f'option "{name}" must be between {format_value(lo)} and {format_value(hi)}, got {got}')
    return value


def coerce(name: str, value: Any) -> Any:
    """Check a JSON value against the option's type and range; return the typed value."""
    kind = OPTIONS[name][0]
    if kind in (INT, FLOAT):
        return _in_range(name, _number(name, kind, value))
    if kind == BOOL:
        if not isinstance(value, bool):
            raise _type_error(name, kind)
        return value
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _type_error(name, "array of strings")
    return list(value)


def _number(name: str, kind: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _type_error(name, kind)
    return int(value) if kind == INT else float(value)


def merge(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A new dict: `base` updated with the valid, non-null `overrides`."""
    out = dict(base)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in OPTIONS:
            log.warning("invalid option provided: %s", name)
            continue
        out[name] = coerce(name, value)
    return out


def defaults() -> dict[str, Any]:
    return {name: (list(d) if isinstance(d, list) else d) for name, (_, d) in OPTIONS.items()}


def parse_parameter(name: str, text: str) -> Any:
    """Type one Modelfile `PARAMETER name value` (or REPL `/set parameter`)."""
    key = name.strip().lower()
    if key in DEPRECATED:
        raise BadRequest(f"parameter '{key}' is deprecated")
    if key not in OPTIONS:
        raise BadRequest(f"unknown parameter '{name}'")
    kind = OPTIONS[key][0]
    text = text.strip()
    try:
        if kind == INT:
            return _in_range(key, int(float(text)) if "." in text else int(text))
        if kind == FLOAT:
            if not math.isfinite(float(text)):
                raise ValueError(text)
            return _in_range(key, float(text))
        if kind == BOOL:
            if text.lower() in ("true", "1", "t"):
                return True
            if text.lower() in ("false", "0", "f"):
                return False
            raise ValueError(text)
    except ValueError:
        raise BadRequest(f"invalid value for parameter '{key}': {text!r} is not of type {kind}") from None
    return [text.strip('"')]


def parameters_to_dict(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Typed params from Modelfile PARAMETER lines; repeated `stop` lines accumulate."""
    params: dict[str, Any] = {}
    for name, text in pairs:
        value = parse_parameter(name, text)
        key = name.strip().lower()
        if OPTIONS[key][0] == STRINGS:
            params.setdefault(key, []).extend(value)
        else:
            params[key] = value
    return params


def format_parameters(params: dict[str, Any]) -> str:
    """Params as the `parameters` text of /api/show: one `name value` line each (stop repeated)."""
    lines = []
    for name, value in params.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            shown = f'"{v}"' if isinstance(v, str) else format_value(v)
            lines.append(f"{name:<30} {shown}")
    return "\n".join(lines)


def format_value(v: Any) -> str:
    """A parameter value as Go's %v prints it: `0` not `0.0`, `true` not `True`."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        text = repr(v)
        return text[:-2] if text.endswith(".0") else text
    return str(v)
