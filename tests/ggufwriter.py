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
