"""Vision end to end with the real daemon: SmolLM2 plus a tiny random-weight projector (tests/visionmodel.py).

The projector's weights are random, so answers mean nothing; what is checked is that an image's
embeddings reach the model: the prompt grows by the image's tokens, different images change the
greedy answer, the same image gives the same answer and its second use comes from the caches.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import ollama
import pytest

from tests.conftest import NODE_DIR, Daemon, node_with_ollama_npm
from tests.visionmodel import IMAGE_TOKENS, gif, png, write_mmproj

pytestmark = pytest.mark.real

MODEL = "smolvision"
GREEDY = {"temperature": 0, "num_predict": 8, "seed": 1}


@pytest.fixture(scope="module")
def vd(tmp_path_factory, smollm2_gguf):
    tmp = tmp_path_factory.mktemp("vision")
    mmproj = write_mmproj(tmp / "mmproj-tiny.gguf")
    d = Daemon(tmp, OLLAMALIKE_NUM_PARALLEL="4", OLLAMALIKE_CONTEXT_LENGTH="2048")
    d.create_output = d.create(MODEL, smollm2_gguf, tmp, f"FROM {mmproj}\nPARAMETER temperature 0\nPARAMETER num_predict 8\n")
    d.create("smoltext", smollm2_gguf, tmp)
    yield d
    d.stop()
    assert d.runner_pids() == [], "runners outlived the daemon"


def post(d, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(d.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def generate(d, prompt: str, imgs: list[bytes], **kw) -> dict:
    status, body = post(d, "/api/generate", {"model": MODEL, "prompt": prompt, "images": [b64(x) for x in imgs],
                                             "stream": False, "options": GREEDY, **kw})
    assert status == 200, body
    return body


def metrics(d) -> dict[str, float]:
    text = urllib.request.urlopen(d.url + "/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        out[name.split("{")[0]] = out.get(name.split("{")[0], 0) + float(value)
    return out


@pytest.mark.timeout(120)
def test_create_with_projector_show_and_capabilities(vd):
    assert "success" in vd.create_output.stderr
    status, info = post(vd, "/api/show", {"model": MODEL})
    assert status == 200 and "vision" in info["capabilities"]
    assert info["projector_info"]["general.architecture"] == "clip"
    assert info["projector_info"]["clip.vision.projection_dim"] == 576
    out = vd.cli("show", MODEL)
    assert out.returncode == 0 and "Projector" in out.stdout and "clip" in out.stdout and "vision" in out.stdout
    _, text = post(vd, "/api/show", {"model": "smoltext"})
    assert "vision" not in text["capabilities"] and "projector_info" not in text
    manifest = json.loads(next((vd.models / "manifests").rglob("smolvision/latest")).read_text())
    assert [x["mediaType"].rsplit(".", 1)[1] for x in manifest["layers"]].count("projector") == 1


@pytest.mark.timeout(180)
def test_image_tokens_reach_the_model_and_are_cached(vd):
    plain = generate(vd, "Describe it.", [], raw=True)
    one = generate(vd, "[img-0]Describe it.", [png(40, 30, color=(255, 0, 0))], raw=True)
    assert one["prompt_eval_count"] - plain["prompt_eval_count"] == IMAGE_TOKENS
    before = metrics(vd)
    again = generate(vd, "[img-0]Describe it.", [png(40, 30, color=(255, 0, 0))], raw=True)
    after = metrics(vd)
    assert again["response"] == one["response"]
    # served from the caches: no new encode, the image's KV rows reused from the prefix cache
    assert after["ollamalike_runner_image_encodes_total"] == before["ollamalike_runner_image_encodes_total"]
    assert after["ollamalike_runner_image_tokens_reused_total"] - before["ollamalike_runner_image_tokens_reused_total"] \
        == IMAGE_TOKENS
    other = generate(vd, "[img-0]Describe it.", [png(40, 30, color=(0, 0, 255))], raw=True)
    assert other["response"] != one["response"]
    assert metrics(vd)["ollamalike_runner_image_encodes_total"] == after["ollamalike_runner_image_encodes_total"] + 1


@pytest.mark.timeout(180)
def test_concurrent_images_batched_with_text(vd):
    a, b = png(32, 32, seed=5), gif(16, 16)
    solo_a = generate(vd, "What is this?", [a])["response"]
    solo_b = generate(vd, "What is this?", [b])["response"]
    solo_t = generate(vd, "Say hi.", [])["response"]
    assert solo_a != solo_b
    with ThreadPoolExecutor(3) as pool:
        futs = [pool.submit(generate, vd, "What is this?", [a]), pool.submit(generate, vd, "What is this?", [b]),
                pool.submit(generate, vd, "Say hi.", [])]
        got = [f.result()["response"] for f in futs]
    assert got == [solo_a, solo_b, solo_t]


@pytest.mark.timeout(120)
def test_ollama_client_images_and_chat_history(vd, tmp_path):
    client = ollama.Client(host=vd.url)
    path = tmp_path / "pic.png"
    path.write_bytes(png(24, 24, seed=7))
    r = client.generate(model=MODEL, prompt="What is this?", images=[str(path)], options=GREEDY)
    r2 = client.generate(model=MODEL, prompt="What is this?", images=[path.read_bytes()], options=GREEDY)
    assert r.response == r2.response and r.prompt_eval_count > IMAGE_TOKENS
    one = client.chat(model=MODEL, options=GREEDY, messages=[{"role": "user", "content": "Look.", "images": [path]}])
    two = client.chat(model=MODEL, options=GREEDY, messages=[
        {"role": "user", "content": "Look.", "images": [path]}, {"role": "assistant", "content": "Ok."},
        {"role": "user", "content": "And this?", "images": [png(24, 24, seed=8)]}])
    assert two.prompt_eval_count - one.prompt_eval_count >= IMAGE_TOKENS + 3  # the second image, in history


@pytest.mark.timeout(120)
def test_openai_image_url_and_anthropic_image_block(vd):
    url = "data:image/png;base64," + b64(png(24, 24, seed=3))
    body = {"model": MODEL, "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    status, out = post(vd, "/v1/chat/completions", body)
    assert status == 200, out
    assert out["usage"]["prompt_tokens"] > IMAGE_TOKENS
    body["messages"][0]["content"][1]["image_url"]["url"] = "https://example.com/cat.png"
    status, out = post(vd, "/v1/chat/completions", body)
    assert status == 400 and "image urls are not currently supported" in out["error"]["message"].lower()
    status, out = post(vd, "/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png(24, 24, seed=3))}},
        {"type": "text", "text": "What is this?"}]}]})
    assert status == 200, out
    assert out["usage"]["input_tokens"] + out["usage"].get("cache_read_input_tokens", 0) > IMAGE_TOKENS


def _huge_png() -> bytes:
    """A PNG whose header says 8000 x 6250 (50 megapixels); the pixel data is never reached."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8000, 6250, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("imgs, model, expect", [
    ([b"this is not an image"], MODEL, "not an image"),
    ([png(24, 24, seed=1)[:-30]], MODEL, "truncated"),
    ([_huge_png()], MODEL, "too large"),
    ([png(8, 8, seed=i) for i in range(11)], MODEL, "too many images"),
    ([png(8, 8)], "smoltext", '"smoltext" does not support vision'),
], ids=["non-image", "truncated", "50-megapixel", "eleven", "text-only-model"])
def test_bad_images_are_clear_400s(vd, imgs, model, expect):
    status, out = post(vd, "/api/generate", {"model": model, "prompt": "hi", "images": [b64(x) for x in imgs],
                                             "stream": False, "options": GREEDY})
    assert status == 400 and expect in out["error"], out
    status, out = post(vd, "/api/chat", {"model": model, "stream": False, "options": GREEDY,
                                         "messages": [{"role": "user", "content": "hi", "images": [b64(x) for x in imgs]}]})
    assert status == 400 and expect in out["error"], out
    assert post(vd, "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "options": GREEDY})[0] == 200


@pytest.mark.timeout(120)
def test_cli_run_reads_image_paths_in_the_prompt(vd, tmp_path):
    pic = tmp_path / "my pic.png"
    pic.write_bytes(png(24, 24, color=(0, 255, 0)))
    escaped = str(pic).replace(" ", "\\ ")  # as a drag-and-drop into a terminal writes it
    out = vd.cli("run", MODEL, f"What is in {escaped}")
    assert out.returncode == 0, out.stderr
    assert f"Added image '{pic}'" in out.stderr
    api = generate(vd, "What is in", [pic.read_bytes()], options={"temperature": 0, "num_predict": 8})
    assert out.stdout.strip() == api["response"].strip()
    plain = vd.cli("run", MODEL, "What is in")
    assert plain.stdout.strip() != out.stdout.strip()


@pytest.mark.timeout(180)
def test_npm_client_images(vd, tmp_path):
    import subprocess

    node = node_with_ollama_npm()
    pic = tmp_path / "npm.png"
    pic.write_bytes(png(24, 24, color=(255, 255, 0)))
    out = subprocess.run([node, "vision.mjs", vd.url, MODEL, str(pic)], cwd=NODE_DIR, capture_output=True,
                         text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    expected = generate(vd, "What is in", [pic.read_bytes()])["response"]
    assert res["bytes"] == res["base64"] == res["path"] == expected
    assert res["chat"]


@pytest.mark.timeout(120)
def test_responses_input_image(vd):
    url = "data:image/png;base64," + b64(png(24, 24, seed=3))
    status, out = post(vd, "/v1/responses", {"model": MODEL, "max_output_tokens": 8, "temperature": 0, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": url}]}]})
    assert status == 200, out
    assert out["usage"]["input_tokens"] > IMAGE_TOKENS


@pytest.mark.timeout(180)
@pytest.mark.parametrize("unified", [False, True], ids=["per-slot-kv", "unified-kv"])
def test_engine_shares_an_image_prefix_and_batches_it(smollm2_gguf, tmp_path, unified):
    """In process: the runner's tokenizer with images, the engine's image prefill and its prefix cache
    (in a unified cache the image's cells are shared with seq_cp), while a text sequence generates."""
    import threading

    from ollamalike.runner.engine import Engine, Request
    from ollamalike.runner.llama import LlamaModel, LoadParams
    from ollamalike.runner.main import RunnerApp
    from ollamalike.runner.vision import Vision

    model = LlamaModel(LoadParams(path=str(smollm2_gguf), n_ctx=2048, n_seq_max=3, kv_unified=unified, n_threads=2))
    vision = Vision(str(write_mmproj(tmp_path / "p.gguf")), model.model, model.n_embd, 2)
    engine = Engine(model, 3)
    engine.start()
    app = RunnerApp(model, engine, 512, vision)

    def run(prompt: str, imgs: list[bytes], n: int = 8) -> dict:
        body = {"prompt": prompt, "images": [{"id": i, "data": b64(x)} for i, x in enumerate(imgs)]}
        tokens, _, embeds = app._prompt_tokens(body)
        done, out = threading.Event(), {"text": ""}

        def emit(ev):
            out["text"] += ev.get("content", "")
            if "done" in ev or "error" in ev:
                out.update(ev)
                done.set()
        engine.submit(Request(tokens=tokens, emit=emit, options={"temperature": 0, "num_predict": n},
                              num_ctx=512, images=embeds, shift=not embeds))
        return {"wait": done, "out": out}

    try:
        text = run("Once upon a time", [], n=40)  # keeps generating while the images prefill
        first = run("Look: [img-0] What is it?", [png(32, 32, color=(9, 200, 9))])
        first["wait"].wait(60)
        assert "error" not in first["out"], first["out"]
        assert first["out"]["prompt_eval_count"] > IMAGE_TOKENS
        second = run("Look: [img-0] What is it?", [png(32, 32, color=(9, 200, 9))])
        second["wait"].wait(60)
        text["wait"].wait(60)
        assert second["out"]["text"] == first["out"]["text"]
        assert second["out"]["prompt_cached_count"] >= IMAGE_TOKENS + 2
        assert engine.stats["image_tokens_reused"] >= IMAGE_TOKENS
        assert vision.stats["image_encodes"] == 1 and vision.stats["image_cache_hits"] == 1
        assert text["out"]["eval_count"] == 40 and "error" not in text["out"]
        assert all(t >= 0 for t in second["out"]["tokens"])  # the context handed back holds no image rows
    finally:
        engine.close()
        vision.close()
        model.close()


@pytest.mark.timeout(120)
def test_images_that_do_not_fit_the_context_are_a_400(vd):
    status, out = post(vd, "/api/generate", {"model": MODEL, "prompt": "[img-0]" + "word " * 2100, "raw": True,
                                             "images": [b64(png(8, 8))], "stream": False, "options": GREEDY})
    assert status == 400 and "exceeds the context length" in out["error"], out
    assert generate(vd, "[img-0]hi", [png(8, 8)], raw=True)["prompt_eval_count"] >= IMAGE_TOKENS
