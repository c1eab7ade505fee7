"""Schemathesis fuzzing of the native API against Ollama's published OpenAPI spec: no 5xx, no crash.

The daemon app runs in a thread on a free port with the fake runner (fast, no weights), with one
model created so that generated requests can reach generation as well as the 404 paths.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from ollamalike.server.app import create_app
from tests.conftest import free_port
from tests.fakes import FakeFactory
from tests.ggufwriter import tiny_model

SPEC = Path("/work/shared/reference/ollama-openapi.yaml")
SPEC = SPEC if SPEC.is_file() else Path(__file__).resolve().parents[2] / "shared/reference/ollama-openapi.yaml"
schema = schemathesis.openapi.from_path(str(SPEC)).include(
    path_regex=r"^/api/(generate|chat|embed|tags|ps|show|copy|delete|version)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    loop = asyncio.new_event_loop()
    app = create_app(tmp / "models", spawn=FakeFactory(), parallel=2)
    runner = web.AppRunner(app)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    url = f"http://127.0.0.1:{port}"
    data = tiny_model(tmp, template="{% for m in messages %}{{ m.content }}{% endfor %}").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.post(f"{url}/api/blobs/{digest}", data=data).status_code == 201
    r = requests.post(f"{url}/api/create", json={"model": "tiny", "files": {"t.gguf": digest}, "stream": False})
    assert r.status_code == 200, r.text
    yield url
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_native_api_never_fails_with_5xx(case, server):
    response = case.call(base_url=server, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:  # every error is JSON {"error": "..."} (403 host checks aside)
        assert isinstance(response.json().get("error"), str), response.text
