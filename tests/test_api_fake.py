"""The native API against the real daemon app with a fake runner factory (no weights needed)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from ollamalike import __version__
from ollamalike.server.app import create_app
from tests.ggufwriter import tiny_model

TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}<assistant>"


@pytest.fixture
async def client(aiohttp_client, tmp_path, factory, monkeypatch):
    monkeypatch.setenv("OLLAMALIKE_MAX_QUEUE", "4")
    monkeypatch.setenv("OLLAMALIKE_MAX_LOADED_MODELS", "1")
    app = create_app(tmp_path / "models", spawn=factory, parallel=2)
    return await aiohttp_client(app)


async def upload(client, path) -> str:
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = await client.post(f"/api/blobs/{digest}", data=data)
    assert r.status in (200, 201)
    return digest


async def create(client, tmp_path, name="tiny", **extra) -> list[dict]:
    path = tiny_model(tmp_path, template=TEMPLATE)
    digest = await upload(client, path)
    r = await client.post("/api/create", json={"model": name, "files": {"tiny.gguf": digest}, **extra})
    assert r.status == 200, await r.text()
    return [json.loads(line) for line in (await r.text()).splitlines()]


async def lines(resp) -> list[dict]:
    text = await resp.text()
    assert "\n\n" not in text
    return [json.loads(x) for x in text.splitlines()]


async def test_root_and_version(client):
    r = await client.get("/")
    assert await r.text() == "Ollama is running"
    r = await client.head("/")
    assert r.status == 200
    version = (await (await client.get("/api/version")).json())["version"]
    assert tuple(int(x) for x in version.split(".")) >= (0, 6, 4)


async def test_create_statuses_and_tags(client, tmp_path):
    statuses = [s["status"] for s in await create(client, tmp_path, parameters={"temperature": 0.5})]
    assert statuses[0] == "parsing GGUF" and statuses[-2:] == ["writing manifest", "success"]
    tags = (await (await client.get("/api/tags")).json())["models"]
    assert [m["name"] for m in tags] == ["tiny:latest"]
    assert tags[0]["details"]["family"] == "llama" and tags[0]["details"]["quantization_level"] == "Q4_K_M"
    assert len(tags[0]["digest"]) == 64 and tags[0]["size"] > 0


async def test_show(client, tmp_path):
    await create(client, tmp_path, parameters={"temperature": 0.5, "stop": ["</x>"]}, system="be brief")
    info = await (await client.post("/api/show", json={"name": "TINY"})).json()
    assert isinstance(info["model_info"], dict) and info["model_info"]["general.architecture"] == "llama"
    assert info["capabilities"] == ["completion", "tools"]  # tools through the Hermes-style fallback
    assert 'temperature                    0.5' in info["parameters"]
    assert info["system"] == "be brief" and info["template"] == TEMPLATE
    assert "FROM " in info["modelfile"] and "SYSTEM" in info["modelfile"]


async def test_generate_stream_and_final_chunk(client, tmp_path, factory):
    await create(client, tmp_path)
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "system": "sys"})
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    chunks = await lines(r)
    assert "".join(c["response"] for c in chunks) == "hello from the fake runner"
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["context"] == [1, 2, 3]
    for key in ("total_duration", "load_duration", "prompt_eval_count", "eval_count", "eval_duration"):
        assert isinstance(final[key], int)
    assert factory.spawned[0].prompts == ["<system>sys</system><user>hi</user><assistant>"]


async def test_generate_not_streaming(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.replies = ["one two"]
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False})
    assert r.headers["Content-Type"].startswith("application/json")
    body = await r.json()
    assert body["response"] == "one two" and body["done"] is True


async def test_chat_stream_and_raw(client, tmp_path, factory):
    await create(client, tmp_path, system="default system")
    r = await client.post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                             "stream": False})
    body = await r.json()
    assert body["message"] == {"role": "assistant", "content": "hello from the fake runner"}
    assert "context" not in body
    assert factory.spawned[0].prompts[-1].startswith("<system>default system</system><user>x</user>")
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "RAW", "raw": True, "stream": False})
    assert (await r.json())["done"] and factory.spawned[0].prompts[-1] == "RAW"


async def test_load_and_unload_with_empty_prompt(client, tmp_path, factory):
    await create(client, tmp_path)
    r = await client.post("/api/generate", json={"model": "tiny"})
    assert (await lines(r))[-1]["done_reason"] == "load"
    ps = (await (await client.get("/api/ps")).json())["models"]
    assert [m["name"] for m in ps] == ["tiny:latest"] and ps[0]["size_vram"] == 0
    r = await client.post("/api/chat", json={"model": "tiny", "messages": [], "keep_alive": 0})
    assert (await lines(r))[-1]["done_reason"] == "unload"
    assert (await (await client.get("/api/ps")).json())["models"] == []
    assert factory.spawned[0].closed


@pytest.mark.parametrize("body,status,message", [
    (b"", 400, "missing request body"),
    (b"{not json", 400, "invalid JSON"),
    (b'{"prompt":"x"}', 400, "model is required"),
    (b'{"model":"../../etc/passwd","prompt":"x"}', 400, "invalid model name"),
    (b'{"model":"nope","prompt":"x"}', 404, "model 'nope' not found, try pulling it first"),
    (b'{"model":"tiny","prompt":"x","options":{"temperature":"hot"}}', 400, 'option "temperature" must be of type float'),
    (b'{"model":"tiny","prompt":"x","options":{"num_ctx":true}}', 400, 'option "num_ctx" must be of type integer'),
    (b'{"model":"tiny","prompt":"x","keep_alive":"1d"}', 400, "invalid duration"),
    (b'{"model":"tiny","prompt":"x","raw":true,"system":"s"}', 400, "raw mode does not support"),
    (b'{"model":"tiny","prompt":"x","images":["aGk="]}', 400, "does not support vision"),
])
async def test_bad_requests(client, tmp_path, body, status, message):
    await create(client, tmp_path)
    r = await client.post("/api/generate", data=body)
    assert r.status == status
    assert message in (await r.json())["error"]


async def test_null_options_ignored_and_unknown_ignored(client, tmp_path, factory):
    await create(client, tmp_path)
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                                 "options": {"temperature": None, "bogus": 1, "seed": 3}})
    assert r.status == 200


async def test_blob_digest_mismatch_stores_nothing(client, tmp_path):
    bad = "sha256:" + "0" * 64
    r = await client.post(f"/api/blobs/{bad}", data=b"hello")
    assert r.status == 400 and "digest mismatch" in (await r.json())["error"]
    assert (await client.head(f"/api/blobs/{bad}")).status == 404
    assert list((tmp_path / "models" / "blobs").iterdir()) == []
    r = await client.post("/api/blobs/sha256:xyz", data=b"hello")
    assert r.status == 400 and (await r.json())["error"] == "invalid digest format"


async def test_create_rejects_a_file_that_is_not_gguf(client, tmp_path):
    digest = "sha256:" + hashlib.sha256(b"not a model").hexdigest()
    assert (await client.post(f"/api/blobs/{digest}", data=b"not a model")).status == 201
    r = await client.post("/api/create", json={"model": "bad", "files": {"x.gguf": digest}})
    assert r.status == 400 and "invalid file magic" in (await r.json())["error"]
    assert (await (await client.get("/api/tags")).json())["models"] == []


async def test_create_errors(client, tmp_path):
    r = await client.post("/api/create", json={"model": "x"})
    assert r.status == 400 and "neither 'from' or 'files'" in (await r.json())["error"]
    r = await client.post("/api/create", json={"model": "x", "from": "missing"})
    assert r.status == 404
    r = await client.post("/api/create", json={"model": "x", "files": {"a.gguf": "sha256:" + "1" * 64}})
    assert r.status == 404 and "not found" in (await r.json())["error"]


async def test_copy_delete(client, tmp_path):
    await create(client, tmp_path)
    assert (await client.post("/api/copy", json={"source": "tiny", "destination": "Other:v1"})).status == 200
    names = sorted(m["name"] for m in (await (await client.get("/api/tags")).json())["models"])
    assert names == ["Other:v1", "tiny:latest"]
    assert (await client.delete("/api/delete", json={"name": "other:V1"})).status == 200
    assert (await client.delete("/api/delete", json={"model": "other:v1"})).status == 404
    blobs = set((tmp_path / "models" / "blobs").iterdir())
    assert (await client.delete("/api/delete", json={"model": "tiny"})).status == 200
    assert blobs and list((tmp_path / "models" / "blobs").iterdir()) == []
    assert (await client.post("/api/copy", json={"source": "gone", "destination": "x"})).status == 404


async def test_create_from_existing_model_overrides(client, tmp_path):
    await create(client, tmp_path, parameters={"temperature": 0.1})
    r = await client.post("/api/create", json={"model": "derived", "from": "tiny", "system": "pirate",
                                               "parameters": {"top_k": 5}, "stream": False})
    assert (await r.json()) == {"status": "success"}
    info = await (await client.post("/api/show", json={"model": "derived"})).json()
    assert info["system"] == "pirate" and "top_k" in info["parameters"] and "temperature" in info["parameters"]


async def test_runner_crash_mid_stream_gives_error_line_and_next_request_restarts(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.crash_after = 1
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    chunks = await lines(r)
    assert r.status == 200 and "terminated" in chunks[-1]["error"]
    factory.crash_after = None
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    assert (await r.json())["done"] and len(factory.spawned) == 2


async def test_load_failure_is_a_500_with_the_runners_words(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.fail_load = "llama runner process has terminated: error loading model"
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert r.status == 500 and "error loading model" in (await r.json())["error"]


async def test_queue_full_answers_503(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.delay = 0.05
    reqs = [client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
            for _ in range(10)]
    results = await asyncio.gather(*reqs)
    statuses = sorted(r.status for r in results)
    assert 200 in statuses and 503 in statuses
    busy = [await r.json() for r in results if r.status == 503][0]
    assert busy["error"] == "server busy, please try again.  maximum pending requests exceeded"


async def test_client_disconnect_stops_generation(client, tmp_path, factory):
    await create(client, tmp_path)
    factory.delay = 0.05
    factory.replies = [" ".join(["w"] * 200)]
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    await r.content.readline()
    r.close()
    for _ in range(50):
        await asyncio.sleep(0.05)
        if factory.spawned[0].cancelled:
            break
    assert factory.spawned[0].cancelled == 1
    factory.delay = 0
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    assert r.status == 200


async def test_eviction_at_max_loaded_models(client, tmp_path, factory):
    await create(client, tmp_path, name="a")
    other = tiny_model(tmp_path, name="other.gguf", template=TEMPLATE + " ")
    digest = await upload(client, other)
    r = await client.post("/api/create", json={"model": "b", "files": {"o.gguf": digest}, "stream": False})
    assert r.status == 200
    for name in ("a", "b"):
        r = await client.post("/api/generate", json={"model": name, "prompt": "x", "stream": False})
        assert r.status == 200
    ps = (await (await client.get("/api/ps")).json())["models"]
    assert [m["name"] for m in ps] == ["b:latest"]
    assert factory.spawned[0].closed and not factory.spawned[1].closed


async def test_embed_normalises_and_embeddings_does_not(client, tmp_path, factory):
    await create(client, tmp_path)
    r = await client.post("/api/embed", json={"model": "tiny", "input": ["ab", "abcd"]})
    body = await r.json()
    assert r.status == 200 and body["model"] == "tiny" and body["prompt_eval_count"] == 6
    v = body["embeddings"][1]
    assert abs(sum(x * x for x in v) - 1) < 1e-9 and v[0] == pytest.approx(3 / 41 ** 0.5)
    r = await client.post("/api/embed", json={"model": "tiny", "input": "ab", "dimensions": 2})
    assert (await r.json())["embeddings"] == [[0.6, 0.8]]
    r = await client.post("/api/embeddings", json={"model": "tiny", "prompt": "ab"})
    assert (await r.json()) == {"embedding": [3.0, 4.0, 2.0]}
    r = await client.post("/api/embed", json={"model": "tiny", "input": []})
    assert (await r.json())["embeddings"] == []
    r = await client.post("/api/embeddings", json={"model": "tiny", "prompt": ""})
    assert (await r.json()) == {"embedding": []}
    r = await client.post("/api/embed", json={"model": "tiny", "input": [1, 2]})
    assert r.status == 400 and (await r.json())["error"] == "invalid input type"


async def test_split_gguf_reaches_the_runner_in_order(client, tmp_path, factory):
    first = await upload(client, tiny_model(tmp_path, name="m-00001-of-00002.gguf", template=TEMPLATE))
    second = await upload(client, tiny_model(tmp_path, name="m-00002-of-00002.gguf", template=TEMPLATE + " "))
    r = await client.post("/api/create", json={"model": "split", "stream": False, "files": {
        "m-00001-of-00002.gguf": first, "m-00002-of-00002.gguf": second}})
    assert r.status == 200
    r = await client.post("/api/generate", json={"model": "split", "prompt": "x", "stream": False})
    assert r.status == 200
    spec = factory.spawned[-1].spec
    assert spec.model_path.endswith(first.replace(":", "-")) and spec.splits[0].endswith(second.replace(":", "-"))


async def test_create_refuses_what_it_cannot_honour(client, tmp_path):
    """A quantize of quantized weights and an ADAPTER that is a whole model are each a 400 and nothing
    is written."""
    await create(client, tmp_path)
    digest = await upload(client, tiny_model(tmp_path, template=TEMPLATE))
    for extra, words in (({"quantize": "q8_0"}, "quantization is only supported for F16, BF16 and F32 models"),
                         ({"quantize": "q9_X"}, "unsupported quantization type Q9_X - supported types are "),
                         ({"adapters": {"lora.gguf": digest}}, "adapter 'lora.gguf' is not a LoRA adapter GGUF")):
        r = await client.post("/api/create", json={"model": "refused", "from": "tiny", **extra})
        assert r.status == 400 and words in (await r.json())["error"], await r.text()
    names = [m["name"] for m in (await (await client.get("/api/tags")).json())["models"]]
    assert names == ["tiny:latest"]


async def test_an_adapter_is_stored_shown_and_handed_to_the_runner(client, tmp_path, factory):
    from tests.loragguf import write_lora

    await create(client, tmp_path)
    lora = await upload(client, write_lora(tmp_path / "lora.gguf", shape={"n_layers": 1, "shapes": {
        "attn_q": (64, 64)}}, targets=("attn_q",)))
    r = await client.post("/api/create", json={"model": "tuned", "from": "tiny", "adapters": {"lora.gguf": lora},
                                               "stream": False})
    assert r.status == 200, await r.text()
    r = await client.post("/api/generate", json={"model": "tuned", "prompt": "x", "stream": False})
    assert r.status == 200
    (path,) = factory.spawned[-1].spec.adapters
    assert path.endswith(lora.replace(":", "-"))
    shown = await (await client.post("/api/show", json={"model": "tuned"})).json()
    assert shown["adapters"][0]["digest"] == lora and f"ADAPTER {path}" in shown["modelfile"]


async def test_requires_is_stored_shown_and_checked(client, tmp_path, factory):
    await create(client, tmp_path)
    for name, requires in (("newer", "v99.1"), ("older", "0.1.0")):
        r = await client.post("/api/create", json={"model": name, "from": "tiny", "requires": requires, "stream": False})
        assert r.status == 200, await r.text()
    shown = await (await client.post("/api/show", json={"model": "newer"})).json()
    assert shown["requires"] == "99.1" and "REQUIRES 99.1" in shown["modelfile"]
    spawned = len(factory.spawned)
    r = await client.post("/api/generate", json={"model": "newer", "prompt": "x", "stream": False})
    assert r.status == 412 and (await r.json())["error"] == (
        "model 'newer:latest' requires a newer version of Ollama: it requires 99.1, this server is version "
        f"{__version__} (upgrade ollamalike to run it)")
    r = await client.post("/api/embed", json={"model": "newer", "input": "x"})
    assert r.status == 412
    assert len(factory.spawned) == spawned  # refused before any load
    r = await client.post("/api/generate", json={"model": "older", "prompt": "x", "stream": False})
    assert r.status == 200
    r = await client.post("/api/create", json={"model": "bad", "from": "tiny", "requires": "latest"})
    assert r.status == 400 and (await r.json())["error"] == "requires must be a valid semver (e.g. 0.14.0)"
    # a model made from one keeps its REQUIRES unless it gives its own
    r = await client.post("/api/create", json={"model": "child", "from": "newer", "stream": False})
    shown = await (await client.post("/api/show", json={"model": "child"})).json()
    assert shown["requires"] == "99.1"


async def test_draft_model_is_checked_stored_shown_and_spawned(client, tmp_path, factory):
    from ollamalike.modelfile import parse_modelfile
    from ollamalike.runner.process import runner_command
    from tests.ggufwriter import make_gguf, write

    mf = parse_modelfile("FROM big\nDRAFT small:1b\nPARAMETER draft_num_predict 4\n")
    assert mf.draft == "small:1b" and "DRAFT small:1b" in mf.to_text() and parse_modelfile(mf.to_text()) == mf
    await create(client, tmp_path)  # 4 tokens
    meta = [("general.architecture", 8, "llama"), ("tokenizer.ggml.tokens", (9, 8), ["<s>", "</s>", "a", "b", "c"])]
    other = write(tmp_path, make_gguf(meta, [("token_embd.weight", (64, 5), 0, 0)]), "other.gguf")
    r = await client.post("/api/create", json={"model": "other", "files": {"other.gguf": await upload(client, other)},
                                               "stream": False})
    assert r.status == 200, await r.text()
    r = await client.post("/api/create", json={"model": "drafted", "from": "tiny", "draft": "other", "stream": False})
    assert r.status == 400 and (await r.json())["error"] == (
        "draft model 'other' has a vocabulary of 5 tokens, the model has 4: a draft model must share the model's vocabulary")
    r = await client.post("/api/create", json={"model": "drafted", "from": "tiny", "draft": "nope", "stream": False})
    assert r.status == 400 and "draft model 'nope' not found" in (await r.json())["error"]
    r = await client.post("/api/create", json={"model": "drafted", "from": "tiny", "draft": "tiny", "stream": False,
                                               "parameters": {"draft_num_predict": 4}})
    assert r.status == 200, await r.text()
    shown = await (await client.post("/api/show", json={"model": "drafted"})).json()
    assert shown["draft"] == "tiny:latest" and "DRAFT tiny:latest" in shown["modelfile"]
    assert "draft_num_predict" in shown["parameters"]
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    assert r.status == 200 and factory.spawned[-1].spec.draft == ""
    r = await client.post("/api/generate", json={"model": "drafted", "prompt": "x", "stream": False})
    assert r.status == 200
    spec = factory.spawned[-1].spec
    assert spec.draft == spec.model_path  # its own draft: the same GGUF, yet another runner spec
    assert runner_command(spec)[-2:] == ["--draft", spec.model_path]
    r = await client.post("/api/create", json={"model": "child", "from": "drafted", "stream": False})
    assert (await (await client.post("/api/show", json={"model": "child"})).json())["draft"] == "tiny:latest"


async def test_draft_model_given_as_a_gguf_file(client, tmp_path, factory):
    from tests.ggufwriter import make_gguf, write

    await create(client, tmp_path)
    tiny = await upload(client, tmp_path / "tiny.gguf")
    meta = [("general.architecture", 8, "llama"), ("tokenizer.ggml.tokens", (9, 8), ["<s>", "</s>", "a", "b", "c"])]
    other = await upload(client, write(tmp_path, make_gguf(meta, [("token_embd.weight", (64, 5), 0, 0)]), "o.gguf"))
    r = await client.post("/api/create", json={"model": "bad", "from": "tiny", "draft": {"o.gguf": other}})
    assert r.status == 400 and (await r.json())["error"].startswith("draft model 'o.gguf' has a vocabulary of 5 tokens")
    r = await client.post("/api/create", json={"model": "filed", "from": "tiny", "draft": {"d.gguf": tiny},
                                               "stream": False})
    assert r.status == 200, await r.text()
    shown = await (await client.post("/api/show", json={"model": "filed"})).json()
    path = tiny.replace(":", "-")
    assert shown["draft"].endswith(path) and f"DRAFT {shown['draft']}" in shown["modelfile"]
    r = await client.post("/api/generate", json={"model": "filed", "prompt": "x", "stream": False})
    assert r.status == 200 and factory.spawned[-1].spec.draft.endswith(path)
    await client.post("/api/create", json={"model": "child", "from": "filed", "stream": False})
    assert (await (await client.post("/api/show", json={"model": "child"})).json())["draft"].endswith(path)
    await client.post("/api/create", json={"model": "renamed", "from": "filed", "draft": "tiny", "stream": False})
    assert (await (await client.post("/api/show", json={"model": "renamed"})).json())["draft"] == "tiny:latest"


async def test_a_removed_draft_model_leaves_the_model_running_without_it(client, tmp_path, factory):
    await create(client, tmp_path)
    for body in ({"model": "drafter", "from": "tiny"}, {"model": "d2", "from": "tiny", "draft": "drafter"}):
        r = await client.post("/api/create", json=body | {"stream": False})
        assert r.status == 200, await r.text()
    r = await client.delete("/api/delete", json={"model": "drafter"})
    assert r.status == 200, await r.text()
    r = await client.post("/api/generate", json={"model": "d2", "prompt": "x", "stream": False})
    assert r.status == 200, await r.text()
    assert factory.spawned[-1].spec.draft == ""
