"""A small pure-Python reader for GGUF file headers.

It reads the magic, version, metadata key/value pairs and (optionally) the
tensor infos of a GGUF file, never the tensor data.  Versions 1 to 3 are
accepted; version 1 used 32-bit lengths and counts, later versions 64-bit ones.
Every length read from the file is checked against the bytes left in the file,
so a truncated or hostile file raises ``BadRequest`` rather than
``struct.error`` or ``MemoryError``.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ollamalike.errors import BadRequest

GGUF_MAGIC = b"GGUF"
MAX_STRING_LEN = 64 * 1024 * 1024
MAX_ARRAY_LEN = 2**28
MAX_DIMS = 8
_CHUNK = 1 << 20

# GGUF metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32 = 0, 1, 2, 3, 4, 5, 6
T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = 7, 8, 9, 10, 11, 12

# struct format character and size of each fixed-size value type.
_SCALARS: dict[int, tuple[str, int]] = {
    T_UINT8: ("B", 1), T_INT8: ("b", 1), T_UINT16: ("H", 2), T_INT16: ("h", 2),
    T_UINT32: ("I", 4), T_INT32: ("i", 4), T_FLOAT32: ("f", 4), T_BOOL: ("?", 1),
    T_UINT64: ("Q", 8), T_INT64: ("q", 8), T_FLOAT64: ("d", 8),
}

FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS",
    31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}


# GGML tensor types (ggml.h `enum ggml_type`), as `/api/show` names them with verbose.
GGML_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
    27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}


def _invalid(why: str) -> BadRequest:
    """Build the error for a malformed file."""
    return BadRequest(f"invalid gguf file: {why}")


@dataclass
class TensorInfo:
    """One tensor's header entry: name, dims (GGML order), GGML type, data offset."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass
class GGUFInfo:
    """The parsed header of a GGUF file."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    tensor_count: int = 0

    @property
    def architecture(self) -> str | None:
        """Return ``general.architecture`` (e.g. ``"llama"``) or None."""
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def _arch_int(self, key: str) -> int | None:
        arch = self.architecture
        value = self.metadata.get(f"{arch}.{key}") if arch else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def parameter_count(self) -> int:
        """Return the sum of element counts of all tensors.

        When the tensor infos were not read, fall back to the metadata key
        ``general.parameter_count`` (0 when absent).
        """
        if self.tensors or self.tensor_count == 0:
            return sum(math.prod(t.shape) for t in self.tensors)
        value = self.metadata.get("general.parameter_count")
        return value if isinstance(value, int) else 0

    def file_type_name(self) -> str:
        """Return Ollama's quantization name for ``general.file_type``, or ``"unknown"``."""
        value = self.metadata.get("general.file_type")
        ok = isinstance(value, int) and not isinstance(value, bool)
        return FILE_TYPES.get(value, "unknown") if ok else "unknown"

    def context_length(self) -> int | None:
        """Return ``{arch}.context_length`` or None."""
        return self._arch_int("context_length")

    def embedding_length(self) -> int | None:  # noqa: D102 - like context_length
        return self._arch_int("embedding_length")

    def block_count(self) -> int | None:  # noqa: D102 - like context_length
        return self._arch_int("block_count")

    def has_pooling(self) -> bool:
        """Report whether ``{arch}.pooling_type`` is present (an embedding model)."""
        arch = self.architecture
        return bool(arch) and f"{arch}.pooling_type" in self.metadata

    def is_reranker(self) -> bool:
        """A reranker (cross-encoder) as llama.cpp reads one: ``{arch}.pooling_type`` is rank (4),
        or no pooling type is set and the file carries a classification head (``cls.output``)."""
        pooling = self._arch_int("pooling_type")
        if pooling is not None:
            return pooling == 4
        return any(t.name in ("cls.output.weight", "cls.weight") for t in self.tensors)

    def chat_template(self) -> str | None:
        """Return the Jinja ``tokenizer.chat_template`` or None."""
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    def token_text(self, token_id: Any) -> str | None:
        """Return the text of ``token_id`` from ``tokenizer.ggml.tokens``, or None."""
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or isinstance(token_id, bool) or not isinstance(token_id, int):
            return None
        if 0 <= token_id < len(tokens) and isinstance(tokens[token_id], str):
            return tokens[token_id]
        return None

    def bos_text(self) -> str | None:
        """Return the text of the BOS token, or None when unknown."""
        return self.token_text(self.metadata.get("tokenizer.ggml.bos_token_id"))

    def eos_text(self) -> str | None:
        """Return the text of the EOS token, or None when unknown."""
        return self.token_text(self.metadata.get("tokenizer.ggml.eos_token_id"))

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """Return the ``model_info`` object of ``/api/show``.

        All metadata except ``general.name`` and ``tokenizer.chat_template``;
        lists longer than 5 items become ``[]`` unless ``verbose``; plus
        ``general.parameter_count``.
        """
        info = {
            key: [] if isinstance(value, list) and len(value) > 5 and not verbose else value
            for key, value in self.metadata.items()
            if key not in ("general.name", "tokenizer.chat_template")
        }
        info["general.parameter_count"] = self.parameter_count()
        return info


def format_parameter_size(n: int) -> str:
    """Format a parameter count the way Ollama does (``format.HumanNumber``).

    ``7_615_616_512 -> "7.6B"``, ``8_000_000_000 -> "8B"``,
    ``134_515_008 -> "134.52M"``, ``135_000_000 -> "135M"``, ``5_000 -> "5K"``.
    """
    n = int(n)
    if n >= 1_000_000_000:
        number = n / 1_000_000_000
        return f"{number:.0f}B" if number == math.floor(number) else f"{number:.1f}B"
    if n >= 1_000_000:
        number = n / 1_000_000
        return f"{number:.0f}M" if number == math.floor(number) else f"{number:.2f}M"
    if n >= 1_000:
        return f"{n / 1_000:.0f}K"
    return str(n)


