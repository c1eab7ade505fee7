"""Server settings that must have an effect, on the real daemon (issue 11)."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import Daemon

pytestmark = pytest.mark.real


def test_load_timeout_fails_a_slow_load_clearly(tmp_path, smollm2_gguf):
    d = Daemon(tmp_path, OLLAMALIKE_LOAD_TIMEOUT="1ms")
    try:
        d.create("smol", smollm2_gguf, tmp_path)
        r = requests.post(d.url + "/api/generate", json={"model": "smol", "prompt": "hi", "stream": False}, timeout=120)
        assert r.status_code == 500 and "timed out waiting for the model to load" in r.json()["error"], r.text
        assert d.runner_pids() == []  # the half-loaded runner is ended
    finally:
        d.stop()


def test_serve_help_lists_every_setting(daemon):
    from ollamalike import config

    out = daemon.cli("serve", "--help").stdout
    for s in config.ENV:
        assert f"OLLAMALIKE_{s.name}" in out, s.name


def _cmdlines(d: Daemon) -> list[list[str]]:
    out = []
    for pid in d.runner_pids():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            out.append([a.decode() for a in f.read().split(b"\0")])
    return out


def _load(d: Daemon, **options) -> dict:
    r = requests.post(d.url + "/api/generate", timeout=120, json={
        "model": "smol", "prompt": "Say hi.", "stream": False, "options": {"temperature": 0, "num_predict": 4, **options}})
    assert r.status_code == 200 and r.json()["eval_count"] == 4, r.text
    return requests.get(d.url + "/api/ps", timeout=30).json()["models"][0]


def test_kv_cache_type_flash_attention_and_use_mmap_reach_llama_cpp(tmp_path, smollm2_gguf):
    sizes = {}
    for kind in ("f16", "q8_0"):
        (tmp_path / kind).mkdir()
        d = Daemon(tmp_path / kind, OLLAMALIKE_KV_CACHE_TYPE=kind, OLLAMALIKE_NUM_PARALLEL="2",
                   OLLAMALIKE_CONTEXT_LENGTH="4096")
        try:
            d.create("smol", smollm2_gguf, tmp_path)
            sizes[kind] = _load(d)["size"]
            (cmd,) = _cmdlines(d)
            if kind == "q8_0":  # a quantized cache needs flash attention: switched on with it
                assert cmd[cmd.index("--kv-type") + 1] == "q8_0" and cmd[cmd.index("--flash-attn") + 1] == "1"
                _load(d, use_mmap=False)  # another load: the weights read into memory
                assert any("--no-mmap" in c for c in _cmdlines(d))
            else:
                assert "--kv-type" not in cmd and "--flash-attn" not in cmd and "--no-mmap" not in cmd
        finally:
            d.stop()
    # the estimate (and /api/ps) accounts for the smaller cache: 2 x 4096 cells of SmolLM2's KV take
    # 30 layers x (64 + 64) x 3 heads x 2 bytes = 23,040 bytes per cell in f16, 34/64 of that in q8_0
    assert abs((sizes["f16"] - sizes["q8_0"]) - 8192 * 23040 * (1 - 34 / 64)) < 1 << 20, sizes
    (tmp_path / "off").mkdir()
    off = Daemon(tmp_path / "off", OLLAMALIKE_KV_CACHE_TYPE="q8_0", OLLAMALIKE_FLASH_ATTENTION="0")
    try:
        off.create("smol", smollm2_gguf, tmp_path)
        _load(off)
        (cmd,) = _cmdlines(off)
        assert cmd[cmd.index("--flash-attn") + 1] == "0" and "--kv-type" not in cmd  # f16, as Ollama
    finally:
        off.stop()
