"""`ollamalike show`: Ollama's tables (Model, Capabilities, Projector, Parameters, with -v Metadata
and Tensors, System, License), or one raw field."""

from __future__ import annotations

import math
from decimal import Decimal
import sys
from typing import Any, TextIO

from ollamalike.cli import ui
from ollamalike.client import Client


def go_g(x: float) -> str:
    """A number as Go's `%g` prints a float64: shortest digits, an exponent below 1e-4 or from 1e6."""
    x = float(x)
    if not math.isfinite(x):
        return "NaN" if x != x else ("+Inf" if x > 0 else "-Inf")
    if x == 0:
        return "0"
    d = Decimal(repr(x))  # repr holds the shortest digits that read back
    e = d.adjusted()
    if e < -4 or e >= 6:
        sign, digits, _ = d.as_tuple()
        ds = "".join(map(str, digits)).rstrip("0") or "0"
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{'-' if sign else ''}{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}"
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plain(v: float) -> str:
    """Go's FormatFloat(v, 'f', -1, 64)."""
    return format(Decimal(repr(float(v))), "f").removesuffix(".0")


def human_number(n: float) -> str:
    """Ollama's format.HumanNumber: 7.6B, 134.52M, 135M, 5K."""
    n = int(n)
    for unit, size, fmt in (("B", 10**9, "{:.1f}"), ("M", 10**6, "{:.2f}"), ("K", 10**3, "{:.0f}")):
        if n >= size:
            value = n / size
            return (f"{value:.0f}" if value == math.floor(value) else fmt.format(value)) + unit
    return str(n)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return go_g(v)
    if isinstance(v, list):
        shown, total = 0, 1  # Ollama shows what fits in 10 cells, then `...+N more]`
        for i, item in enumerate(v):
            width = len(_value(item)) + (2 if i else 0)
            if i and total + width > 10:
                break
            total += width
            shown += 1
        head = "[" + " ".join(_value(item) for item in v[:shown])
        return head + (f" ...+{len(v) - shown} more]" if shown < len(v) else "]")
    return type(v).__name__


def _head(text: str, n: int) -> list[tuple[str, ...]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [(line,) for line in lines[:n]] + ([("...",)] if len(lines) > n else [])


def _adapter_row(a: dict[str, Any]) -> tuple[str, ...]:
    cells = (a.get("type") or "lora", a.get("architecture") or "", f"rank {a['rank']}" if "rank" in a else "",
             f"alpha {go_g(a['alpha'])}" if "alpha" in a else "", (a.get("digest") or "")[7:19])
    return tuple(c for c in cells if c)


def render(info: dict[str, Any], verbose: bool, out: TextIO) -> None:
    """Ollama's showInfo."""
    d = info.get("details") or {}
    mi = info.get("model_info")
    rows: list[tuple[str, ...]] = []
    if mi:
        arch = mi.get("general.architecture") or ""
        if arch:
            rows.append(("architecture", arch))
        params = d.get("parameter_size") or (human_number(mi["general.parameter_count"])
                                             if isinstance(mi.get("general.parameter_count"), (int, float)) else "")
        if params:
            rows.append(("parameters", params))
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            if isinstance(mi.get(f"{arch}.{key}"), (int, float)):
                rows.append((label, _plain(mi[f"{arch}.{key}"])))
    elif info.get("upstreams"):  # no weights here: what serves it instead
        rows.append(("format", "upstream (OpenAI-compatible servers)"))
    else:
        rows += [("architecture", d.get("family", "")), ("parameters", d.get("parameter_size", ""))]
    if not info.get("upstreams"):
        rows.append(("quantization", d.get("quantization_level", "")))
    if info.get("requires"):
        rows.append(("requires", info["requires"]))
    ui.section("Model", rows, out)
    if info.get("upstreams"):
        ui.section("Upstreams", [(u.get("url", ""), u.get("model", "")) + (
            (f"api_key=${u['api_key_env']}",) if u.get("api_key_env") else ()) for u in info["upstreams"]], out)
    if info.get("capabilities"):
        ui.section("Capabilities", [(c,) for c in info["capabilities"]], out)
    proj = info.get("projector_info")
    if proj is not None:
        prow: list[tuple[str, ...]] = []
        parch = proj.get("general.architecture") or ""
        if parch:
            prow.append(("architecture", parch))
        if isinstance(proj.get("general.parameter_count"), (int, float)):
            prow.append(("parameters", human_number(proj["general.parameter_count"])))
        for suffix, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
            for modality in ("vision", "audio"):
                v = proj.get(f"{parch}.{modality}.{suffix}")
                if isinstance(v, (int, float)):
                    prow.append((label, go_g(v)))
                    break
        ui.section("Projector", prow, out)
    if info.get("adapters"):
        ui.section("Adapters", [_adapter_row(a) for a in info["adapters"]], out)
    if info.get("parameters"):
        ui.section("Parameters", [tuple(line.split()) for line in info["parameters"].splitlines() if line.strip()], out)
    if mi and verbose:
        ui.section("Metadata", [(k, _value(mi[k])) for k in sorted(mi)], out)
    if info.get("tensors") and verbose:
        ui.section("Tensors", [(t.get("name", ""), t.get("type", ""), "[" + " ".join(str(x) for x in t.get("shape") or []) + "]")
                               for t in info["tensors"]], out)
    if info.get("system"):
        ui.section("System", _head(info["system"], 2), out)
    if info.get("license"):
        ui.section("License", _head(info["license"], 2), out)


async def show(client: Client, model: str, field: str | None, verbose: bool = False, out: TextIO | None = None) -> None:
    info = await client.show(model, verbose)
    out = out or sys.stdout
    if field:  # as Ollama: system and template without a newline of their own
        text = info.get(field) or ""
        out.write(text if field in ("system", "template") else text + "\n")
        return
    render(info, verbose, out)
