"""Memory facts for load decisions: KV bytes per token from the GGUF, and what the machine has free."""

from __future__ import annotations

import os

from ollamalike.store.gguf import GGUFInfo

F16 = 2


def kv_bytes_per_token(info: GGUFInfo, bytes_per_value: float = F16) -> int:
    """K and V for one token across every layer: n_layer x (k_dim + v_dim) x n_head_kv x bytes."""
    arch = info.architecture or ""
    md = info.metadata
    layers = int(md.get(f"{arch}.block_count") or 0)
    heads = md.get(f"{arch}.attention.head_count") or 1
    heads = max(heads) if isinstance(heads, list) and heads else int(heads or 1)
    kv_heads = md.get(f"{arch}.attention.head_count_kv", heads)
    kv_heads = max(kv_heads) if isinstance(kv_heads, list) and kv_heads else int(kv_heads or heads)
    embd = int(md.get(f"{arch}.embedding_length") or 0)
    k_dim = int(md.get(f"{arch}.attention.key_length") or (embd // heads if heads else 0))
    v_dim = int(md.get(f"{arch}.attention.value_length") or k_dim)
    return int(layers * (k_dim + v_dim) * kv_heads * bytes_per_value)


def available_memory() -> int:
    """Bytes of RAM available to new allocations (MemAvailable), or 8 GiB when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def auto_parallel(info: GGUFInfo | None, num_ctx: int, *, ceiling: int = 8, share: float = 0.25) -> int:
    """Parallel slots for a model: as many as `share` of available memory holds at `num_ctx` each,
    between 1 and `ceiling`. Each slot reserves its own num_ctx KV cells."""
    if info is None:
        return 4
    per_slot = max(1, kv_bytes_per_token(info) * num_ctx)
    return max(1, min(ceiling, int(available_memory() * share // per_slot)))
