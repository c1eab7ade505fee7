"""Quantize on create (`create -q`, /api/create `quantize`) through the real daemon and llama.cpp
(issue 11): an F16 SmolLM2 quantized to Q8_0 and Q4_K_M, then run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import smollm2_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, smollm2_gguf):
    """A daemon of this module's own: the models made here must not show in the session daemon's lists."""
    with smollm2_daemon(tmp_path_factory.mktemp("quantize"), smollm2_gguf) as d:
        yield d


pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_gguf) -> Path:
    """SmolLM2 with F16 weights: the test model dequantized by llama.cpp (llama_model_quantize with
    requantizing allowed, through the hidden `quantize` command), built once and cached beside it."""
    cache = Path(os.environ.get("OLLAMALIKE_TEST_CACHE") or Path.home() / ".cache/ollamalike/gguf")
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "SmolLM2-135M-Instruct.F16.gguf"
    if not path.is_file():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        out = subprocess.run([sys.executable, "-m", "ollamalike", "quantize", str(smollm2_gguf), str(tmp), "1",
                              "--allow-requantize"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        os.replace(tmp, path)
    return path


def _run(daemon, model: str) -> dict:
    r = requests.post(daemon.url + "/api/generate", timeout=180, json={
        "model": model, "prompt": "Name a colour.", "stream": False, "options": {"temperature": 0, "num_predict": 4}})
    assert r.status_code == 200 and r.json()["eval_count"] == 4 and r.json()["response"].strip(), r.text
    return r.json()


def _level(daemon, model: str) -> str:
    return requests.post(daemon.url + "/api/show", json={"model": model}, timeout=30).json()["details"][
        "quantization_level"]


def test_cli_create_q8_0_quantizes_f16_weights_and_runs(daemon, tmp_path, smollm2_f16):
    mf = tmp_path / "Modelfile"
    mf.write_text(f"FROM {smollm2_f16}\n")
    out = daemon.cli("create", "smol-q8", "-q", "q8_0", "-f", str(mf))
    assert out.returncode == 0, out.stderr
    assert "quantizing F16 model to Q8_0 0%" in out.stderr and "quantizing F16 model to Q8_0 100%" in out.stderr
    assert "verifying conversion" in out.stderr and out.stderr.rstrip().endswith("success")
    assert _level(daemon, "smol-q8") == "Q8_0"
    size = requests.get(daemon.url + "/api/tags", timeout=30).json()["models"]
    (q8,) = [m for m in size if m["name"] == "smol-q8:latest"]
    assert q8["size"] < smollm2_f16.stat().st_size * 0.6  # 8.5 bits a weight instead of 16
    _run(daemon, "smol-q8")
    assert not list((daemon.models / "blobs").glob(".tmp-*"))


def _upload(daemon, path: Path) -> str:
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    if requests.head(f"{daemon.url}/api/blobs/{digest}", timeout=30).status_code != 200:
        with open(path, "rb") as f:
            assert requests.post(f"{daemon.url}/api/blobs/{digest}", data=f, timeout=300).status_code in (200, 201)
    return digest


def _quantizers(daemon) -> list[int]:
    """The daemon's quantize processes: the hidden command on a blob of its models dir."""
    pids = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0") if p.name.isdigit() else []
        except OSError:
            continue
        if b"quantize" in cmd and any(str(daemon.models).encode() in a for a in cmd):
            pids.append(int(p.name))
    return pids


def test_api_create_quantize_streams_progress_from_a_model(daemon, smollm2_f16):
    digest = _upload(daemon, smollm2_f16)
    r = requests.post(daemon.url + "/api/create", timeout=60, json={
        "model": "smol-f16", "files": {"smol.gguf": digest}, "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}, r.text
    assert _level(daemon, "smol-f16") == "F16"

    r = requests.post(daemon.url + "/api/create", timeout=300, stream=True, json={
        "model": "smol-q4km", "from": "smol-f16", "quantize": "q4_K_M", "system": "Be brief."})
    assert r.status_code == 200
    lines = [json.loads(x) for x in r.iter_lines() if x]
    progress = [x for x in lines if x["status"] == "quantizing F16 model to Q4_K_M"]
    assert len(progress) > 3 and all(x["total"] == smollm2_f16.stat().st_size for x in progress)
    assert progress[0]["completed"] == 0 and progress[-1]["completed"] == progress[-1]["total"]
    assert [x["completed"] for x in progress] == sorted(x["completed"] for x in progress)
    statuses = [x["status"] for x in lines]
    assert statuses.index("verifying conversion") > statuses.index(progress[-1]["status"])
    assert statuses[-1] == "success" and "creating system layer" in statuses
    assert _level(daemon, "smol-q4km") == "Q4_K_M"
    _run(daemon, "smol-q4km")


def test_quantize_refusals_are_ollamas(daemon):
    r = requests.post(daemon.url + "/api/create", timeout=60, json={
        "model": "smol-requant", "from": "smollm2:135m", "quantize": "q8_0"})
    assert r.status_code == 400 and r.json()["error"] == "quantization is only supported for F16, BF16 and F32 models"
    r = requests.post(daemon.url + "/api/create", timeout=60, json={
        "model": "smol-requant", "from": "smollm2:135m", "quantize": "q3_X"})
    assert r.status_code == 400 and r.json()["error"].startswith(
        "unsupported quantization type Q3_X - supported types are F32, F16, Q4_0, Q4_1, Q8_0"), r.text
    names = [m["name"] for m in requests.get(daemon.url + "/api/tags", timeout=30).json()["models"]]
    assert "smol-requant:latest" not in names


def test_a_client_gone_mid_quantize_ends_it_and_stores_nothing(daemon, smollm2_f16):
    digest = _upload(daemon, smollm2_f16)
    blobs = {p.name for p in (daemon.models / "blobs").iterdir()}
    r = requests.post(daemon.url + "/api/create", timeout=300, stream=True, json={
        "model": "smol-gone", "files": {"smol.gguf": digest}, "quantize": "q4_K_M"})
    lines = r.iter_lines()
    first = next(x for x in map(json.loads, lines) if "total" in x)  # after the statuses of the checks
    assert first["status"] == "quantizing F16 model to Q4_K_M" and first["completed"] == 0
    assert len(_quantizers(daemon)) == 1  # its own process, not the daemon's loop
    r.close()
    deadline = time.monotonic() + 30
    while (_quantizers(daemon) or list((daemon.models / "blobs").glob(".tmp-*"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _quantizers(daemon) == [] and not list((daemon.models / "blobs").glob(".tmp-*"))
    assert {p.name for p in (daemon.models / "blobs").iterdir()} == blobs
    assert "smol-gone:latest" not in [m["name"] for m in requests.get(daemon.url + "/api/tags", timeout=30).json()["models"]]
