"""How much memory a model needs and how many of its layers go to the GPU(s).

Pure: `estimate()` reads sizes from a GGUF's tensor table and metadata, `decide()` places layers on
the devices of an `Inventory` handed in by the caller (tests pass fake ones; the daemon passes what
server/devices.py discovers). `Planner` is the glue the scheduler calls before it starts a runner.

The model follows Ollama's (llm/memory.go): a layer is its `blk.N.*` weights plus its share of the KV
cache; the output layer (`output.weight` + `output_norm`, or the tied `token_embd`) is one extra layer,
so a full offload is `block_count + 1` (what llama.cpp's n_gpu_layers counts, last layers first);
each GPU in use also holds a compute graph and a fixed backend overhead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ollamalike import config
from ollamalike.errors import OllamaError
from ollamalike.runner.process import RunnerSpec
from ollamalike.runner.rpc import RemoteDevice
from ollamalike.server.memory import kv_bytes_per_token
from ollamalike.store.gguf import GGUFInfo, TensorInfo, read_gguf

log = logging.getLogger(__name__)
MiB = 1 << 20
# (elements per block, bytes per block) of each GGML tensor type (ggml.h `enum ggml_type`).
GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}
# Memory a backend takes on each GPU before any model byte (Ollama's figures).
GPU_OVERHEAD = {"cuda": 457 * MiB, "rocm": 457 * MiB, "metal": 512 * MiB, "vulkan": 457 * MiB}
_BLOCK = re.compile(r"blk\.(\d+)\.")


def tensor_bytes(t: TensorInfo) -> int:
    """Bytes of one tensor's data: rows of blocks of its GGML type."""
    block, size = GGML_TYPES.get(t.ggml_type, (1, 4))
    n = math.prod(t.shape) if t.shape else 1
    return -(-n // block) * size


@dataclass(frozen=True)
class Gpu:
    """One accelerator as the inventory sees it. `index` is the backend's device number."""

    index: int
    name: str
    library: str  # cuda, rocm, metal, vulkan
    total: int
    free: int


@dataclass(frozen=True)
class Inventory:
    """What the machine has free right now: GPUs and system memory (RAM + swap) in bytes."""

    gpus: tuple[Gpu, ...] = ()
    ram_free: int = 0
    remotes: tuple[RemoteDevice, ...] = ()  # the devices of reachable RPC workers
    down: tuple[str, ...] = ()  # why configured RPC workers are left out ("rpc worker h:p is down ...")


@dataclass(frozen=True)
class Estimate:
    """Memory of one model at one context: per-layer weights and KV, and compute graphs."""

    layers: tuple[int, ...]  # weight bytes of blk.0 .. blk.N-1
    kv_per_layer: int  # KV bytes of one layer for all the runner's cells
    output: int  # the output layer's weights (offloaded as layer N+1)
    cpu_only: int  # weights that never leave the CPU (token embeddings, ...)
    graph_full: int  # compute buffer with every layer on one GPU
    graph_partial: int  # compute buffer on a GPU that holds only some layers
    projector: int = 0  # a vision projector's weights: on the main GPU when layers are, else on the CPU

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def weights(self) -> int:
        return sum(self.layers) + self.output + self.cpu_only

    @property
    def kv(self) -> int:
        return self.kv_per_layer * self.n_layers


def estimate(info: GGUFInfo, num_ctx: int, parallel: int = 1, num_batch: int = 512,
             kv_bytes_per_value: float = 2, adapters: tuple[GGUFInfo, ...] = (), kv_cells: int = 0) -> Estimate:
    """Estimate a model's memory for `parallel` slots of `num_ctx` tokens each (KV cells = both, or
    `kv_cells` for a unified cache of that size).
    A LoRA adapter's tensors go where the weights they patch go (llama.cpp loads them beside)."""
    md, arch = info.metadata, info.architecture or ""
    n_layers = int(md.get(f"{arch}.block_count") or 0)
    blocks: dict[int, int] = {}
    output = cpu = 0
    tok_embd = 0
    has_output = False
    for t in info.tensors:
        size = tensor_bytes(t)
        if m := _BLOCK.match(t.name):
            blocks[int(m.group(1))] = blocks.get(int(m.group(1)), 0) + size
        elif t.name.startswith("output"):
            output += size
            has_output = has_output or t.name.startswith("output.")
        else:
            cpu += size
            if t.name.startswith("token_embd."):
                tok_embd = size
    for t in (t for a in adapters for t in a.tensors):
        size = tensor_bytes(t)
        if m := _BLOCK.match(t.name):
            blocks[int(m.group(1))] = blocks.get(int(m.group(1)), 0) + size
        elif t.name.startswith("output"):
            output += size
        else:
            cpu += size
    if not has_output:  # tied embeddings: llama.cpp duplicates token_embd as the output layer
        output += tok_embd
    n_layers = max(n_layers, max(blocks, default=-1) + 1)
    layers = tuple(blocks.get(i, 0) for i in range(n_layers))
    cells = kv_cells or max(1, num_ctx) * max(1, parallel)
    kv_layer = kv_bytes_per_token(info, kv_bytes_per_value) * cells // max(1, n_layers)
    embd = int(md.get(f"{arch}.embedding_length") or 0)
    heads = md.get(f"{arch}.attention.head_count") or 1
    heads = max(heads) if isinstance(heads, list) and heads else int(heads)
    kv_heads = md.get(f"{arch}.attention.head_count_kv") or heads
    kv_heads = max(kv_heads) if isinstance(kv_heads, list) and kv_heads else int(kv_heads)
    head_k = int(md.get(f"{arch}.attention.key_length") or (embd // heads if heads else 0))
    vocab = len(md.get("tokenizer.ggml.tokens") or []) or int(md.get(f"{arch}.vocab_size") or 0)
    # Ollama's llama-family graph sizes; each slot attends over its own num_ctx cells.
    b, ctx = num_batch, max(1, num_ctx)
    full = max(4 * b * (1 + 4 * embd + ctx * (1 + heads)), 4 * b * (embd + vocab))
    partial = 4 * b * embd + max(
        4 * b * (1 + embd + max(ctx, embd)) + embd * embd * 9 // 16 + 4 * ctx * (b * heads + head_k * kv_heads),
        4 * b * (embd + vocab) + embd * vocab * 105 // 128)
    return Estimate(layers=layers, kv_per_layer=kv_layer, output=output, cpu_only=cpu,
                    graph_full=full, graph_partial=partial)


@dataclass(frozen=True)
class Plan:
    """Where a model goes: `num_gpu` layers (llama.cpp's n_gpu_layers) split over GPUs."""

    num_gpu: int
    size: int  # estimated total bytes (/api/ps `size`)
    size_vram: int  # of which on GPUs (/api/ps `size_vram`)
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # layers per GPU index, when more than one GPU exists
    reason: str = ""
    per_gpu: dict[int, int] = field(default_factory=dict)  # GPU index -> bytes
    rpc_servers: tuple[str, ...] = ()  # workers the runner connects to (their devices follow the GPUs)
    devices: tuple[tuple[str, int, int], ...] = ()  # (device, layers, bytes) when the model is split over RPC


def human_bytes2(n: int) -> str:
    """Binary units as Ollama's format.HumanBytes2 prints them: `1.5 GiB`, `940.0 MiB`."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _fill(est: Estimate, gpus: list[Gpu], overhead: int, graph: int, limit: int | None) -> dict[int, int]:
    """Layers per GPU, placing the output layer and then blocks from the last one down, each on the
    first GPU (most free first) with room for it; `limit` (a num_gpu override) ignores room."""
    n = est.n_layers
    wanted = n + 1 if limit is None else min(max(0, limit), n + 1)
    sizes = [est.output] + [est.layers[i] + est.kv_per_layer for i in reversed(range(n))]
    used = {g.index: overhead + graph for g in gpus}
    counts = {g.index: 0 for g in gpus}
    for size in sizes[:wanted]:
        for g in gpus:
            if limit is not None or used[g.index] + size <= g.free:
                used[g.index] += size
                counts[g.index] += 1
                break
        else:
            break
    if limit is not None and gpus:  # an override: spread the layers in proportion to free memory
        total_free = sum(g.free for g in gpus) or 1
        counts = {g.index: 0 for g in gpus}
        left = wanted
        for i, g in enumerate(gpus):
            share = left if i == len(gpus) - 1 else round(wanted * g.free / total_free)
            counts[g.index] = min(share, left)
            left -= counts[g.index]
    return counts


# bytes per cached value: f16, and the ggml block types (32 values in 34 or 18 bytes)
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def _shares(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights`, largest remainders first."""
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: counts[i] - exact[i])[:total - sum(counts)]:
        counts[i] += 1
    return counts


def decide_rpc(est: Estimate, inv: Inventory, *, num_gpu: int = -1, extra_overhead: int = 0) -> Plan:
    """A model split over this machine and RPC workers. Layers go to the devices in proportion to
    their free memory, each capped by what fits in it; without a local GPU this machine's CPU takes
    its share by free RAM too (with one, the CPU takes only what the devices cannot). `num_gpu` > 0
    puts exactly that many layers on the devices. llama.cpp's order: the CPU holds the first layers,
    then each device (local GPUs, then the workers') a run of the next ones; the output layer is last."""
    n = est.n_layers
    sizes = [est.layers[i] + est.kv_per_layer for i in range(n)] + [est.output]
    gpus = sorted(inv.gpus, key=lambda g: -g.free)
    gpus = sorted((g for g in gpus if g.library == gpus[0].library), key=lambda g: g.index) if gpus else []
    overhead = GPU_OVERHEAD.get(gpus[0].library, 457 * MiB) + extra_overhead if gpus else 0
    first_remote = max((g.index for g in inv.gpus), default=-1) + 1
    slots = [(f"GPU {g.index}", g.index, g.free - overhead - est.graph_partial) for g in gpus]
    slots += [(r.name, first_remote + i, r.free - est.graph_partial) for i, r in enumerate(inv.remotes)]
    avg = max(1, sum(sizes) // len(sizes))
    if num_gpu > 0:  # a set count: spread it without asking what fits
        counts = _shares(min(num_gpu, n + 1), [max(1, free) for _, _, free in slots])
        reason = f"num_gpu={num_gpu} set"
    else:  # by free memory; a device whose share does not fit is filled and the rest shared again
        free = [max(0, f) for _, _, f in slots]
        if not gpus:
            free.insert(0, max(0, inv.ram_free - est.cpu_only - est.graph_partial))
        caps = [f // avg for f in free]
        got = [0] * len(free)
        active, left = [i for i, f in enumerate(free) if f > 0], n + 1
        while active and left:
            want = dict(zip(active, _shares(left, [free[i] for i in active])))
            full = [i for i in active if want[i] > caps[i]]
            if not full:
                for i in active:
                    got[i] = want[i]
                break
            for i in full:
                got[i] = caps[i]
                left -= caps[i]
                active.remove(i)
        counts = got[0 if gpus else 1:]
        reason = f"{sum(counts)}/{n + 1} layers on {sum(1 for c in counts if c)} device(s) by free memory"
    layers = sum(counts)
    on_cpu = n + 1 - layers
    walk = iter(sizes)
    cpu_bytes = sum(next(walk) for _ in range(on_cpu)) + est.cpu_only + est.graph_partial
    devices = [("CPU", on_cpu, cpu_bytes)]
    per_gpu: dict[int, int] = {}
    for (name, index, _), c in zip(slots, counts):
        used = sum(next(walk) for _ in range(c)) + (est.graph_partial if c else 0)
        devices.append((name, c, used))
        if index < first_remote and c:
            per_gpu[index] = used
    if cpu_bytes > inv.ram_free:
        down = f" ({'; '.join(inv.down)})" if inv.down else ""
        raise OllamaError(f"model requires more system memory ({human_bytes2(cpu_bytes)}) than is available "
                          f"({human_bytes2(inv.ram_free)}) beside what the rpc workers take{down}")
    # the runner connects only to workers that hold layers (a worker serves one client at a time)
    remote_counts = counts[len(gpus):]
    used = tuple(dict.fromkeys(r.endpoint for r, c in zip(inv.remotes, remote_counts) if c))
    by_index = {index: c for (_, index, _), c in zip(slots, counts)}
    split = tuple(float(by_index.get(i, 0)) for i in range(first_remote)) + tuple(
        float(c) for r, c in zip(inv.remotes, remote_counts) if r.endpoint in used)
    return Plan(num_gpu=layers, size=sum(d[2] for d in devices), size_vram=sum(per_gpu.values()),
                main_gpu=min(per_gpu, default=0), tensor_split=split if layers else (), reason=reason,
                per_gpu=per_gpu, rpc_servers=used,
                devices=tuple(d for d in devices if d[1] or d[0] == "CPU"))


def decide(est: Estimate, inv: Inventory, *, num_gpu: int = -1, main_gpu: int = 0,
           extra_overhead: int = 0, spread: bool = False) -> Plan:
    """Offload as many layers as fit (num_gpu < 0), or exactly `num_gpu` (0 = CPU only), on the one
    GPU that takes it all, else (or always, with `spread`) over the GPUs of one library. Raises an
    OllamaError naming required and available memory when the CPU's share does not fit in RAM."""
    n = est.n_layers
    gpus = sorted(inv.gpus, key=lambda g: -g.free)
    counts: dict[int, int] = {}
    reason = "no GPU found" if not gpus else "num_gpu is 0"
    if gpus and num_gpu != 0:
        library = gpus[0].library
        gpus = [g for g in gpus if g.library == library]  # one library at a time, as Ollama does
        overhead = GPU_OVERHEAD.get(library, 457 * MiB) + extra_overhead + est.projector
        limit = None if num_gpu < 0 else num_gpu
        single = None if spread or limit is not None else next(
            (g for g in gpus if _fill(est, [g], overhead, est.graph_full, None)[g.index] == n + 1), None)
        if single is not None:  # a single GPU that takes the whole model beats a spread
            counts = {single.index: n + 1}
            reason = f"fits on GPU {single.index}"
        else:
            counts = _fill(est, gpus, overhead, est.graph_partial, limit)
            if spread and limit is None and len(gpus) > 1:  # as many layers, in proportion to free memory
                counts = _fill(est, gpus, overhead, est.graph_partial, sum(counts.values()))
            counts = {k: v for k, v in counts.items() if v}
            reason = (f"num_gpu={num_gpu} set" if limit is not None else
                      f"{sum(counts.values())}/{n + 1} layers fit in GPU memory" if counts else
                      "too little free GPU memory for one layer")
    layers = sum(counts.values())
    on_gpu = [est.output] + [est.layers[i] + est.kv_per_layer for i in reversed(range(n))]
    per_gpu: dict[int, int] = {}
    order = iter(on_gpu[:layers])
    for idx, c in counts.items():  # same order _fill placed them in
        graph = est.graph_full if layers == n + 1 and len(counts) == 1 else est.graph_partial
        per_gpu[idx] = graph + sum(next(order) for _ in range(c))
    if per_gpu:  # the runner puts the projector on the GPU when it offloads layers (runner/vision.py)
        first = next(iter(per_gpu))
        per_gpu[first] += est.projector
    vram = sum(per_gpu.values())
    cpu_part = est.weights + est.kv - sum(on_gpu[:layers]) + (est.graph_partial if layers < n + 1 else 0)
    if not per_gpu:
        cpu_part += est.projector
    size = vram + cpu_part
    if cpu_part > inv.ram_free:
        raise OllamaError(f"model requires more system memory ({human_bytes2(cpu_part)}) than is available "
                          f"({human_bytes2(inv.ram_free)})")
    split: tuple[float, ...] = ()
    if len(inv.gpus) > 1 and counts:
        split = tuple(float(counts.get(i, 0)) for i in range(max(g.index for g in inv.gpus) + 1))
    if counts and main_gpu not in counts:
        main_gpu = max(counts, key=lambda k: counts[k])
    return Plan(num_gpu=layers, size=size, size_vram=vram, main_gpu=main_gpu, tensor_split=split,
                reason=reason, per_gpu=per_gpu)


class Planner:
    """The scheduler's hook before a load: decide the offload for a spec, in a thread (the device
    query runs smi tools). `inventory` is the seam: a function returning the devices right now;
    `remotes` one returning the RPC workers' devices and why others are left out, given the
    endpoints that live runners hold (`busy`, set by the app once the scheduler exists)."""

    def __init__(self, inventory: Callable[[], Inventory], *, reader: Callable[[str], GGUFInfo] | None = None,
                 remotes: Callable[[set[str]], tuple[list[RemoteDevice], list[str]]] | None = None):
        self.inventory = inventory
        self.reader = reader or (lambda path: read_gguf(path, tensors=True))
        self.remotes = remotes
        self.busy: Callable[[], set[str]] = set

    def plan(self, spec: RunnerSpec) -> Plan:
        try:
            info = self.reader(spec.model_path)
        except (OSError, OllamaError):  # not a GGUF we can read: let the runner say what is wrong
            size = os.path.getsize(spec.model_path) if os.path.isfile(spec.model_path) else 0
            return Plan(num_gpu=max(0, spec.num_gpu), size=size, size_vram=0, main_gpu=spec.main_gpu,
                        reason="unreadable model header")
        try:
            adapters = tuple(self.reader(p) for p in spec.adapters)
        except (OSError, OllamaError):
            adapters = ()
        est = estimate(info, spec.num_ctx, spec.parallel, spec.num_batch,
                       kv_bytes_per_value=KV_BYTES.get(spec.kv_type, 2), adapters=adapters,
                       kv_cells=spec.kv_size if spec.kv_unified else 0)
        if spec.projector and os.path.isfile(spec.projector):
            est = dataclasses.replace(est, projector=os.path.getsize(spec.projector))
        if spec.draft:  # a draft model's weights, KV (f16) and graph count like the projector
            try:
                d = estimate(self.reader(spec.draft), spec.num_ctx, spec.parallel, spec.num_batch)
                est = dataclasses.replace(est, projector=est.projector + d.weights + d.kv + d.graph_full)
            except (OSError, OllamaError):
                pass
        inv = self.inventory()
        if self.remotes is not None and spec.num_gpu != 0:
            found, down = self.remotes(self.busy())
            for why in down:
                log.warning("%s; loading without it", why)
            inv = dataclasses.replace(inv, remotes=tuple(found), down=tuple(down))
            if found:
                return decide_rpc(est, inv, num_gpu=spec.num_gpu, extra_overhead=config.gpu_overhead())
        try:
            return decide(est, inv, num_gpu=spec.num_gpu, main_gpu=spec.main_gpu,
                          extra_overhead=config.gpu_overhead(), spread=config.sched_spread())
        except OllamaError as exc:  # it might have fitted with the workers that are missing
            if inv.down:
                raise OllamaError(f"{exc} ({'; '.join(inv.down)})") from None
            raise

    async def __call__(self, spec: RunnerSpec, info: dict[str, Any]) -> tuple[RunnerSpec, dict[str, Any]]:
        plan = await asyncio.to_thread(self.plan, spec)
        where = "on GPU" if not plan.rpc_servers else "on GPUs and rpc workers " + ",".join(plan.rpc_servers)
        log.info("offload %s: %d layers %s (%s); size %s, on GPU %s", os.path.basename(spec.model_path),
                 plan.num_gpu, where, plan.reason, human_bytes2(plan.size), human_bytes2(plan.size_vram))
        resolved = dataclasses.replace(spec, num_gpu=plan.num_gpu, main_gpu=plan.main_gpu,
                                       tensor_split=plan.tensor_split, rpc_servers=plan.rpc_servers)
        extra: dict[str, Any] = {}
        if plan.rpc_servers:
            extra["devices"] = [{"name": name, "layers": layers, "size": size} for name, layers, size in plan.devices]
        return resolved, {**info, "size": plan.size, "size_vram": plan.size_vram, "offload": plan.reason, **extra}
