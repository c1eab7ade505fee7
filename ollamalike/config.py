"""Every setting, read lazily from the environment.

`OLLAMALIKE_<NAME>` wins; `OLLAMA_<NAME>` is honoured as a fallback so existing setups keep working.
The ENV table feeds `ollamalike serve --help` and the daemon's startup log.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ollamalike.durations import parse_duration

DEFAULT_PORT = 11434


@dataclass(frozen=True)
class Setting:
    name: str  # without prefix, e.g. "HOST"
    default: str
    help: str

    @property
    def env(self) -> str:
        return f"OLLAMALIKE_{self.name}"


ENV: list[Setting] = [
    Setting("HOST", "127.0.0.1:11434", "IP address and port the daemon binds and the CLI talks to"),
    Setting("MODELS", "", "path to the models directory (default: the user data dir's models/)"),
    Setting("KEEP_ALIVE", "5m", "how long a model stays loaded after its last request"),
    Setting("NUM_PARALLEL", "0", "parallel requests per model, a fixed count of num_ctx slots (0 = slots follow "
            "demand: up to 32 sequences at once, each with its own num_ctx of KV while that fits in a quarter "
            "of free memory, otherwise one unified cache of that size)"),
    Setting("MAX_LOADED_MODELS", "0", "maximum models loaded at once (0 = 3 per GPU, 3 on CPU)"),
    Setting("MAX_QUEUE", "512", "maximum requests waiting for a model before 503 server busy"),
    Setting("CONTEXT_LENGTH", "0", "default context length (num_ctx) per request (0 = by GPU memory as Ollama: "
            "4096 below 24 GiB of VRAM or on the CPU, 32768 below 48 GiB, 262144 above)"),
    Setting("NUM_THREADS", "0", "CPU threads per runner (0 = every core, split between the runners "
            "decoding at the same time; a set count is kept as is)"),
    Setting("KV_UNIFIED", "", "1: one KV cache shared by all of a model's requests (memory per token; batched "
            "greedy output may differ from a lone run's in the last bits), 0: num_ctx of KV per slot; "
            "unset: per slot while that fits, else unified"),
    Setting("KV_SIZE", "0", "KV cells of the unified cache (0 = from available memory; a set size means unified)"),
    Setting("FLASH_ATTENTION", "", "flash attention: 1 on, 0 off, unset = llama.cpp decides (on with a quantized KV cache)"),
    Setting("KV_CACHE_TYPE", "f16", "KV cache data type: f16, q8_0 (half the memory) or q4_0 (a quarter); "
            "quantized types need flash attention"),
    Setting("LOAD_TIMEOUT", "5m", "how long a model may take to load before the load fails (0 or less = no limit)"),
    Setting("GPU_OVERHEAD", "0", "bytes of VRAM to leave free on each GPU"),
    Setting("SCHED_SPREAD", "", "spread every model over all GPUs instead of the one it fits on"),
    Setting("MAX_IMAGES", "10", "most images in one request (a vision model's prompt); more is a 400"),
    Setting("MAX_IMAGE_PIXELS", "40000000", "largest image in pixels (width x height) a request may send; "
            "smaller ones are resized by llama.cpp to what the model's projector expects"),
    Setting("RPC_SERVERS", "", "llama.cpp RPC workers (`ollamalike rpc-worker`) that hold layers of a model, "
            "host:port comma list; layers are spread over this machine and the workers by free memory"),
    Setting("MAX_BODY", "64MiB", "largest JSON request body (413 above it); blob uploads stream to disk unbounded"),
    Setting("NOPRUNE", "", "do not remove unused blobs and leftover temporary files at startup"),
    Setting("DEBUG", "", "show debug logs and tracebacks; 2 (or trace) also logs every rendered prompt"),
    Setting("NOAUTOSTART", "", "do not start a daemon in the background when the CLI finds none"),
    Setting("NOHISTORY", "", "do not keep the interactive chat's input history (the user data dir's history file)"),
    Setting("HF_MIRROR", "", "pull from this instead of the Hugging Face Hub: a directory laid out like the Hub "
            "(<dir>/<org>/<repo>/<file>) or the base URL of a server that answers like it"),
    Setting("CATALOG", "", "a catalog JSON file whose models are added to (or replace) the built-in ones"),
    Setting("ORIGINS", "", "extra allowed browser origins, comma separated (`*` wildcards), beside localhost"),
    Setting("API_KEYS", "", "require `Authorization: Bearer <key>` with one of these keys (comma list; off if empty)"),
    Setting("UPSTREAM_HEALTH_INTERVAL", "10s", "how often each upstream server of an upstream model "
            "(FROM openai+http://...) is checked with GET /models (0 = never; failures still fail over)"),
    Setting("UPSTREAM_CONNECT_TIMEOUT", "5s", "how long connecting to an upstream server may take before the "
            "next upstream is tried"),
    Setting("UPSTREAM_READ_TIMEOUT", "5m", "how long an upstream server may stay silent (before its first byte, "
            "or between two pieces of a stream) before the request fails with a 502 naming it"),
    Setting("API_KEY", "", "the key the CLI sends as `Authorization: Bearer <key>` (to a daemon with API_KEYS)"),
]
_BY_NAME = {s.name: s for s in ENV}


def raw(name: str) -> str:
    """The trimmed value of a setting (OLLAMALIKE_ first, then OLLAMA_), or its default."""
    for key in (f"OLLAMALIKE_{name}", f"OLLAMA_{name}"):
        value = os.environ.get(key)
        if value is not None:
            value = value.strip().strip("\"'").strip()
            if value:
                return value
    return _BY_NAME[name].default


def _flag(name: str) -> bool:
    value = raw(name).lower()
    if not value:
        return False
    return value not in ("0", "false", "f", "no", "off")


def _int(name: str) -> int:
    try:
        return int(raw(name))
    except ValueError:
        return int(_BY_NAME[name].default)


@dataclass(frozen=True)
class HostPort:
    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def connect_url(self) -> str:
        """The URL a client uses: wildcard bind addresses are reached through loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return HostPort(self.scheme, host, self.port, self.path).url


