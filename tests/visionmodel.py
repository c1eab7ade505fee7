"""A tiny random-weight vision projector (a llava-style "mlp" mmproj GGUF) and test images.

No small real vision GGUF is on PyPI, so the tests write one: a one-block CLIP vision tower over a
32x32 image in 8x8 patches (16 image tokens) and a two-layer MLP into the text model's embedding size.
The weights are seeded random numbers: answers are meaningless, but an image's embeddings reach the model.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from tests.ggufwriter import _str, _value, _type_id

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16
_ALIGN = 32


def _tensors(n_embd_text: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    d, ff, hidden = 32, 48, 64  # vision width, vision ffn, projector hidden
    n_patches = IMAGE_TOKENS

    def w(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    ones, zeros = (lambda n: np.ones(n, np.float32)), (lambda n: np.zeros(n, np.float32))
    # numpy shape (out, in) is ggml ne [in, out], the layout clip.cpp's build_mm expects
    tensors = [("v.patch_embd.weight", w(d, 3, PATCH_SIZE, PATCH_SIZE)), ("v.patch_embd.bias", w(d)),
               ("v.position_embd.weight", w(n_patches, d))]
    for il in range(2):  # the llava graph runs n_layer-1 blocks: one here
        p = f"v.blk.{il}."
        tensors += [(p + "attn_q.weight", w(d, d)), (p + "attn_q.bias", zeros(d)),
                    (p + "attn_k.weight", w(d, d)), (p + "attn_k.bias", zeros(d)),
                    (p + "attn_v.weight", w(d, d)), (p + "attn_v.bias", zeros(d)),
                    (p + "attn_out.weight", w(d, d)), (p + "attn_out.bias", zeros(d)),
                    (p + "ln1.weight", ones(d)), (p + "ln1.bias", zeros(d)),
                    (p + "ln2.weight", ones(d)), (p + "ln2.bias", zeros(d)),
                    (p + "ffn_up.weight", w(ff, d)), (p + "ffn_up.bias", zeros(ff)),
                    (p + "ffn_down.weight", w(d, ff)), (p + "ffn_down.bias", zeros(d))]
    tensors += [("mm.0.weight", w(hidden, d)), ("mm.0.bias", zeros(hidden)),
                ("mm.2.weight", w(n_embd_text, hidden, scale=0.15)), ("mm.2.bias", zeros(n_embd_text))]
    return tensors


def mmproj_bytes(n_embd_text: int = 576, seed: int = 0) -> bytes:
    """The projector GGUF: clip architecture, projector type "mlp", all tensors f32."""
    v = 3
    meta = [("general.architecture", 8, "clip"), ("general.name", 8, "tiny-test-projector"),
            ("clip.projector_type", 8, "mlp"), ("clip.has_vision_encoder", 7, True),
            ("clip.use_gelu", 7, True),
            ("clip.vision.image_size", 4, IMAGE_SIZE), ("clip.vision.patch_size", 4, PATCH_SIZE),
            ("clip.vision.embedding_length", 4, 32), ("clip.vision.feed_forward_length", 4, 48),
            ("clip.vision.block_count", 4, 2), ("clip.vision.projection_dim", 4, n_embd_text),
            ("clip.vision.attention.head_count", 4, 2),
            ("clip.vision.attention.layer_norm_epsilon", 6, 1e-5),
            ("clip.vision.image_mean", (9, 6), [0.5, 0.5, 0.5]),
            ("clip.vision.image_std", (9, 6), [0.5, 0.5, 0.5])]
    tensors = _tensors(n_embd_text, seed)
    head = [b"GGUF", struct.pack("<IQQ", v, len(tensors), len(meta))]
    for key, vtype, value in meta:
        head += [_str(key, v), struct.pack("<I", _type_id(vtype)), _value(vtype, value, v)]
    data, offset = [], 0
    for name, arr in tensors:
        dims = b"".join(struct.pack("<Q", n) for n in reversed(arr.shape))  # ggml order: innermost first
        head += [_str(name, v), struct.pack("<I", arr.ndim), dims, struct.pack("<IQ", 0, offset)]
        raw = arr.tobytes()
        pad = (-len(raw)) % _ALIGN
        data.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    header = b"".join(head)
    header += b"\0" * ((-len(header)) % _ALIGN)
    return header + b"".join(data)


def write_mmproj(path: Path, n_embd_text: int = 576, seed: int = 0) -> Path:
    path.write_bytes(mmproj_bytes(n_embd_text, seed))
    return path


def png(width: int, height: int, seed: int = 0, color: tuple[int, int, int] | None = None) -> bytes:
    """An RGB PNG: random pixels from ``seed``, or one flat ``color``."""
    if color is not None:
        pixels = np.tile(np.array(color, np.uint8), (height, width, 1))
    else:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def gif(width: int = 8, height: int = 8) -> bytes:
    """A two-colour GIF89a (one frame) of width x height, every pixel index 0 (red)."""
    # LZW with 2-bit min code size: clear(4), n zeros, end(5); codes stay 3 bits wide for a few codes,
    # so send one clear per pixel to keep the table from growing (valid, if wasteful)
    bits, nbits = 0, 0
    out = bytearray()

    def emit(code: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += 3
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    for _ in range(width * height):
        emit(4)
        emit(0)
    emit(5)
    if nbits:
        out.append(bits & 0xFF)
    blocks = b"".join(bytes([len(out[i:i + 255])]) + bytes(out[i:i + 255]) for i in range(0, len(out), 255))
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\xff\x00\x00\x00\x00\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02" + blocks + b"\x00\x3b")
