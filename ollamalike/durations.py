"""Go-style durations and keep_alive values (number = seconds, negative = forever)."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_SECONDS = (2**63 - 1) / 1e9  # the longest Go time.Duration
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse `1h2m3.5s`, `-10m`, `0` into seconds; raise ValueError otherwise."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_duration(value: object) -> float:
    """A keep_alive value in seconds: numbers are seconds, strings are Go durations or bare
    integers (seconds); anything negative means forever (inf). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(int(text))
        except ValueError:
            seconds = parse_go_duration(text)
    else:
        raise ValueError(f"invalid duration {value!r}")
    if math.isnan(seconds):
        raise ValueError("invalid duration nan")
    # Go's time.Duration tops out near 292 years; Ollama treats anything that long as forever
    return math.inf if seconds < 0 or seconds >= MAX_SECONDS else seconds


def format_go_duration(seconds: float) -> str:
    """Seconds as Go prints a time.Duration (`5m0s`, `1h0m0s`, `1.5s`, `250ms`)."""
    if math.isinf(seconds):
        return "-1"
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.3f}".rstrip("0").rstrip(".") + "ms" if ms >= 1 else f"{seconds * 1e6:.0f}µs"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    s_text = f"{s:.9f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{s_text}"
    if m:
        return f"{int(m)}m{s_text}"
    return s_text
