"""The create-time checks of a LoRA adapter against its base model (llama-adapter.cpp's rules)."""

from __future__ import annotations

import pytest

from ollamalike.errors import BadRequest
from ollamalike.store.create import check_adapter
from ollamalike.store.gguf import GGUFInfo, TensorInfo

BASE = GGUFInfo(3, {"general.architecture": "llama"}, [
    TensorInfo("token_embd.weight", (64, 1000), 8, 0), TensorInfo("blk.0.attn_q.weight", (64, 64), 8, 0),
    TensorInfo("blk.0.attn_v.weight", (64, 16), 8, 0)])
LORA = {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"}


def lora(*tensors: tuple[str, tuple[int, ...]], **meta) -> GGUFInfo:
    return GGUFInfo(3, {**LORA, **meta}, [TensorInfo(n, s, 0, 0) for n, s in tensors])


def test_fitting_pairs_pass_norms_are_skipped_and_embeddings_are_swapped():
    check_adapter("a.gguf", lora(("blk.0.attn_q.weight.lora_a", (64, 8)), ("blk.0.attn_q.weight.lora_b", (8, 64)),
                                 ("blk.0.attn_v.weight.lora_a", (64, 8)), ("blk.0.attn_v.weight.lora_b", (8, 16)),
                                 ("blk.0.attn_norm.weight", (64,)),
                                 ("token_embd.weight.lora_a", (8, 1000)), ("token_embd.weight.lora_b", (8, 64))), BASE)


@pytest.mark.parametrize("adapter, words", [
    (lora(("blk.0.attn_q.weight.lora_a", (64, 8)), ("blk.0.attn_q.weight.lora_b", (8, 64)),
          **{"general.type": "model"}), "is not a LoRA adapter GGUF"),
    (lora(("blk.0.attn_q.weight.lora_a", (64, 8)), **{"adapter.type": "control_vector"}), "is not a LoRA adapter"),
    (lora(("blk.0.attn_q.weight.lora_a", (64, 8)), **{"general.architecture": "qwen2"}),
     "is for the 'qwen2' architecture but the base model is 'llama'"),
    (lora(("blk.0.attn_q.weight.lora_a", (64, 8))), "tensor 'blk.0.attn_q.weight' lacks its lora_a or lora_b"),
    (lora(("blk.0.attn_q.weight", (64, 64))), "unexpected tensor 'blk.0.attn_q.weight'"),
    (lora(("blk.9.attn_q.weight.lora_a", (64, 8)), ("blk.9.attn_q.weight.lora_b", (8, 64))),
     "tensor 'blk.9.attn_q.weight' is not in the base model"),
    (lora(("blk.0.attn_v.weight.lora_a", (64, 8)), ("blk.0.attn_v.weight.lora_b", (8, 64))),
     "has shape a[64, 8] b[8, 64], which does not fit the base model's [64, 16]"),
    (lora(("blk.0.attn_q.weight.lora_a", (8, 64)), ("blk.0.attn_q.weight.lora_b", (64, 8))), "does not fit"),
    (lora(), "has no LoRA tensors"),
])
def test_what_llama_cpp_would_refuse_is_refused_at_create(adapter, words):
    with pytest.raises(BadRequest, match="the model was not created") as exc:
        check_adapter("a.gguf", adapter, BASE)
    assert exc.value.message.startswith("adapter 'a.gguf'") and words in exc.value.message


def test_an_adapter_needs_gguf_weights_to_patch():
    with pytest.raises(BadRequest, match="needs a base model with GGUF weights"):
        check_adapter("a.gguf", lora(("x.lora_a", (1, 1))), None)
