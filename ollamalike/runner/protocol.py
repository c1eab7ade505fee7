"""The wire format between the daemon and its runners, and out to clients: compact JSON, one object
per line. One encoder, made once: `json.dumps` with non-default arguments builds a new encoder on
every call, and it is called once per token per stream."""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    """`obj` as compact UTF-8 JSON."""
    return _ENCODER.encode(obj).encode()


def line(obj: Any) -> bytes:
    """`obj` as one NDJSON line."""
    return (_ENCODER.encode(obj) + "\n").encode()