class _Reader:
    """Buffered little-endian reader that knows how many bytes the file has left."""

    def __init__(self, f: BinaryIO, size: int):
        self.f = f
        self.size = size
        self.buf = b""
        self.pos = 0  # position inside buf
        self.base = 0  # file offset of buf[0]

    def remaining(self) -> int:
        """Return the bytes of the file not yet consumed."""
        return self.size - (self.base + self.pos)

    def need(self, n: int) -> None:
        """Make sure ``n`` bytes are buffered, or raise for a truncated file."""
        avail = len(self.buf) - self.pos
        if avail >= n:
            return
        if n > self.remaining():
            raise _invalid("unexpected end of file")
        more = self.f.read(max(n - avail, _CHUNK))
        self.base += self.pos
        self.buf = self.buf[self.pos:] + more
        self.pos = 0
        if len(self.buf) < n:
            raise _invalid("unexpected end of file")

    def unpack(self, fmt: str, size: int) -> tuple:
        """Unpack ``size`` bytes with struct format ``fmt``."""
        self.need(size)
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def string(self, len_fmt: str, len_size: int) -> str:
        """Read a length-prefixed UTF-8 string (bad bytes are replaced)."""
        (length,) = self.unpack(len_fmt, len_size)
        if length > MAX_STRING_LEN:
            raise _invalid(f"string length {length} too large")
        self.need(length)
        start = self.pos
        self.pos += length
        return self.buf[start:self.pos].decode("utf-8", errors="replace")


def _short_float32(x: float) -> float:
    """Return the shortest decimal that is the same float32 (1e-05, not 9.99999974e-06)."""
    if not math.isfinite(x):
        return x
    packed = struct.pack("<f", x)
    for digits in range(1, 10):
        candidate = float(f"{x:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return x


def _read_value(r: _Reader, vtype: int, lf: str, ls: int, depth: int = 0) -> Any:
    """Read one metadata value of type ``vtype``; ``lf``/``ls`` are the length format/size.

    Scalar float32 values are returned in their shortest round-tripping decimal
    form; float32 arrays are returned as read.
    """
    scalar = _SCALARS.get(vtype)
    if scalar is not None:
        value = r.unpack("<" + scalar[0], scalar[1])[0]
        return _short_float32(value) if vtype == T_FLOAT32 else value
    if vtype == T_STRING:
        return r.string(lf, ls)
    if vtype != T_ARRAY:
        raise _invalid(f"unknown value type {vtype}")
    if depth > 16:
        raise _invalid("arrays nested too deeply")
    (item_type,) = r.unpack("<I", 4)
    (count,) = r.unpack(lf, ls)
    if count > MAX_ARRAY_LEN:
        raise _invalid(f"array length {count} too large")
    scalar = _SCALARS.get(item_type)
    item_size = scalar[1] if scalar else {T_STRING: ls, T_ARRAY: 4 + ls}.get(item_type)
    if item_size is None:
        raise _invalid(f"unknown array item type {item_type}")
    if count * item_size > r.remaining():  # item_size is each item's minimum size
        raise _invalid("unexpected end of file")
    if scalar is not None:
        return list(r.unpack(f"<{count}{scalar[0]}", count * item_size))
    if item_type == T_STRING:
        return [r.string(lf, ls) for _ in range(count)]
    return [_read_value(r, T_ARRAY, lf, ls, depth + 1) for _ in range(count)]


def read_gguf(path: str | os.PathLike[str], *, tensors: bool = True) -> GGUFInfo:
    """Read the header of the GGUF file at ``path``.

    With ``tensors=False`` the tensor infos are skipped (``GGUFInfo.tensors``
    stays empty but ``tensor_count`` is set).  Raises ``BadRequest`` when the
    file is not a valid GGUF file; ``OSError`` when it cannot be opened.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        r = _Reader(f, size)
        if size < 4 or r.unpack("4s", 4)[0] != GGUF_MAGIC:
            raise BadRequest("invalid file magic")
        (version,) = r.unpack("<I", 4)
        if version not in (1, 2, 3):
            raise _invalid(f"unsupported version {version}")
        lf, ls = ("<I", 4) if version == 1 else ("<Q", 8)
        (tensor_count,) = r.unpack(lf, ls)
        (kv_count,) = r.unpack(lf, ls)
        # Each tensor info takes at least 4+ls+4+8 bytes, each kv at least ls+4+1.
        if tensor_count * (ls + 16) + kv_count * (ls + 5) > r.remaining():
            raise _invalid("counts exceed the file size")

        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = r.string(lf, ls)
            (vtype,) = r.unpack("<I", 4)
            metadata[key] = _read_value(r, vtype, lf, ls)

        infos: list[TensorInfo] = []
        if tensors:
            for _ in range(tensor_count):
                name = r.string(lf, ls)
                (n_dims,) = r.unpack("<I", 4)
                if n_dims > MAX_DIMS:
                    raise _invalid(f"tensor {name!r} has {n_dims} dimensions")
                shape = r.unpack(f"<{n_dims}{lf[-1]}", n_dims * ls)
                ggml_type, offset = r.unpack("<IQ", 12)
                infos.append(TensorInfo(name, tuple(shape), ggml_type, offset))
        return GGUFInfo(version=version, metadata=metadata, tensors=infos, tensor_count=tensor_count)
