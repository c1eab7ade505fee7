"""REQUIRES checked and OLLAMALIKE_DEBUG=2's prompt trace, on the real daemon (issue 11)."""

from __future__ import annotations

import pytest
import requests

from ollamalike import __version__
from tests.conftest import Daemon

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


def test_debug_2_traces_the_rendered_prompt_and_requires_is_checked(tmp_path, smollm2_gguf):
    d = Daemon(tmp_path, OLLAMA_DEBUG="2")  # the OLLAMA_ fallback: the helper clears OLLAMALIKE_DEBUG
    try:
        d.create("smol", smollm2_gguf, tmp_path, 'SYSTEM "You are Quibblefrost."\nREQUIRES 0.1\n')
        r = requests.post(d.url + "/api/chat", timeout=180, json={
            "model": "smol", "stream": False, "options": {"temperature": 0, "num_predict": 2},
            "messages": [{"role": "user", "content": "Spell zanzibarine."}]})
        assert r.status_code == 200, r.text
        traced = [x for x in d.log_path.read_text().splitlines() if " TRACE " in x and "rendered prompt for smol" in x]
        assert len(traced) == 1 and "You are Quibblefrost." in traced[0] and "Spell zanzibarine." in traced[0]
        assert "<|im_start|>user" in traced[0]  # the template's rendering, not the bare messages

        d.create("too-new", smollm2_gguf, tmp_path, "REQUIRES 99.0.0\n")
        out = d.cli("show", "too-new")
        assert out.returncode == 0 and "    requires            99.0.0\n" in out.stdout, out.stdout
        out = d.cli("run", "too-new", "hi")
        assert out.returncode != 0 and "requires a newer version of Ollama: it requires 99.0.0, this server is " \
            f"version {__version__}" in out.stderr, out.stderr
        ps = requests.get(d.url + "/api/ps", timeout=30).json()["models"]
        assert [m["name"] for m in ps] == ["smol:latest"]
    finally:
        d.stop()
