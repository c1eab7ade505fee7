"""Unit tests of the small pieces: settings, durations, options, prompts, stop strings."""

from __future__ import annotations

import math

import pytest

from ollamalike import config, options
from ollamalike.api.types import ChatRequest, GenerateRequest
from ollamalike.durations import format_go_duration, parse_duration
from ollamalike.errors import BadRequest
from ollamalike.runner.engine import StopMatcher
from ollamalike.server import prompt


@pytest.mark.parametrize("value,url", [
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    (":56789", "http://127.0.0.1:56789"),
    ("example.com:56789/path/", "http://example.com:56789/path"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://example.com", "https://example.com:443"),
    ("[::1]:56789", "http://[::1]:56789"),
    ('"0.0.0.0:1234"', "http://0.0.0.0:1234"),
])
def test_parse_host(value, url):
    assert config.parse_host(value).url == url


def test_connect_url_rewrites_wildcards():
    assert config.parse_host("0.0.0.0:9").connect_url == "http://127.0.0.1:9"


def test_settings_prefer_ollamalike_then_ollama(monkeypatch):
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "7")
    assert config.max_queue() == 7
    monkeypatch.setenv("OLLAMALIKE_MAX_QUEUE", "9")
    assert config.max_queue() == 9
    monkeypatch.setenv("OLLAMALIKE_KEEP_ALIVE", "1d")
    assert config.keep_alive_seconds() == 300.0
    monkeypatch.setenv("OLLAMALIKE_KEEP_ALIVE", "60")
    assert config.keep_alive_seconds() == 60.0
    monkeypatch.setenv("OLLAMALIKE_MODELS", "/tmp/x")
    assert str(config.models_dir()) == "/tmp/x"
    assert [row[0] for row in config.describe()][0] == "OLLAMALIKE_HOST"


