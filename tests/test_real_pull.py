"""Pull through the real daemon from a fake Hub (HF_ENDPOINT): the CLI's pull and run's auto-pull with
the real SmolLM2 weights, and the real `ollama` client's pull, streaming and not."""

from __future__ import annotations

import ollama
import pytest

from tests.conftest import Daemon
from tests.fakehub import FakeHub
from tests.ggufwriter import tiny_model

pytestmark = pytest.mark.real

SMOL_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct-Q8_0.gguf"  # smollm2:135m is Q8_0, as in Ollama


@pytest.fixture(scope="module")
def setup(tmp_path_factory, smollm2_gguf):
    tmp = tmp_path_factory.mktemp("realpull")
    hub = FakeHub()
    hub.add(SMOL_REPO, SMOL_FILE, smollm2_gguf)
    hub.add("acme/tiny-GGUF", "tiny-Q4_K_M.gguf", tiny_model(tmp, "t.gguf", template="{{ messages }}"))
    d = Daemon(tmp, HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="0")
    yield d, hub
    d.stop()
    hub.close()


def test_run_auto_pulls_then_pull_is_cached(setup):
    d, hub = setup
    out = d.cli("run", "smollm2:135m", "Say hello in one word.")
    assert out.returncode == 0, out.stderr
    assert "pulling manifest" in out.stderr and "success" in out.stderr
    assert out.stdout.strip()
    gets = len(hub.gets(SMOL_FILE))
    again = d.cli("pull", "smollm2:135m-instruct-q8_0")
    assert again.returncode == 0 and again.stderr.strip().endswith("success"), again.stderr
    assert len(hub.gets(SMOL_FILE)) == gets  # served from the blob store
    listed = d.cli("list").stdout
    assert "smollm2:135m " in listed and "smollm2:135m-instruct-q8_0" in listed


def test_cli_pull_unknown_name(setup):
    d, _ = setup
    out = d.cli("pull", "llama3.3")
    assert out.returncode == 1
    assert out.stderr.startswith("Error: pull model manifest: file does not exist: 'llama3.3:latest' is not in "
                                 "the catalog; did you mean llama3.2"), out.stderr


def test_ollama_client_pull(setup):
    d, _ = setup
    c = ollama.Client(host=d.url)
    parts = list(c.pull("hf.co/acme/tiny-GGUF", stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any(p.digest and p.total for p in parts)
    again = c.pull("hf.co/acme/tiny-GGUF:Q4_K_M")
    assert again.status == "success"
    with pytest.raises(ollama.ResponseError) as err:
        c.pull("hf.co/acme/tiny-GGUF:Q2_K")
    assert "no 'Q2_K' quantization" in str(err.value)


def test_pull_write_failure_loses_nothing(tmp_path, smollm2_gguf):
    """A pull whose weights cannot be written (file size limit standing in for a full disk): a clear
    error, no manifest, no blob, the daemon keeps serving."""
    from tests.test_real_cli import _small_files

    hub = FakeHub()
    hub.add(SMOL_REPO, SMOL_FILE, smollm2_gguf)
    d = Daemon(tmp_path, preexec_fn=_small_files, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"),
               HF_HUB_OFFLINE="0")
    try:
        out = d.cli("pull", "smollm2:135m")
        assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("Error: "), out.stderr
        assert "Traceback" not in out.stderr
        assert f"writing {SMOL_FILE}: file too large" in out.stderr, out.stderr
        assert not (d.models / "manifests").exists() or not any(p.is_file() for p in (d.models / "manifests").rglob("*"))
        blobs = d.models / "blobs"
        assert not blobs.exists() or not any(p.name.startswith("sha256-") and not p.name.endswith("-partial")
                                             for p in blobs.iterdir())
        assert d.proc.poll() is None and ollama.Client(host=d.url).list().models == []
    finally:
        d.stop()
        hub.close()
