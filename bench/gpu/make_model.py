"""Write a llama-architecture GGUF with random Q4_0 weights in a real model's shape (speed does not depend
on the weights' values), so the GPU run needs no download: `--shape llama3.1-8b` is Llama 3.1 8B's
(32 layers, 4096 wide, GQA 32/8 heads, 14336 FFN, 128256 tokens); `--shape tiny` rehearses on a CPU.

    python bench/gpu/make_model.py --shape llama3.1-8b --out /tmp/llama8b-random.gguf
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType

SHAPES = {
    # name: (layers, n_embd, heads, kv heads, ffn, vocab)
    "llama3.1-8b": (32, 4096, 32, 8, 14336, 128256),
    "llama3.2-1b": (16, 2048, 32, 8, 8192, 128256),
    "tiny": (4, 256, 8, 4, 512, 8192),
}
Q4_0 = GGMLQuantizationType.Q4_0


def q4_0(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q4_0 blocks (32 weights in 18 bytes: an f16 scale, 16 bytes of nibbles) with a small,
    finite scale, so activations stay finite through the layers."""
    blocks = rng.integers(0, 256, size=(rows, cols // 32, 18), dtype=np.uint8)
    scale = (rng.standard_normal((rows, cols // 32)) * 0.004).astype(np.float16)
    blocks[:, :, :2] = scale.view(np.uint8).reshape(rows, cols // 32, 2)
    return blocks.reshape(rows, cols // 32 * 18)


def vocab(n: int) -> tuple[list[bytes], list[float], list[int]]:
    """A SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then filler pieces."""
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    words = "the of and to in a is that for it as was with on be at by this had not are but from or have an " \
            "they which one you were all we her she there would their will when who him been has more if no " \
            "out so said what up its about into than them can only other time new some could these two may " \
            "first then do any like my now over such our man me even most made after also did many before " \
            "upon once story dragon ocean city bread recipe history bicycle mountain book kingdom sea".split()
    for w in words:
        tokens.append(("\u2581" + w).encode())
        types.append(TokenType.NORMAL)
    i = 0
    while len(tokens) < n:
        tokens.append(f"\u2581t{i}".encode())
        types.append(TokenType.NORMAL)
        i += 1
    tokens, types = tokens[:n], types[:n]
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(k) for k in range(n - 259)]
    return tokens, scores, [int(t) for t in types]


def write(path: str, shape: str, ctx: int, seed: int = 0) -> None:
    layers, embd, heads, kv_heads, ffn, n_vocab = SHAPES[shape]
    head_dim = embd // heads
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, "llama")
    w.add_name(f"random-{shape}")
    w.add_context_length(ctx)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(2)  # MOSTLY_Q4_0
    tokens, scores, types = vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    ones = np.ones(embd, dtype=np.float32)
    # one random buffer per tensor kind, shared by every layer: the bytes' values do not change the speed
    kv = kv_heads * head_dim
    shared = {"attn_q": q4_0(rng, embd, embd), "attn_k": q4_0(rng, kv, embd), "attn_v": q4_0(rng, kv, embd),
              "attn_output": q4_0(rng, embd, embd), "ffn_gate": q4_0(rng, ffn, embd),
              "ffn_up": q4_0(rng, ffn, embd), "ffn_down": q4_0(rng, embd, ffn)}
    # a Q4_0 tensor is given as its bytes (rows, blocks * 18); the writer derives the element shape
    w.add_tensor("token_embd.weight", q4_0(rng, n_vocab, embd), raw_dtype=Q4_0)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        for kind, data in shared.items():
            w.add_tensor(f"blk.{i}.{kind}.weight", data, raw_dtype=Q4_0)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", q4_0(rng, n_vocab, embd), raw_dtype=Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ctx", type=int, default=8192)
    args = ap.parse_args()
    t0 = time.perf_counter()
    write(args.out, args.shape, args.ctx)
    print(f"wrote {args.out} ({args.shape}) in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
