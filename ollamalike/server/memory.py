"""Memory facts for load decisions: KV bytes per token from the GGUF, and what the machine has free."""

from __future__ import annotations

import os
from dataclasses import dataclass

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


# Slots follow demand: with no NUM_PARALLEL set, a model takes up to this many sequences at once.
DEMAND_SLOTS = 32
# A unified cache gets no more slots than it holds this many cells each (a useful answer's room).
MIN_SEQ_CELLS = 256


@dataclass(frozen=True)
class SlotPlan:
    """How a runner holds its sequences: `parallel` slots, either one KV stream of num_ctx cells per
    slot (kv_size 0) or one unified cache of `kv_size` cells that every slot draws on per token."""

    parallel: int
    unified: bool
    kv_size: int = 0
    why: str = ""


def plan_slots(info: GGUFInfo | None, num_ctx: int, *, fixed: int = 0, unified: bool | None = None,
               kv_size: int = 0, embedding: bool = False, share: float = 0.25,
               available: int | None = None) -> SlotPlan:
    """The slots of a model's runner. `fixed` is NUM_PARALLEL (0 = follow demand), `unified`
    KV_UNIFIED (None = chosen here), `kv_size` KV_SIZE (0 = from memory).

    Following demand, a model takes up to DEMAND_SLOTS sequences at once. When a KV stream of
    num_ctx cells for each of them fits in `share` of the available memory, every slot keeps its own
    stream (greedy output of a request is the same alone or in a batch, to the bit under ~250 tokens
    of context, up to float rounding past that: bench/batch_invariance.py). When it does not, one
    unified cache of what fits (at least one num_ctx) serves them all: memory is spent per token, so
    more sequences run than whole num_ctx windows would fit; when it fills, the newest sequence waits
    and resumes (the engine's preemption)."""
    num_ctx = max(1, num_ctx)
    if embedding:  # embedding models: one slot, as Ollama does
        return SlotPlan(1, False, why="embedding model")
    if info is None:  # an unreadable header: a few slots, as before anything was known
        fixed = fixed or 4
        fits = num_ctx * fixed
    else:
        avail = available_memory() if available is None else available
        fits = int(avail * share // max(1, kv_bytes_per_token(info)))  # cells that memory allows
    if fixed:
        if unified:
            return SlotPlan(fixed, True, kv_size or max(num_ctx, min(num_ctx * fixed, fits)), "NUM_PARALLEL")
        return SlotPlan(fixed, False, why="NUM_PARALLEL")
    split = fits // num_ctx
    if unified is False or (unified is None and not kv_size and split >= DEMAND_SLOTS):
        n = max(1, min(DEMAND_SLOTS, split))
        return SlotPlan(n, False, why=f"{n} streams of num_ctx fit in memory")
    cells = kv_size or max(num_ctx, min(num_ctx * DEMAND_SLOTS, fits))
    n = max(1, min(DEMAND_SLOTS, cells // MIN_SEQ_CELLS))
    return SlotPlan(n, True, cells, why=f"one cache of {cells} cells")
