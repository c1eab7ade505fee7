"""The real daemon and SmolLM2 on a models directory laid out exactly as Ollama writes it: Go
templates, params and system layers used in place; chats fitted to num_ctx by whole messages;
a runaway template answered 400 while the daemon keeps serving."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.real

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
SYSTEM = "You are a terse assistant."
PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0, "num_predict": 8}


def _blob(models: Path, data: bytes | None = None, link_to: Path | None = None) -> tuple[str, int]:
    blobs = models / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    if link_to is not None:
        h = hashlib.sha256()
        with open(link_to, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        os.symlink(link_to, blobs / digest.replace(":", "-"))
        return digest, link_to.stat().st_size
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.replace(":", "-")).write_bytes(data)
    return digest, len(data)


def ollama_store(models: Path, gguf: Path, name: str = "smolcopy", tag: str = "latest") -> None:
    """`manifests/registry.ollama.ai/library/<name>/<tag>` and `blobs/sha256-<hex>`, as Ollama writes."""
    layers = []
    for media, data in (("model", None), ("template", CHATML.encode()), ("system", SYSTEM.encode()),
                        ("params", json.dumps(PARAMS).encode())):
        digest, size = _blob(models, data, gguf if data is None else None)
        layers.append({"mediaType": f"application/vnd.ollama.image.{media}", "digest": digest, "size": size})
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
              "model_type": "134.52M", "file_type": "Q4_1", "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}}
    cdigest, csize = _blob(models, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cdigest,
                           "size": csize}, "layers": layers}
    path = models / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def odaemon(tmp_path_factory, smollm2_gguf):
    tmp = tmp_path_factory.mktemp("ollama-store")
    ollama_store(tmp / "models", smollm2_gguf)
    d = Daemon(tmp, OLLAMA_DEBUG="2")  # the trace log shows each rendered prompt
    yield d
    d.stop()


def post(d: Daemon, path: str, body: dict, timeout: float = 300) -> tuple[int, dict]:
    req = urllib.request.Request(d.url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_ollama_store_lists_and_shows_in_place(odaemon):
    tags = json.loads(urllib.request.urlopen(odaemon.url + "/api/tags", timeout=30).read())
    assert [m["name"] for m in tags["models"]] == ["smolcopy:latest"]
    assert tags["models"][0]["details"]["family"] == "llama"
    assert tags["models"][0]["details"]["quantization_level"] == "Q4_1"
    status, show = post(odaemon, "/api/show", {"model": "smolcopy"})
    assert status == 200
    assert show["template"] == CHATML and show["system"] == SYSTEM
    assert '"<|im_start|>"' in show["parameters"] and "temperature" in show["parameters"]
    assert show["capabilities"] == ["completion", "tools"]  # tools through the Hermes fallback
    out = odaemon.cli("list")
    assert out.returncode == 0 and "smolcopy:latest" in out.stdout


def test_ollama_store_chat_prompt_equals_raw_prompt(odaemon):
    status, chat = post(odaemon, "/api/chat", {"model": "smolcopy", "stream": False,
                                               "messages": [{"role": "user", "content": "What is 2+2?"}]})
    assert status == 200, chat
    rendered = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                "<|im_start|>assistant\n")
    status, raw = post(odaemon, "/api/generate", {"model": "smolcopy", "stream": False, "raw": True,
                                                  "prompt": rendered})
    assert status == 200, raw
    assert chat["prompt_eval_count"] == raw["prompt_eval_count"]
    assert chat["eval_count"] <= 8  # the params layer's num_predict applies
    # generate (not raw) renders the same Go template around the system layer and the prompt
    status, gen = post(odaemon, "/api/generate", {"model": "smolcopy", "stream": False, "prompt": "What is 2+2?"})
    assert status == 200 and gen["prompt_eval_count"] == raw["prompt_eval_count"]


def test_long_chat_keeps_system_prompt_within_num_ctx(odaemon):
    msgs = [{"role": "system", "content": "You are Zorblax the pirate."}]
    for i in range(29):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant",
                     "content": f"msg-{i}: tell me more about the sea and the ships and the stars."})
    status, body = post(odaemon, "/api/chat", {"model": "smolcopy", "stream": False, "messages": msgs,
                                               "options": {"num_ctx": 256, "num_predict": 4}})
    assert status == 200, body
    assert body["prompt_eval_count"] < 256
    logged = [line for line in odaemon.log_path.read_text().splitlines()
              if "rendered prompt" in line and "msg-28" in line]
    assert logged, "the rendered prompt was not logged"
    assert "Zorblax" in logged[-1] and "msg-0:" not in logged[-1] and "msg-27:" in logged[-1]
    status, body = post(odaemon, "/api/chat", {"model": "smolcopy", "stream": False, "messages": msgs,
                                               "truncate": False, "options": {"num_ctx": 256, "num_predict": 4}})
    assert status == 400 and body["error"] == "the input length exceeds the context length"


@pytest.mark.parametrize("template", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ range $i := 100000 }}{{ range $j := 100000 }}{{ end }}{{ end }}",
])
def test_runaway_template_is_400_while_daemon_serves(odaemon, template):
    result: dict = {}

    def bad() -> None:
        result["start"] = time.monotonic()
        result["answer"] = post(odaemon, "/api/generate", {"model": "smolcopy", "prompt": "x", "template": template})
        result["end"] = time.monotonic()

    t = threading.Thread(target=bad)
    t.start()
    answered = []  # (sent, received) of each /api/version
    while t.is_alive():
        sent = time.monotonic()
        urllib.request.urlopen(odaemon.url + "/api/version", timeout=30).read()
        answered.append((sent, time.monotonic()))
        time.sleep(0.02)
    t.join()
    status, body = result["answer"]
    assert status == 400 and body["error"].startswith("template error: rendering exceeded"), body
    during = [(s, r) for s, r in answered if s >= result["start"] and r <= result["end"]]
    assert during, "no /api/version answer while the template was rendering"
    assert max(r - s for s, r in during) < 1.0
