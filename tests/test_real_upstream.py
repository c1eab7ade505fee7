"""Upstream models for real: a front daemon with no weights serving `FROM openai+http://...` models whose
upstream is the session daemon's /v1 (SmolLM2), and llama.cpp's own llama-server. Greedy answers through
the front must equal the answers straight from the upstream."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ollama
import pytest
import requests
from openai import OpenAI

from tests.conftest import Daemon, free_port

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 12, "seed": 1}
SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"],
          "additionalProperties": False}


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def create(front: Daemon, tmp: Path, name: str, *lines: str, extra: str = "") -> subprocess.CompletedProcess:
    mf = tmp / f"Modelfile.{name}"
    mf.write_text("".join(f"FROM {line}\n" for line in lines) + extra)
    return front.cli("create", name, "-f", str(mf))


@pytest.fixture(scope="module")
def front(tmp_path_factory, daemon):
    tmp = tmp_path_factory.mktemp("front")
    d = Daemon(tmp, OLLAMALIKE_UPSTREAM_HEALTH_INTERVAL="1s", UPSTREAM_TEST_KEY="unused-key")
    out = create(d, tmp, "remote", f"openai+{daemon.url}/v1 {MODEL} api_key=$UPSTREAM_TEST_KEY",
                 extra="PARAMETER temperature 0\nPARAMETER num_predict 16\n")
    assert out.returncode == 0, out.stderr
    d.tmp = tmp
    yield d
    d.stop()
    assert d.runner_pids() == [], "the front daemon started a runner"


@pytest.fixture(scope="module")
def fc(front):
    return ollama.Client(host=front.url)


@pytest.mark.timeout(120)
def test_chat_and_generate_equal_the_upstream(front, fc, ollama_client, daemon):
    msgs = [{"role": "user", "content": "Name a fruit."}]
    direct = ollama_client.chat(model=MODEL, messages=msgs, options=GREEDY)
    proxied = fc.chat(model="remote", messages=msgs, options=GREEDY)
    assert proxied.message.content == direct.message.content and proxied.message.content
    assert proxied.eval_count == direct.eval_count and proxied.prompt_eval_count == direct.prompt_eval_count
    assert proxied.done_reason == direct.done_reason == "length"
    assert proxied.total_duration > 0 and proxied.eval_duration > 0
    streamed = list(fc.chat(model="remote", messages=msgs, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in streamed) == direct.message.content
    assert streamed[-1].done and streamed[-1].eval_count == direct.eval_count and len(streamed) > 3
    # generate: the prompt as a user turn of the upstream's chat template, as Ollama's template does
    gd = ollama_client.generate(model=MODEL, prompt="Name a fruit.", options=GREEDY)
    gp = fc.generate(model="remote", prompt="Name a fruit.", options=GREEDY)
    assert gp.response == gd.response and gp.eval_count == gd.eval_count
    # the front ran no runner and shows the model as an upstream one
    show = fc.show("remote")
    assert show.details.format == "upstream" and "FROM openai+http://" in show.modelfile
    assert "unused-key" not in show.modelfile
    ps = requests.get(front.url + "/api/ps", timeout=10).json()["models"]
    assert [p["name"] for p in ps] == ["remote:latest"] and ps[0]["size_vram"] == 0
    out = front.cli("show", "remote")
    assert out.returncode == 0 and "Upstreams" in out.stdout and f"{daemon.url}/v1" in out.stdout, out.stderr
    assert "remote:latest" in front.cli("ps").stdout and "remote:latest" in front.cli("list").stdout
    # the CLI runs it like a local model (the Modelfile's PARAMETERs apply: greedy, 16 tokens)
    run = front.cli("run", "remote", "Name a fruit.")
    want = ollama_client.generate(model=MODEL, prompt="Name a fruit.", options={"temperature": 0, "num_predict": 16})
    assert run.returncode == 0 and run.stdout.strip() == want.response.strip(), run.stderr


@pytest.mark.timeout(120)
def test_openai_sse_format_and_embed(front, daemon):
    oai = OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0, timeout=60)
    direct = OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0, timeout=60)
    kw = dict(messages=[{"role": "user", "content": "Say hello."}], max_tokens=10, temperature=0)
    want = direct.chat.completions.create(model=MODEL, **kw).choices[0].message.content
    stream = oai.chat.completions.create(model="remote", stream=True, stream_options={"include_usage": True}, **kw)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert chunks[-1].usage.completion_tokens == 10
    r = oai.completions.create(model="remote", prompt="Say hello.", max_tokens=10, temperature=0)
    assert r.choices[0].text == direct.completions.create(model=MODEL, prompt="Say hello.", max_tokens=10,
                                                           temperature=0).choices[0].text
    # structured output: the schema reaches the upstream's grammar
    r = oai.chat.completions.create(model="remote", messages=[{"role": "user", "content": "A color?"}],
                                    max_tokens=30, temperature=0, response_format={
                                        "type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}})
    assert json.loads(r.choices[0].message.content)["color"] in ("red", "green", "blue")
    e = requests.post(front.url + "/api/embed", json={"model": "remote", "input": ["The sky is blue."]}, timeout=60).json()
    d = requests.post(daemon.url + "/api/embed", json={"model": MODEL, "input": ["The sky is blue."]}, timeout=60).json()
    assert len(e["embeddings"][0]) == 576 and e["embeddings"][0][:4] == pytest.approx(d["embeddings"][0][:4], abs=1e-5)
    v = oai.embeddings.create(model="remote", input="The sky is blue.", encoding_format="float")
    assert v.data[0].embedding[:4] == pytest.approx(d["embeddings"][0][:4], abs=1e-5)


@pytest.mark.timeout(120)
def test_tools_round_trip(front, fc):
    """A call-shaped format forces the call on the tiny model; the reply then carries the tool's result
    (call ids tied up by the translation) back to the upstream."""
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}
    oai = OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0, timeout=60)
    r = oai.chat.completions.create(model="remote", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                    tools=[tool], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                    max_tokens=40, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                               "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "sunny, 21 C"}]
    out = fc.chat(model="remote", messages=msgs, tools=[tool], options=GREEDY)
    assert out.done and out.message.content


@pytest.mark.timeout(120)
def test_errors_map_to_ollama_shapes(front, fc, daemon):
    with pytest.raises(ollama.ResponseError) as err:
        fc.chat(model="remote", messages=[{"role": "user", "content": "hi"}], options={"num_ctx": 8192})
    assert err.value.status_code == 400 and "num_ctx" in str(err.value)
    out = create(front, front.tmp, "wrongid", f"openai+{daemon.url}/v1 no-such-model")
    assert out.returncode == 0, out.stderr
    with pytest.raises(ollama.ResponseError) as err:
        fc.chat(model="wrongid", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and "no-such-model" in str(err.value) and daemon.url in str(err.value)
    out = front.cli("pull", "remote")
    assert out.returncode != 0 and "no weights to pull" in out.stderr
    out = create(front, front.tmp, "down", f"openai+{dead_url()} m", f"openai+{dead_url()} m")
    assert out.returncode == 0, out.stderr
    r = requests.post(front.url + "/api/chat", json={"model": "down", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=60)
    assert r.status_code == 502 and r.json()["error"].startswith("no upstream of model 'down:latest'")


@pytest.mark.timeout(180)
def test_balancing_failover_and_metrics(front, daemon):
    port = daemon.url.rsplit(":", 1)[1]
    dead = dead_url()
    # three upstreams: the same daemon under two host names, and one that is down
    out = create(front, front.tmp, "pool", f"openai+{dead} {MODEL}", f"openai+http://127.0.0.1:{port}/v1 {MODEL}",
                 f"openai+http://localhost:{port}/v1 {MODEL}")
    assert out.returncode == 0, out.stderr

    def one(i):
        r = requests.post(front.url + "/api/generate", timeout=120, json={
            "model": "pool", "prompt": f"Count to {i}.", "stream": False, "options": {"num_predict": 8}})
        assert r.status_code == 200, r.text
        return r.json()["eval_count"]
    with ThreadPoolExecutor(4) as pool:
        assert all(n > 0 for n in pool.map(one, range(5)))
    metrics = requests.get(front.url + "/metrics", timeout=10).text
    counts = {}
    for line in metrics.splitlines():
        if line.startswith('ollamalike_upstream_requests_total{model="pool:latest"'):
            counts[line.split('upstream="')[1].split('"')[0]] = int(line.rsplit(" ", 1)[1])
    assert counts[f"http://127.0.0.1:{port}/v1"] >= 2 and counts[f"http://localhost:{port}/v1"] >= 2, counts
    assert f'ollamalike_upstream_up{{model="pool:latest",upstream="{dead}"}} 0' in metrics
    assert f'ollamalike_upstream_request_seconds_count{{model="pool:latest",upstream="http://localhost:{port}/v1"}}' in metrics


# --- llama.cpp's llama-server as the upstream --------------------------------------------------
@pytest.fixture(scope="module")
def llama_server(smollm2_gguf, tmp_path_factory):
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"building llama-server needs {' and '.join(missing)}, which this machine lacks")
    built = subprocess.run(["bash", str(ROOT / "bench" / "build_llama_server.sh")], capture_output=True, text=True,
                           timeout=1800, env={**os.environ, "PYTHON": sys.executable})  # pip fetches the sdist
    assert built.returncode == 0, built.stderr[-3000:]
    exe = built.stdout.strip().splitlines()[-1]
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama-server") / "log", "wb")
    proc = subprocess.Popen([exe, "-m", str(smollm2_gguf), "--host", "127.0.0.1", "--port", str(port), "-c", "2048",
                             "-np", "2", "-t", "2", "--jinja"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None, "llama-server exited"
        time.sleep(0.3)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    log.close()


@pytest.mark.timeout(1800)  # the first run builds llama-server (cached in ~/.cache/ollamalike afterwards)
def test_llama_server_upstream(front, fc, llama_server):
    out = create(front, front.tmp, "llamacpp", f"openai+{llama_server}/v1 smollm2")
    assert out.returncode == 0, out.stderr
    body = {"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 12, "temperature": 0}
    direct = requests.post(llama_server + "/v1/chat/completions", json=body, timeout=60).json()
    want = direct["choices"][0]["message"]["content"]
    r = fc.chat(model="llamacpp", messages=body["messages"], options={"temperature": 0, "num_predict": 12})
    assert r.message.content == want and r.eval_count == direct["usage"]["completion_tokens"]
    assert r.prompt_eval_count == direct["usage"]["prompt_tokens"] and r.eval_duration > 0
    streamed = list(fc.chat(model="llamacpp", messages=body["messages"], stream=True,
                            options={"temperature": 0, "num_predict": 12}))
    assert "".join(c.message.content for c in streamed) == want and streamed[-1].done
    oai = OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0, timeout=60)
    chunks = list(oai.chat.completions.create(model="llamacpp", stream=True, **body))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    raw = fc.generate(model="llamacpp", prompt="1, 2, 3,", raw=True, options={"temperature": 0, "num_predict": 6})
    d = requests.post(llama_server + "/v1/completions", json={"prompt": "1, 2, 3,", "max_tokens": 6, "temperature": 0},
                      timeout=60).json()
    assert raw.response == d["choices"][0]["text"]
    r = oai.chat.completions.create(model="llamacpp", messages=[{"role": "user", "content": "A color?"}], max_tokens=30,
                                    temperature=0, response_format={"type": "json_schema",
                                                                    "json_schema": {"name": "c", "schema": SCHEMA}})
    assert json.loads(r.choices[0].message.content)["color"] in ("red", "green", "blue")
