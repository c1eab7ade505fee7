"""The real daemon with the real SmolLM2 GGUF, driven by the real `ollama` client and the CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import ollama
import pytest

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 24, "seed": 1}


def metrics(daemon) -> dict[str, float]:
    text = urllib.request.urlopen(daemon.url + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        out[name.split("{")[0]] = out.get(name.split("{")[0], 0) + float(value)
    return out


def test_cli_create_and_list(daemon):
    assert "success" in daemon.create_output.stderr
    out = daemon.cli("list")
    assert out.returncode == 0
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    # other tests share this daemon and may have made models of their own meanwhile (listed newest first)
    row = next((r for r in rows if r.split()[0] == MODEL), None)
    assert row is not None and row.split()[2:4] == ["98", "MB"], out.stdout


def test_cli_show(daemon):
    out = daemon.cli("show", MODEL)
    assert out.returncode == 0
    assert "architecture" in out.stdout and "llama" in out.stdout and "Q4_1" in out.stdout
    tmpl = daemon.cli("show", MODEL, "--template").stdout
    assert "<|im_start|>" in tmpl
    assert '"<|im_end|>"' in daemon.cli("show", MODEL, "--parameters").stdout


def test_cli_run_one_shot_and_piped(daemon, smollm2_gguf, tmp_path):
    # a bounded, greedy copy of the model: the CLI has no option flags, and a sampled reply that
    # rambles to num_ctx on a loaded 2-core machine is slow, not wrong
    made = daemon.create("smol-short", smollm2_gguf, tmp_path, "PARAMETER temperature 0\nPARAMETER num_predict 64\n")
    assert made.returncode == 0, made.stderr
    try:
        out = daemon.cli("run", "smol-short", "Why is the sky blue? Answer in one sentence.")
        assert out.returncode == 0, out.stderr
        assert any(w in out.stdout.lower() for w in ("blue", "light", "scatter", "sky"))
        piped = daemon.cli("run", "smol-short", input="Say hello.\n")
        assert piped.returncode == 0 and piped.stdout.strip()
    finally:
        daemon.cli("stop", "smol-short")
        daemon.cli("rm", "smol-short")


def test_cli_errors(daemon):
    out = daemon.cli("run", "no-such-model", "hi")
    assert out.returncode == 1
    # run pulls a missing model first, as ollama does; the pull names the problem
    assert out.stderr.strip().startswith("Error: pull model manifest: file does not exist: 'no-such-model:latest'")
    assert "Traceback" not in out.stderr


def test_generate_stream_and_not(ollama_client):
    parts = list(ollama_client.generate(model=MODEL, prompt="Name a color.", options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    final = parts[-1]
    assert final.done_reason == "length" and final.eval_count == 24
    assert final.context and all(isinstance(t, int) for t in final.context)
    assert final.total_duration > 0 and final.prompt_eval_count > 0
    text = "".join(p.response for p in parts)
    whole = ollama_client.generate(model=MODEL, prompt="Name a color.", options=GREEDY)
    assert whole.response == text and whole.done


def test_generate_context_continues(ollama_client):
    first = ollama_client.generate(model=MODEL, prompt="My name is Ada.", options=GREEDY)
    again = ollama_client.generate(model=MODEL, prompt="What is my name?", context=first.context,
                                   options=GREEDY)
    assert again.prompt_eval_count > first.prompt_eval_count


def test_chat(ollama_client):
    r = ollama_client.chat(model=MODEL, messages=[{"role": "user", "content": "Say hi"}], options=GREEDY)
    assert r.message.role == "assistant" and r.message.content and r.done
    chunks = list(ollama_client.chat(model=MODEL, messages=[{"role": "user", "content": "Say hi"}],
                                     options=GREEDY, stream=True))
    assert "".join(c.message.content for c in chunks) == r.message.content


def test_stop_string(ollama_client):
    base = ollama_client.generate(model=MODEL, prompt="Tell me about the sea.", options={**GREEDY, "num_predict": 40})
    words = base.response.split()
    stop = words[len(words) // 2]
    cut = ollama_client.generate(model=MODEL, prompt="Tell me about the sea.",
                                 options={**GREEDY, "num_predict": 40, "stop": [stop]})
    assert cut.done_reason == "stop"
    assert cut.response == base.response[: base.response.index(stop)]


def test_concurrent_requests_match_alone(ollama_client):
    prompts = ["Count to five.", "Name three fruits.", "What is water?", "Describe a cat.", "Say a number."]
    alone = [ollama_client.generate(model=MODEL, prompt=p, options=GREEDY).response for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: ollama_client.generate(model=MODEL, prompt=p, options=GREEDY).response,
                                 prompts))
    assert together == alone


def test_list_show_ps_copy_delete(ollama_client):
    assert MODEL in [m.model for m in ollama_client.list().models]
    info = ollama_client.show(MODEL)
    assert info.modelinfo["general.architecture"] == "llama" and "completion" in info.capabilities
    ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
    ps = ollama_client.ps().models
    assert [m.model for m in ps] == [MODEL] and ps[0].size > 0 and ps[0].expires_at
    ollama_client.copy(MODEL, "smol-copy")
    assert "smol-copy:latest" in [m.model for m in ollama_client.list().models]
    ollama_client.delete("smol-copy")
    assert "smol-copy:latest" not in [m.model for m in ollama_client.list().models]
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.delete("smol-copy")
    assert err.value.status_code == 404
    assert ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 2}).done


def test_keep_alive_zero_unloads(ollama_client, daemon):
    ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1}, keep_alive=0)
    assert ollama_client.ps().models == []
    assert daemon.runner_pids() == []


def test_client_disconnect_frees_the_sequence(ollama_client, daemon):
    body = json.dumps({"model": MODEL, "prompt": "Write a very long story.",
                       "options": {"num_predict": 5000, "temperature": 0}}).encode()
    req = urllib.request.Request(daemon.url + "/api/generate", data=body, method="POST")
    resp = urllib.request.urlopen(req, timeout=60)
    for _ in range(3):
        assert json.loads(resp.readline())["done"] is False
    resp.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and metrics(daemon).get("ollamalike_runner_requests_running", 1) != 0:
        time.sleep(0.2)
    assert metrics(daemon)["ollamalike_runner_requests_running"] == 0
    assert ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 2}).done


def test_runner_crash_reports_and_recovers(ollama_client, daemon):
    stream = ollama_client.generate(model=MODEL, prompt="Write a long story.",
                                    options={"num_predict": 3000}, stream=True)
    next(stream)
    pids = daemon.runner_pids()
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(ollama.ResponseError) as err:
        for _ in stream:
            pass
    assert "terminated" in str(err.value)
    assert ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 2}).done
    assert daemon.runner_pids() and daemon.runner_pids() != pids


def test_cli_ps_stop_rm(daemon, tmp_path, smollm2_gguf):
    daemon.create("throwaway", smollm2_gguf, tmp_path, "PARAMETER num_ctx 512\nPARAMETER num_predict 16\n")
    assert daemon.cli("run", "throwaway", "hi").returncode == 0
    ps = daemon.cli("ps").stdout
    assert "throwaway:latest" in ps and "100% CPU" in ps and "512" in ps
    assert daemon.cli("stop", "throwaway").returncode == 0
    assert "throwaway" not in daemon.cli("ps").stdout
    out = daemon.cli("rm", "throwaway")
    assert out.returncode == 0 and out.stdout.strip() == "deleted 'throwaway'"
    assert "throwaway" not in daemon.cli("list").stdout
    assert MODEL in daemon.cli("list").stdout


def test_threads_share_one_runner(daemon, ollama_client):
    errors = []

    def go():
        try:
            ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 4})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(daemon.runner_pids()) == 1


def test_embed_and_legacy_embeddings(ollama_client):
    r = ollama_client.embed(model=MODEL, input=["The sky is blue.", "The sky is blue.", "Bananas are yellow."])
    a, b, c = r.embeddings
    assert len(a) == 576 and abs(sum(x * x for x in a) - 1) < 1e-6
    assert sum(x * y for x, y in zip(a, b)) > 0.99999 and sum(x * y for x, y in zip(a, c)) < 0.999
    assert len(ollama_client.embed(model=MODEL, input="hi", dimensions=64).embeddings[0]) == 64
    legacy = ollama_client.embeddings(model=MODEL, prompt="The sky is blue.")
    norm = sum(x * x for x in legacy.embedding) ** 0.5
    assert norm > 1.5 and [x / norm for x in legacy.embedding][:5] == pytest.approx(a[:5], rel=1e-4, abs=1e-6)
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.embed(model=MODEL, input="word " * 6000, truncate=False)
    assert err.value.status_code == 400 and "exceeds the context length" in str(err.value)


def test_metrics_count_reused_prefix(daemon, ollama_client):
    system = "You are a meticulous assistant for a shipping company. " * 20
    before = metrics(daemon).get("ollamalike_runner_tokens_reused_total", 0)
    for user in ("Where is my parcel?", "How much is shipping?"):
        ollama_client.chat(model=MODEL, messages=[{"role": "system", "content": system},
                                                  {"role": "user", "content": user}], options=GREEDY)
    assert metrics(daemon)["ollamalike_runner_tokens_reused_total"] - before > 200
