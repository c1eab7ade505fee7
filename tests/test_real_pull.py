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


@pytest.fixture(scope="module")
def setup(tmp_path_factory, smollm2_gguf):
    tmp = tmp_path_factory.mktemp("realpull")
    hub = FakeHub()
    hub.add(SMOL_REPO, "SmolLM2-135M-Instruct-Q4_K_M.gguf", smollm2_gguf)
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
    gets = len(hub.gets("SmolLM2-135M-Instruct-Q4_K_M.gguf"))
    again = d.cli("pull", "smollm2:135m-instruct-q4_K_M")
    assert again.returncode == 0 and again.stderr.strip().endswith("success"), again.stderr
    assert len(hub.gets("SmolLM2-135M-Instruct-Q4_K_M.gguf")) == gets  # served from the blob store
    listed = d.cli("list").stdout
    assert "smollm2:135m " in listed and "smollm2:135m-instruct-q4_K_M" in listed


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
