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