def parse_host(value: str) -> HostPort:
    """Parse OLLAMA_HOST-style values: `ip`, `:port`, `ip:port`, `[::1]:port`, `http(s)://host[:port][/path]`."""
    value = (value or "").strip().strip("\"'")
    scheme, default_port = "http", DEFAULT_PORT
    if "://" in value:
        scheme, _, value = value.partition("://")
        default_port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT)
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    host = parts.hostname if parts.hostname is not None else ""
    if not host:
        host = "127.0.0.1"
    path = parts.path.rstrip("/")
    return HostPort(scheme, host, port, path)


def host() -> HostPort:
    return parse_host(raw("HOST"))


def user_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("ollamalike", appauthor=False))


def models_dir() -> Path:
    value = raw("MODELS")
    return Path(value).expanduser() if value else user_data_dir() / "models"


def keep_alive_seconds() -> float:
    """Default keep_alive in seconds (inf = forever); a bad value falls back to 5 minutes."""
    try:
        return parse_duration(raw("KEEP_ALIVE"))
    except ValueError:
        return 300.0


def num_parallel() -> int:
    return max(0, _int("NUM_PARALLEL"))


def max_loaded_models() -> int:
    return max(0, _int("MAX_LOADED_MODELS"))


def max_queue() -> int:
    return max(1, _int("MAX_QUEUE"))


def context_length() -> int:
    """The default num_ctx, or 0 when the daemon is to choose it from GPU memory."""
    n = _int("CONTEXT_LENGTH")
    return max(4, n) if n > 0 else 0


def load_timeout() -> float:
    """Seconds a load may take (inf = no limit); a bad value: 5 minutes."""
    try:
        seconds = parse_duration(raw("LOAD_TIMEOUT"))
    except ValueError:
        return 300.0
    return math.inf if seconds <= 0 or math.isinf(seconds) else seconds


