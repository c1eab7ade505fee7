"""What the daemon says about a stored model, with no runner: its GGUF facts (cached), details,
capabilities, adapters, projector, upstream servers, the REQUIRES check; and the API's time format."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ollamalike import __version__
from ollamalike.api import upstream as up
from ollamalike.errors import BadRequest, OllamaError, PreconditionFailed
from ollamalike.server import prompt as prompts
from ollamalike.store.create import version_tuple
from ollamalike.store.gguf import GGUFInfo, read_gguf
from ollamalike.store.manifests import Model


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(ts: datetime | float) -> str:
    if isinstance(ts, (int, float)):
        try:
            ts = datetime.fromtimestamp(ts, timezone.utc)
        except (OverflowError, OSError, ValueError):  # forever, or past what a timestamp holds
            ts = datetime(2318, 1, 1, tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=64)
def _gguf(path: str, mtime: float) -> GGUFInfo:
    return read_gguf(path, tensors=True)


def gguf_info(model: Model) -> GGUFInfo | None:
    if model.model_path is None or not model.model_path.is_file():
        return None
    return _gguf(str(model.model_path), model.model_path.stat().st_mtime)


def normalize(vector: list[float], dimensions: int | None = None) -> list[float]:
    """L2-normalise, after truncating to `dimensions` when given (as /api/embed does)."""
    if dimensions:
        vector = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def adapter_info(model: Model) -> list[dict[str, Any]]:
    """What show says of each LoRA adapter: its digest, size and header facts."""
    out = []
    for path in model.adapters:
        entry: dict[str, Any] = {"digest": "sha256:" + path.name.split("-", 1)[-1],
                                 "size": path.stat().st_size if path.is_file() else 0, "type": "lora"}
        try:
            info = _gguf(str(path), path.stat().st_mtime)
        except (OSError, OllamaError):  # missing or unreadable: show says what it can
            info = None
        if info is not None:
            entry["architecture"] = info.architecture or ""
            alpha = info.metadata.get("adapter.lora.alpha")
            if isinstance(alpha, (int, float)):
                entry["alpha"] = alpha
            ranks = {t.shape[1] for t in info.tensors if t.name.endswith(".lora_a") and len(t.shape) > 1}
            if len(ranks) == 1:
                entry["rank"] = ranks.pop()
        out.append(entry)
    return out


def check_requires(model: Model) -> None:
    """A model whose REQUIRES names a newer Ollama than the one this daemon reports (/api/version)
    is refused with Ollama's words rather than run wrongly."""
    need = model.config.get("requires")
    if isinstance(need, str) and need and version_tuple(need) > version_tuple(__version__):
        raise PreconditionFailed(f"model '{model.name.display()}' requires a newer version of Ollama: it requires "
                                 f"{need}, this server is version {__version__} (upgrade ollamalike to run it)")


def _projector_info(m: Model, verbose: bool) -> dict[str, Any]:
    path = m.projectors[0]
    if not path.is_file():
        return {}
    return _gguf(str(path), path.stat().st_mtime).model_info(verbose=verbose)


def details(model: Model) -> dict[str, Any]:
    cfg = model.config
    family = cfg.get("model_family", "")
    return {
        "parent_model": "",
        "format": cfg.get("model_format", "gguf"),
        "family": family,
        "families": cfg.get("model_families") or ([family] if family else None),
        "parameter_size": cfg.get("model_type", ""),
        "quantization_level": cfg.get("file_type", ""),
    }


def refs(model: Model) -> list[up.UpstreamRef]:
    """The upstream servers of a model served by them (empty for a model with weights)."""
    return [up.UpstreamRef.from_json(u) for u in model.upstreams]


def no_weights(model: Model, what: str) -> BadRequest:
    if model.upstreams:
        return BadRequest(f"model '{model.name.display()}' is served by upstream servers "
                          f"({', '.join(r.url for r in refs(model))}): {what} needs local weights")
    return BadRequest(f"model '{model.name.display()}' has no weights")


def capabilities(model: Model) -> list[str]:
    if model.config.get("rerank"):  # a cross-encoder: scores query/document pairs, nothing else
        return ["rerank"]
    if model.upstreams:  # what the upstream serves is its own business; /api/embed is passed on too
        return ["completion", "tools"]
    caps = ["embedding"] if model.config.get("pooling") else ["completion"]
    template = model.template or ""
    # a template without a tools section still gets tools: they are taught in a Hermes-style system
    # prompt and the calls parsed from the reply (server/tools.py), so say so to clients that ask
    if "completion" in caps:
        caps.append("tools")
    if model.projectors and "completion" in caps:
        caps.append("vision")
    go_caps = prompts.go_capabilities(template) if template else None
    if go_caps is not None:  # Ollama's reading of a Go template: .Suffix, think tags
        return caps + [c for c in go_caps if c not in caps]
    if ".Suffix" in template or "suffix" in template:
        caps.append("insert")
    if "<think>" in template:
        caps.append("thinking")
    return caps


def _remote(m: Model) -> dict[str, Any]:
    """Ollama's fields for a model served elsewhere (its cloud models): the first upstream."""
    r = refs(m)
    return {"remote_model": r[0].model, "remote_host": r[0].url} if r else {}
