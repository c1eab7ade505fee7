"""ADAPTER (LoRA) on the real daemon: stored as an adapter layer, loaded with the model, listed by show,
refused at create when llama.cpp could not apply it (issue 11)."""

from __future__ import annotations

import hashlib

import pytest
import requests

from tests.conftest import smollm2_daemon
from tests.loragguf import write_lora


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, smollm2_gguf):
    """A daemon of this module's own: the models made here must not show in the session daemon's lists."""
    with smollm2_daemon(tmp_path_factory.mktemp("adapter"), smollm2_gguf) as d:
        yield d


pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


def _greedy(daemon, model: str) -> str:
    r = requests.post(daemon.url + "/api/generate", timeout=180, json={
        "model": model, "prompt": "The capital of France is", "raw": True, "stream": False,
        "options": {"temperature": 0, "num_predict": 8, "seed": 1}})
    assert r.status_code == 200, r.text
    return r.json()["response"]


def _upload(daemon, path) -> str:
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    r = requests.post(f"{daemon.url}/api/blobs/{digest}", data=path.read_bytes(), timeout=60)
    assert r.status_code in (200, 201), r.text
    return digest


def test_lora_is_applied_zero_weights_change_nothing_and_show_lists_it(daemon, tmp_path, smollm2_gguf):
    zero = write_lora(tmp_path / "zero.gguf", zero=True)
    live = write_lora(tmp_path / "live.gguf", zero=False, std=0.1, seed=3)
    daemon.create("smol-lora-zero", smollm2_gguf, tmp_path, "ADAPTER ./zero.gguf\n")
    daemon.create("smol-lora-live", smollm2_gguf, tmp_path, f"ADAPTER {live}\n")
    base = _greedy(daemon, "smollm2:135m")
    assert _greedy(daemon, "smol-lora-zero") == base  # the adapter is loaded (a runner of its own) but adds 0
    changed = _greedy(daemon, "smol-lora-live")
    assert changed != base, changed

    shown = requests.post(daemon.url + "/api/show", json={"model": "smol-lora-live"}, timeout=30).json()
    (adapter,) = shown["adapters"]
    assert adapter["digest"] == "sha256:" + hashlib.sha256(live.read_bytes()).hexdigest()
    assert adapter["architecture"] == "llama" and adapter["rank"] == 4 and adapter["alpha"] == 4
    assert [x for x in shown["modelfile"].splitlines() if x.startswith("ADAPTER ")] == [
        "ADAPTER " + str(daemon.models / "blobs" / adapter["digest"].replace(":", "-"))]
    out = daemon.cli("show", "smol-lora-live")
    assert out.returncode == 0 and "Adapters" in out.stdout and "lora    llama    rank 4    alpha 4" in out.stdout, out.stdout
    assert "Adapters" not in daemon.cli("show", "smollm2:135m").stdout

    # a model made FROM the adapted one keeps its adapter (and so its output)
    r = requests.post(daemon.url + "/api/create", json={"model": "smol-lora-copy", "from": "smol-lora-live",
                                                         "stream": False}, timeout=60)
    assert r.status_code == 200, r.text
    assert _greedy(daemon, "smol-lora-copy") == changed


def test_an_adapter_llama_cpp_would_refuse_is_a_create_error(daemon, tmp_path, smollm2_gguf):
    gemma = write_lora(tmp_path / "gemma.gguf", arch="gemma3")
    out = daemon.cli("create", "smol-gemma-lora", "-f", str(_modelfile(tmp_path, smollm2_gguf, gemma)))
    assert out.returncode != 0
    assert "adapter 'gemma.gguf' is for the 'gemma3' architecture but the base model is 'llama'" in out.stderr, out.stderr

    cases = {
        "model.gguf": "is not a LoRA adapter GGUF",  # a whole model is no adapter
        "wide.gguf": "does not fit the base model's [576, 576]",  # another model's shapes
    }
    write_lora(tmp_path / "model.gguf", general_type="model")
    write_lora(tmp_path / "wide.gguf", shape={"n_layers": 1, "shapes": {"attn_q": (960, 960)}}, targets=("attn_q",))
    model_digest = _upload(daemon, smollm2_gguf)  # already stored by the session's create
    for name, message in cases.items():
        r = requests.post(daemon.url + "/api/create", timeout=60, json={
            "model": "smol-bad-lora", "files": {"smol.gguf": model_digest},
            "adapters": {name: _upload(daemon, tmp_path / name)}})
        assert r.status_code == 400 and message in r.json()["error"], (name, r.text)
    after = requests.get(daemon.url + "/api/tags", timeout=30).json()["models"]
    assert not any(m["name"].startswith(("smol-gemma-lora", "smol-bad-lora")) for m in after)


def _modelfile(tmp_path, gguf, adapter):
    mf = tmp_path / "Modelfile.lora"
    mf.write_text(f"FROM {gguf}\nADAPTER {adapter}\n")
    return mf
