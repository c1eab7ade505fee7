"""Writes synthetic GGUF headers for tests."""

import struct
from pathlib import Path

_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _len(n: int, version: int) -> bytes:
    return struct.pack("<I" if version == 1 else "<Q", n)


def _str(s: str, version: int) -> bytes:
    raw = s.encode("utf-8")
    return _len(len(raw), version) + raw


def _value(vtype, value, version: int) -> bytes:
    """Encode a value; for arrays ``vtype`` is ``(9, item_type)`` and item_type may itself be a tuple."""
    if isinstance(vtype, tuple):
        item = vtype[1]
        head = struct.pack("<I", 9 if isinstance(item, tuple) else item)
        return head + _len(len(value), version) + b"".join(_value(item, v, version) for v in value)
    if vtype == 8:
        return _str(value, version)
    return struct.pack("<" + _FMT[vtype], value)


def _type_id(vtype) -> int:
    return 9 if isinstance(vtype, tuple) else vtype


def make_gguf(metadata=(), tensors=(), version=3) -> bytes:
    """Build GGUF header bytes from ``[(key, type, value)]`` and ``[(name, shape, type, offset)]``."""
    out = [b"GGUF", struct.pack("<I", version), _len(len(tensors), version), _len(len(metadata), version)]
    for key, vtype, value in metadata:
        out += [_str(key, version), struct.pack("<I", _type_id(vtype)), _value(vtype, value, version)]
    for name, shape, ggml_type, offset in tensors:
        dims = b"".join(_len(d, version) for d in shape)
        out += [_str(name, version), struct.pack("<I", len(shape)), dims, struct.pack("<IQ", ggml_type, offset)]
    return b"".join(out)


def write(tmp_path: Path, data: bytes, name="m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tiny_model(tmp_path: Path, name="tiny.gguf", template=None, pooling=False) -> Path:
    """A small llama-shaped GGUF header: enough for create/show, not for inference."""
    meta = [("general.architecture", 8, "llama"), ("general.name", 8, "tiny"), ("general.file_type", 4, 15),
            ("llama.context_length", 4, 2048), ("llama.embedding_length", 4, 64), ("llama.block_count", 4, 2),
            ("tokenizer.ggml.tokens", (9, 8), ["<s>", "</s>", "a", "b"]),
            ("tokenizer.ggml.bos_token_id", 4, 0), ("tokenizer.ggml.eos_token_id", 4, 1)]
    if template:
        meta.append(("tokenizer.chat_template", 8, template))
    if pooling:
        meta.append(("llama.pooling_type", 4, 1))
    tensors = [("token_embd.weight", (64, 4), 0, 0), ("blk.0.attn_q.weight", (64, 64), 0, 1024)]
    return write(tmp_path, make_gguf(meta, tensors), name)


# --- a whole, loadable model --------------------------------------------------------------------------
_ALIGN = 32
_F32 = 0


def make_model(metadata, arrays) -> bytes:
    """A complete GGUF (header and F32 data) from ``[(key, type, value)]`` and ``[(name, ndarray)]``;
    shapes are numpy's (outermost first), written in GGUF's innermost-first order."""
    import numpy as np

    infos, blobs, offset = [], [], 0
    for name, arr in arrays:
        data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        infos.append((name, tuple(reversed(arr.shape)), _F32, offset))
        pad = -len(data) % _ALIGN
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = make_gguf(metadata, infos)
    return head + b"\0" * (-len(head) % _ALIGN) + b"".join(blobs)


RERANK_WORDS = ("what is a panda bear the giant species china bread recipe flour water salt hi it "
                "cat dog sky blue red green").split()


def tiny_reranker(path: Path, seed: int = 7, n_embd: int = 32, n_layer: int = 2, n_ctx: int = 128) -> Path:
    """A tiny BERT cross-encoder with a classification head (``cls``, ``cls.output``) and
    ``bert.pooling_type`` = rank, random (seeded) weights and a small WordPiece vocabulary: what
    llama.cpp loads as a reranker. Its scores mean nothing, but they are deterministic and depend
    on the query and the document."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    words = ["\u2581" + w for w in RERANK_WORDS] + ["\u2581" + c for c in letters] + letters + \
        ["\u2581" + p for p in ".,?!'"]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(dict.fromkeys(words))
    n_vocab, n_ff = len(tokens), 2 * n_embd

    def w(*shape, scale=0.2):
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    ones, zeros = np.ones(n_embd, np.float32), np.zeros(n_embd, np.float32)
    arrays = [("token_embd.weight", w(n_vocab, n_embd, scale=1.0)), ("token_types.weight", w(2, n_embd)),
              ("position_embd.weight", w(n_ctx, n_embd)),
              ("token_embd_norm.weight", ones), ("token_embd_norm.bias", zeros)]
    for i in range(n_layer):
        b = f"blk.{i}."
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            arrays += [(b + part + ".weight", w(n_embd, n_embd)), (b + part + ".bias", w(n_embd, scale=0.02))]
        arrays += [(b + "attn_output_norm.weight", ones), (b + "attn_output_norm.bias", zeros),
                   (b + "ffn_up.weight", w(n_ff, n_embd)), (b + "ffn_up.bias", w(n_ff, scale=0.02)),
                   (b + "ffn_down.weight", w(n_embd, n_ff)), (b + "ffn_down.bias", w(n_embd, scale=0.02)),
                   (b + "layer_output_norm.weight", ones), (b + "layer_output_norm.bias", zeros)]
    arrays += [("cls.weight", w(n_embd, n_embd, scale=0.5)), ("cls.bias", w(n_embd, scale=0.1)),
               ("cls.output.weight", w(1, n_embd, scale=2.0)), ("cls.output.bias", np.zeros(1, np.float32))]
    meta = [("general.architecture", 8, "bert"), ("general.name", 8, "tiny-reranker"), ("general.file_type", 4, 0),
            ("bert.context_length", 4, n_ctx), ("bert.embedding_length", 4, n_embd),
            ("bert.feed_forward_length", 4, n_ff), ("bert.block_count", 4, n_layer),
            ("bert.attention.head_count", 4, 2), ("bert.attention.layer_norm_epsilon", 6, 1e-12),
            ("bert.attention.causal", 7, False), ("bert.pooling_type", 4, 4),
            ("tokenizer.ggml.model", 8, "bert"), ("tokenizer.ggml.tokens", (9, 8), tokens),
            ("tokenizer.ggml.token_type", (9, 5), [3] * 5 + [1] * (n_vocab - 5)),
            ("tokenizer.ggml.padding_token_id", 4, 0), ("tokenizer.ggml.unknown_token_id", 4, 1),
            ("tokenizer.ggml.bos_token_id", 4, 2), ("tokenizer.ggml.seperator_token_id", 4, 3),
            ("tokenizer.ggml.mask_token_id", 4, 4), ("tokenizer.ggml.token_type_count", 4, 2)]
    path.write_bytes(make_model(meta, arrays))
    return path
