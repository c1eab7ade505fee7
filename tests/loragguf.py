"""Writes LoRA adapter GGUFs (header and F32 data) for tests, in the layout llama.cpp's
llama-adapter.cpp loads: general.type=adapter, adapter.type=lora, adapter.lora.alpha, and for each
patched weight W (GGML shape [n_in, n_out]) a pair `W.lora_a` [n_in, rank] and `W.lora_b` [rank, n_out]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.ggufwriter import make_model

# SmolLM2-135M's shape (llama architecture): GGML [n_in, n_out] of the weights an adapter may patch.
SMOLLM2 = {"n_layers": 30, "shapes": {"attn_q": (576, 576), "attn_v": (576, 192), "ffn_up": (576, 1536)}}


def write_gguf(path: Path, metadata: list, arrays: dict[str, np.ndarray]) -> Path:
    """A complete GGUF: `metadata` as ggufwriter takes it, F32 tensors from numpy arrays (whose numpy
    shape is the GGML shape reversed)."""
    path.write_bytes(make_model(metadata, list(arrays.items())))
    return path


def write_lora(path: Path, *, arch: str = "llama", rank: int = 4, alpha: float = 4.0, zero: bool = True,
               targets: tuple[str, ...] = ("attn_q", "attn_v"), shape: dict = SMOLLM2, seed: int = 0,
               std: float = 0.05, general_type: str = "adapter") -> Path:
    """A LoRA for every layer's `targets`; `zero` makes lora_b zero, so the adapter changes nothing."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for layer in range(shape["n_layers"]):
        for target in targets:
            n_in, n_out = shape["shapes"][target]
            name = f"blk.{layer}.{target}.weight"
            arrays[name + ".lora_a"] = rng.normal(0, std, (rank, n_in))
            arrays[name + ".lora_b"] = np.zeros((n_out, rank)) if zero else rng.normal(0, std, (n_out, rank))
    meta = [("general.architecture", 8, arch), ("general.type", 8, general_type), ("general.name", 8, "test lora"),
            ("adapter.type", 8, "lora"), ("adapter.lora.alpha", 6, float(alpha))]
    return write_gguf(path, meta, arrays)