@pytest.mark.parametrize("value,seconds", [
    (42, 42.0), (42.5, 42.5), ("42m", 2520.0), ("1h2m3s", 3723.0), ("0", 0.0), ("60", 60.0),
    (-1, math.inf), ("-1m", math.inf), ("1.5s", 1.5), ("250ms", 0.25),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["1d", "", "abc", True, None, [1], "5 m"])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_format_go_duration():
    assert format_go_duration(300) == "5m0s"
    assert format_go_duration(3600) == "1h0m0s"
    assert format_go_duration(1.5) == "1.5s"
    assert format_go_duration(0.25) == "250ms"


def test_options_layering_and_types():
    base = options.merge(options.defaults(), {"temperature": 0.1, "stop": ["a"]})
    merged = options.merge(base, {"temperature": None, "top_k": 3.0, "unknown": 1, "stop": "b"})
    assert merged["temperature"] == 0.1 and merged["top_k"] == 3 and merged["stop"] == ["b"]
    with pytest.raises(BadRequest, match='option "top_k" must be of type integer'):
        options.merge(base, {"top_k": "3"})
    with pytest.raises(BadRequest, match='option "stop" must be of type array of strings'):
        options.merge(base, {"stop": [1]})


def test_modelfile_parameters_are_typed():
    params = options.parameters_to_dict([("temperature", "0.5"), ("stop", "<a>"), ("STOP", '"<b>"'),
                                         ("num_ctx", "512"), ("use_mmap", "false")])
    assert params == {"temperature": 0.5, "stop": ["<a>", "<b>"], "num_ctx": 512, "use_mmap": False}
    with pytest.raises(BadRequest, match="unknown parameter 'bogus'"):
        options.parse_parameter("bogus", "1")
    with pytest.raises(BadRequest, match="num_ctx"):
        options.parse_parameter("num_ctx", "lots")
    assert options.format_parameters({"temperature": 0.0, "stop": ["x", "y"]}).splitlines() == [
        f"{'temperature':<30} 0", f"{'stop':<30} \"x\"", f"{'stop':<30} \"y\""]


def test_requests_accept_name_alias_and_keep_alive_forms():
    assert GenerateRequest.parse({"name": "m"}).model == "m"
    assert GenerateRequest.parse({"model": "m", "keep_alive": "5m"}).keep_alive == 300.0
    assert GenerateRequest.parse({"model": "m", "keep_alive": -1}).keep_alive == math.inf
    assert GenerateRequest.parse({"model": "m", "stream": None}).stream is True
    chat = ChatRequest.parse({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": {"a": 1}}}]}]})
    assert chat.messages[0].content == ""
    with pytest.raises(BadRequest, match="model is required"):
        GenerateRequest.parse({"prompt": "x"})
    with pytest.raises(BadRequest, match="invalid duration"):
        GenerateRequest.parse({"model": "m", "keep_alive": "1d"})
    with pytest.raises(BadRequest):
        GenerateRequest.parse([1, 2])


def test_render_jinja_and_go_templates():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    jinja = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    assert prompt.render(jinja, msgs) == "[system:S][user:U]>"
    go = "{{ if .System }}<s>{{ .System }}</s>{{ end }}<u>{{ .Prompt }}</u><a>{{ .Response }}</a>"
    assert prompt.render(go, msgs) == "<s>S</s><u>U</u><a>"
    history = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}, {"role": "user", "content": "3"}]
    assert prompt.render(go, history) == "<u>1</u><a>2</a><u>3</u><a>"
    assert prompt.render(None, msgs) == "S\n\nU"
    with pytest.raises(BadRequest, match="template error: nope"):
        prompt.render("{{ raise_exception('nope') }}", msgs)


def test_template_kind_detection():
    assert not prompt.is_jinja("{{ .Prompt }}")
    assert not prompt.is_jinja("{{- if .System }}x{{- end }}")
    assert prompt.is_jinja("{{ messages[0].content }}")
    assert prompt.is_jinja("{% for m in messages %}{% endfor %}")


def test_stop_matcher_holds_back_partial_stops():
    m = StopMatcher(["STOP", "<end>"])
    assert m.feed("hello S") == ("hello ", False)
    assert m.feed("T") == ("", False)
    assert m.feed("X") == ("STX", False)
    assert m.feed("ok <e") == ("ok ", False)
    assert m.feed("nd> tail") == ("", True)
    m = StopMatcher([])
    assert m.feed("abc") == ("abc", False)
    m = StopMatcher(["ab"])
    assert m.feed("a") == ("", False)
    assert m.flush() == "a"


def _smollm2_shape(tmp_path):
    from ollamalike.store.gguf import read_gguf
    from tests.ggufwriter import make_gguf, write

    meta = [("general.architecture", 8, "llama"), ("llama.block_count", 4, 30), ("llama.embedding_length", 4, 576),
            ("llama.attention.head_count", 4, 9), ("llama.attention.head_count_kv", 4, 3)]
    return read_gguf(write(tmp_path, make_gguf(meta)))


def test_kv_bytes_per_token(tmp_path):
    from ollamalike.server.memory import kv_bytes_per_token

    assert kv_bytes_per_token(_smollm2_shape(tmp_path)) == 30 * (64 + 64) * 3 * 2  # SmolLM2-135M: 23,040 bytes


def test_slots_follow_demand_in_streams_while_memory_holds_them(tmp_path):
    from ollamalike.server.memory import DEMAND_SLOTS, SlotPlan, plan_slots

    info, per_token, gib = _smollm2_shape(tmp_path), 23040, 1 << 30
    # 32 streams of 4096 cells need 2.8 GiB: a quarter of 16 GiB holds them, one each
    assert plan_slots(info, 4096, available=16 * gib) == SlotPlan(DEMAND_SLOTS, False, 0, plan_slots(
        info, 4096, available=16 * gib).why)
    # a quarter of 4 GiB holds 46,603 cells: 11 whole streams; one unified cache of them all takes 32
    p = plan_slots(info, 4096, available=4 * gib)
    assert p.unified and p.kv_size == gib // per_token and p.parallel == DEMAND_SLOTS
    # very little memory: still one num_ctx, and no more slots than 256 cells each
    p = plan_slots(info, 4096, available=64 << 20)
    assert p.unified and p.kv_size == 4096 and p.parallel == 16
    p = plan_slots(info, 512, available=1 << 20)
    assert p == SlotPlan(2, True, 512, p.why)


def test_set_parallel_unified_and_kv_size_are_kept(tmp_path):
    from ollamalike.server.memory import plan_slots

    info, gib = _smollm2_shape(tmp_path), 1 << 30
    for avail in (64 << 20, 64 * gib):  # NUM_PARALLEL: a fixed count of num_ctx streams, whatever the memory
        p = plan_slots(info, 4096, fixed=3, available=avail)
        assert (p.parallel, p.unified, p.kv_size) == (3, False, 0)
    p = plan_slots(info, 4096, fixed=3, unified=True, available=64 * gib)
    assert (p.parallel, p.unified, p.kv_size) == (3, True, 3 * 4096)
    p = plan_slots(info, 4096, fixed=3, unified=True, kv_size=1000, available=64 * gib)
    assert (p.parallel, p.unified, p.kv_size) == (3, True, 1000)
    # KV_UNIFIED=1 with plenty of memory: unified anyway, 32 sequences, cells for each one's num_ctx
    p = plan_slots(info, 4096, unified=True, available=64 * gib)
    assert (p.parallel, p.unified, p.kv_size) == (32, True, 32 * 4096)
    # KV_UNIFIED=0 with little memory: streams, as many as fit, at least one
    assert plan_slots(info, 4096, unified=False, available=4 * gib).parallel == 11
    assert plan_slots(info, 4096, unified=False, available=1 << 20).parallel == 1
    # KV_SIZE alone: that unified cache
    p = plan_slots(info, 4096, kv_size=8192, available=64 * gib)
    assert (p.parallel, p.unified, p.kv_size) == (32, True, 8192)
    # embedding models: one slot; an unreadable header: four
    assert plan_slots(info, 4096, embedding=True, fixed=8).parallel == 1
    assert plan_slots(None, 4096).parallel == 4 and plan_slots(None, 4096, fixed=2).parallel == 2


def test_runner_command_passes_splits_in_order():
    from ollamalike.runner.process import RunnerSpec, runner_command

    cmd = runner_command(RunnerSpec(model_path="/b/one", num_ctx=512, parallel=2, splits=("/b/two", "/b/three")))
    assert cmd[cmd.index("--model") + 1] == "/b/one"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--split"] == ["/b/two", "/b/three"]
    assert cmd[cmd.index("runner") + 1:][:2] == ["--model", "/b/one"]


@pytest.mark.parametrize("value, level", [("", 20), ("0", 20), ("false", 20), ("1", 10), ("true", 10),
                                          ("2", config.TRACE), ("trace", config.TRACE), ("TRACE", config.TRACE)])
def test_debug_levels(monkeypatch, value, level):
    monkeypatch.delenv("OLLAMA_DEBUG", raising=False)
    monkeypatch.setenv("OLLAMALIKE_DEBUG", value)
    assert config.log_level() == level


@pytest.mark.parametrize("value, stored", [("0.14.0", "0.14.0"), ("v1.2", "1.2"), ("2", "2"), ("0.5.0-rc1", "0.5.0-rc1")])
def test_requires_is_a_semver(value, stored):
    from ollamalike.store.create import check_requires, version_tuple

    assert check_requires(value) == stored
    assert version_tuple("0.5.0-rc1") < version_tuple("0.5.0") < version_tuple("0.10") < version_tuple("v1")
    for bad in ("latest", "1.2.3.4", "01.2", ""):
        with pytest.raises(BadRequest, match="requires must be a valid semver"):
            check_requires(bad)


def test_quantize_types_follow_ollama():
    from ollamalike.store.create import quantize_type

    assert quantize_type("q4_K_M") == "Q4_K_M" and quantize_type("q4_k") == "Q4_K_M" and quantize_type("Q8_0") == "Q8_0"
    with pytest.raises(BadRequest, match="^unsupported quantization type IQ2_XS - supported types are F32, F16, "):
        quantize_type("iq2_xs")  # needs an importance matrix


async def test_runner_streams_share_one_connection(aiohttp_server):
    """The daemon reads each completion stream to its end, so the next request reuses the connection
    (a stream left unread closes it, and every request paid for a new TCP connection)."""
    import asyncio
    import types

    import aiohttp
    from aiohttp import web

    from ollamalike.runner.process import RunnerProcess, RunnerSpec

    peers = []

    async def completion(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername"))
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"content":"hi"}\n')
        await resp.write(b'{"done":true,"done_reason":"stop"}\n')
        await asyncio.sleep(0.05)  # the stream's end comes apart from its last line, as from the runner
        return resp

    app = web.Application()
    app.router.add_post("/completion", completion)
    server = await aiohttp_server(app)
    runner = RunnerProcess(RunnerSpec(model_path="m", num_ctx=512, parallel=1), types.SimpleNamespace(returncode=None))
    runner.url, runner._session = str(server.make_url("")).rstrip("/"), aiohttp.ClientSession()
    try:
        for _ in range(3):
            events = [ev async for ev in runner.completion({"prompt": "x"})]
            assert events == [{"content": "hi"}, {"done": True, "done_reason": "stop"}]
    finally:
        await runner._session.close()
    assert len(peers) == 3 and len(set(peers)) == 1, peers


def test_model_lookups_follow_manifest_changes(tmp_path):
    """Models are read once per version of their manifest: a repeated lookup is served from memory,
    a rewritten manifest (create, pull, copy over it) is read anew."""
    from ollamalike.names import Name
    from ollamalike.store import manifests as mf

    store = mf.ManifestStore(tmp_path)

    def save(template: str) -> None:
        data = template.encode()
        digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
        store.blobs.path(digest).parent.mkdir(parents=True, exist_ok=True)
        store.blobs.path(digest).write_bytes(data)
        cfg = b"{}"
        cdigest = "sha256:" + __import__("hashlib").sha256(cfg).hexdigest()
        store.blobs.path(cdigest).write_bytes(cfg)
        store.write(Name.parse("m"), mf.new_manifest(mf.layer(mf.CONFIG_V1, cdigest, 2),
                                                     [mf.layer(mf.TEMPLATE, digest, len(data))]))

    save("{{ .Prompt }}")
    first = store.load("m")
    assert first.template == "{{ .Prompt }}" and store.load("M") is first
    save("{{ .System }} {{ .Prompt }}")
    assert store.load("m").template == "{{ .System }} {{ .Prompt }}"
    store.delete("m")
    assert store._cache == {}  # a deleted model is not kept in memory