def flash_attention() -> int:
    """-1 when unset (llama.cpp's automatic choice), 1 on, 0 off."""
    return -1 if not raw("FLASH_ATTENTION") else int(_flag("FLASH_ATTENTION"))


def kv_cache_type() -> str:
    """f16, q8_0 or q4_0; anything else is f16 (as Ollama), with quantized types only where flash
    attention is not switched off."""
    kind = raw("KV_CACHE_TYPE").lower()
    if kind not in ("f16", "q8_0", "q4_0") or flash_attention() == 0:
        return "f16"
    return kind


def gpu_overhead() -> int:
    return max(0, _int("GPU_OVERHEAD"))


def sched_spread() -> bool:
    return _flag("SCHED_SPREAD")


def rpc_servers() -> str:
    return raw("RPC_SERVERS").strip()


def num_threads() -> int:
    return max(0, _int("NUM_THREADS"))


def kv_unified() -> bool | None:
    """KV_UNIFIED: True or False when set, None (the daemon decides per model) when unset."""
    return _flag("KV_UNIFIED") if raw("KV_UNIFIED").strip() else None


def kv_size() -> int:
    return max(0, _int("KV_SIZE"))


def max_body() -> int:
    """The largest JSON request body in bytes (`64MiB`, `1GB`, `1048576`); a bad value: 64 MiB."""
    text = raw("MAX_BODY").strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?", text.lower())
    if not m:
        return 64 << 20
    unit = m.group(2) or ""
    base = 1024 if "i" in unit or unit in ("k", "m", "g", "t") else 1000
    scale = base ** ("kmgt".index(unit[0]) + 1) if unit[:1] in ("k", "m", "g", "t") else 1
    return max(1024, int(float(m.group(1)) * scale))


def max_images() -> int:
    return max(1, _int("MAX_IMAGES"))


def max_image_pixels() -> int:
    return max(1, _int("MAX_IMAGE_PIXELS"))


def noprune() -> bool:
    return _flag("NOPRUNE")


def debug() -> bool:
    return _flag("DEBUG")


TRACE = 5  # the logging level below DEBUG that DEBUG=2 turns on (Ollama's trace level)


def log_level() -> int:
    """The daemon's logging level: INFO, DEBUG with DEBUG set, TRACE with DEBUG=2 (or `trace`)."""
    value = raw("DEBUG").strip().lower()
    if value in ("2", "trace") or (value.isdigit() and int(value) >= 2):
        return TRACE
    return 10 if debug() else 20  # logging.DEBUG, logging.INFO


def autostart() -> bool:
    return not _flag("NOAUTOSTART")


def nohistory() -> bool:
    return _flag("NOHISTORY")


def hf_mirror() -> str:
    return raw("HF_MIRROR")


def catalog_path() -> str:
    return raw("CATALOG")
def origins() -> list[str]:
    return [o.strip() for o in raw("ORIGINS").split(",") if o.strip()]


def api_keys() -> list[str]:
    return [k.strip() for k in raw("API_KEYS").split(",") if k.strip()]


def api_key() -> str:
    return raw("API_KEY").strip()


def upstream_health_interval() -> float:
    return _seconds("UPSTREAM_HEALTH_INTERVAL")


def upstream_connect_timeout() -> float:
    return _seconds("UPSTREAM_CONNECT_TIMEOUT") or 5.0


def upstream_read_timeout() -> float:
    return _seconds("UPSTREAM_READ_TIMEOUT") or 300.0


def _seconds(name: str) -> float:
    value = raw(name)
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = parse_duration(_BY_NAME[name].default)
    return seconds if math.isfinite(seconds) else 0.0


def describe() -> list[tuple[str, str, str]]:
    """(variable, current value, help) for every setting, for help text and the startup log."""
    return [(s.env, "***" if s.name in ("API_KEYS", "API_KEY") and raw(s.name) else raw(s.name), s.help)
            for s in ENV]
