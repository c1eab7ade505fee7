"""The machine's devices as the daemon sees them, without importing llama_cpp: which GPU backends
the installed llama.cpp was built with (its shared libraries), and free memory from the vendors'
tools (nvidia-smi, rocm-smi). The parsers are pure, for tests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

from ollamalike.runner.rpc import RemoteDevice, RpcDown, probe
from ollamalike.server.memory import available_memory
from ollamalike.server.offload import Gpu, Inventory

MiB = 1 << 20


def backends(lib_dir: Path | None = None) -> set[str]:
    """GPU backends of the installed llama.cpp: `cuda`, `rocm`, `vulkan`, `metal` (from the names of
    the libraries in llama_cpp/lib; a CPU-only build has none)."""
    if lib_dir is None:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            return set()
        lib_dir = Path(list(spec.submodule_search_locations)[0]) / "lib"
    names = " ".join(p.name for p in lib_dir.iterdir()) if lib_dir.is_dir() else ""
    found = {b for key, b in (("ggml-cuda", "cuda"), ("ggml-hip", "rocm"), ("ggml-vulkan", "vulkan"),
                              ("ggml-metal", "metal")) if key in names}
    return found


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """`nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[0].isdigit():
            try:
                gpus.append(Gpu(int(parts[0]), parts[1], "cuda", int(float(parts[2])) * MiB,
                                int(float(parts[3])) * MiB))
            except ValueError:
                continue
    return gpus


def parse_rocm_smi(text: str) -> list[Gpu]:
    """`rocm-smi --showmeminfo vram --showproductname --json`."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    gpus = []
    for key, card in sorted(data.items()):
        if not key.startswith("card") or not key[4:].isdigit():
            continue
        total = int(card.get("VRAM Total Memory (B)", 0) or 0)
        used = int(card.get("VRAM Total Used Memory (B)", 0) or 0)
        gpus.append(Gpu(int(key[4:]), str(card.get("Card series") or card.get("Card SKU") or key), "rocm",
                        total, max(0, total - used)))
    return gpus


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""


def swap_free() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapFree:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


VISIBLE = {"cuda": ("CUDA_VISIBLE_DEVICES",), "rocm": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")}


def visible(gpus: list[Gpu], setting: str | None) -> list[Gpu]:
    """The GPUs a `CUDA_VISIBLE_DEVICES`-style list leaves visible, renumbered as the runtime does
    (the first listed becomes device 0). Unset: all; empty or `-1`: none; UUIDs are kept as listed
    when nvidia-smi's names carry them, else ignored."""
    if setting is None:
        return gpus
    by_index = {g.index: g for g in gpus}
    out: list[Gpu] = []
    for part in setting.split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit():
            continue
        if int(part) < 0:
            break  # the runtimes stop at the first invalid ordinal
        g = by_index.get(int(part))
        if g is not None and g not in out:
            out.append(g)
    return [Gpu(i, g.name, g.library, g.total, g.free) for i, g in enumerate(out)]


def discover() -> Inventory:
    """The devices a runner could use now. GPUs count only when llama.cpp was built for them and
    the vendor's *_VISIBLE_DEVICES leave them visible; OLLAMALIKE_NO_GPU=1 hides them all."""
    ram = available_memory() + swap_free()
    if os.environ.get("OLLAMALIKE_NO_GPU"):
        return Inventory((), ram)
    have = backends()
    gpus: list[Gpu] = []
    if "cuda" in have:
        gpus = parse_nvidia_smi(_run(["nvidia-smi", "--query-gpu=index,name,memory.total,memory.free",
                                      "--format=csv,noheader,nounits"]))
    elif "rocm" in have:
        gpus = parse_rocm_smi(_run(["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"]))
    elif "metal" in have:  # unified memory: Metal may use about two thirds of what is free
        gpus = [Gpu(0, "Metal", "metal", ram, ram * 2 // 3)]
    # Vulkan: no portable free-memory query without the SDK tools; such builds get num_gpu by hand.
    for name in VISIBLE.get(gpus[0].library if gpus else "", ()):
        gpus = visible(gpus, os.environ.get(name))
    return Inventory(tuple(gpus), ram)


def default_context_length(inv: Inventory) -> int:
    """Ollama's default num_ctx by total GPU memory: 4096 below 24 GiB (and on the CPU), 32768
    below 48 GiB, 262144 from there (each model still clamps it to its trained context)."""
    vram = sum(g.total for g in inv.gpus)
    if vram >= 48 << 30:
        return 262144
    if vram >= 24 << 30:
        return 32768
    return 4096


def remote_devices(endpoints: tuple[str, ...], busy: set[str] = frozenset(),  # type: ignore[assignment]
                   timeout: float = 3.0) -> tuple[list[RemoteDevice], list[str]]:
    """The devices of the RPC workers that answer, and why the others are left out. A worker that
    a live runner holds is busy (it serves one client at a time) and is not asked."""
    found: list[RemoteDevice] = []
    down: list[str] = []
    for ep in endpoints:
        if ep in busy:
            down.append(f"rpc worker {ep} is in use by another loaded model")
            continue
        try:
            found += probe(ep, timeout)
        except RpcDown as exc:
            down.append(str(exc))
    return found, down
