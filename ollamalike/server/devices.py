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


def discover() -> Inventory:
    """The devices a runner could use now. GPUs count only when llama.cpp was built for them;
    OLLAMALIKE_NO_GPU=1 (or CUDA_VISIBLE_DEVICES=-1) hides them all."""
    ram = available_memory() + swap_free()
    if os.environ.get("OLLAMALIKE_NO_GPU") or os.environ.get("CUDA_VISIBLE_DEVICES") == "-1":
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
    return Inventory(tuple(gpus), ram)
