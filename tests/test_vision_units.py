"""Fast checks of the vision pieces that need no model: image sniffing, [img-N] tags, create with a
projector, the CLI's image paths, the memory estimate with a projector, the engine's image tokens."""

from __future__ import annotations

import base64
import struct

import pytest

from ollamalike import images
from ollamalike.api.types import CreateRequest
from ollamalike.cli.chat import extract_images
from ollamalike.errors import BadRequest
from ollamalike.runner.imagerows import image_key, image_tokens, not_mid_image, split_image_token
from ollamalike.server import prompt
from ollamalike.server.core import capabilities
from ollamalike.server.offload import Estimate, Gpu, Inventory, decide
from ollamalike.store.create import create_model
from ollamalike.store.manifests import ManifestStore
from tests.ggufwriter import tiny_model
from tests.visionmodel import gif, png, write_mmproj


def jpeg(w: int, h: int, end: bool = True) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", 4) + b"JF" + sof + (b"\xff\xd9" if end else b"")


def webp_vp8x(w: int, h: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("data, fmt, size", [
    (png(40, 30), "png", (40, 30)), (gif(16, 8), "gif", (16, 8)), (jpeg(640, 480), "jpeg", (640, 480)),
    (webp_vp8x(300, 200), "webp", (300, 200)),
])
def test_inspect_reads_format_and_size(data, fmt, size):
    img = images.inspect(data)
    assert (img.format, (img.width, img.height)) == (fmt, size)


@pytest.mark.parametrize("data, expect", [
    (b"hello world", "not an image"), (b"", "empty"), (png(40, 30)[:-20], "truncated"),
    (png(40, 30)[:60], "truncated"), (jpeg(64, 64, end=False), "truncated"), (gif(8, 8)[:-1], "truncated"),
    (jpeg(8000, 6250), "too large"), (webp_vp8x(9000, 9000), "too large"),
])
def test_inspect_refuses(data, expect):
    with pytest.raises(BadRequest) as e:
        images.inspect(data, "image 0")
    assert expect in e.value.message and e.value.message.startswith(("invalid image 0", "image 0"))


def test_jpeg_end_is_after_the_last_scan():
    scan = b"\xff\xda" + struct.pack(">H", 2) + b"\x12\x34"
    whole = jpeg(64, 64, end=False) + scan + b"\xff\xd9"
    assert images.inspect(whole + b"trailing camera data").format == "jpeg"
    thumb = jpeg(64, 64, end=False) + scan + b"\xff\xd9"  # an EXIF thumbnail, then the cut main image
    with pytest.raises(BadRequest, match="truncated"):
        images.inspect(thumb + scan + b"\x56")


def test_pixel_limit_and_count_are_settings(monkeypatch):
    monkeypatch.setenv("OLLAMALIKE_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(BadRequest, match="OLLAMALIKE_MAX_IMAGE_PIXELS"):
        images.inspect(png(40, 30))
    monkeypatch.setenv("OLLAMALIKE_MAX_IMAGES", "2")
    images.check_count(2)
    with pytest.raises(BadRequest, match="too many images: 3"):
        images.check_count(3)


def test_base64_with_or_without_data_url():
    raw = png(4, 4)
    assert images.decode_b64(base64.b64encode(raw).decode()) == raw
    assert images.decode_b64("data:image/png;base64," + base64.b64encode(raw).decode()) == raw
    with pytest.raises(BadRequest, match="not valid base64"):
        images.decode_b64("%%%")


def test_image_tags_number_through_the_conversation():
    msgs, sent = prompt.attach_images([
        {"role": "user", "content": "look", "images": ["A", "B"]}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and [img] here", "images": ["C"]}])
    assert [m["content"] for m in msgs] == ["[img-0][img-1]look", "ok", "and [img-2] here"]
    assert sent == {0: "A", 1: "B", 2: "C"}


def test_image_tokens_are_keyed_by_hash_and_never_cut():
    key = image_key("ab" * 32)
    toks = image_tokens(key, 4)
    assert all(t < 0 for t in toks) and [split_image_token(t) for t in toks] == [(key, k) for k in range(4)]
    assert image_tokens(image_key("cd" * 32), 4)[0] != toks[0]
    seq = [5, 6] + toks + [7]
    assert [not_mid_image(seq, n) for n in range(len(seq))] == [0, 1, 2, 2, 2, 2, 6]


def test_create_recognises_the_projector(tmp_path):
    store = ManifestStore(tmp_path / "models")
    digests = {}
    for name, path in (("m.gguf", tiny_model(tmp_path)), ("mmproj.gguf", write_mmproj(tmp_path / "p.gguf", 64))):
        digests[name] = store.blobs.write_bytes(path.read_bytes())
    list(create_model(store, CreateRequest.parse({"model": "seeing", "files": digests})))
    m = store.load("seeing")
    assert len(m.projectors) == 1 and len(m.model_paths) == 1 and "vision" in capabilities(m)
    # FROM an existing model keeps its projector; a projector alone is refused
    list(create_model(store, CreateRequest.parse({"model": "copy", "from": "seeing"})))
    assert len(store.load("copy").projectors) == 1
    with pytest.raises(BadRequest, match="needs a model"):
        list(create_model(store, CreateRequest.parse({"model": "x", "files": {"p.gguf": digests["mmproj.gguf"]}})))


def test_cli_image_paths(tmp_path, capsys):
    (tmp_path / "a b.png").write_bytes(b"png")
    (tmp_path / "c.JPG").write_bytes(b"jpg")
    text = f"what is in {tmp_path}/a\\ b.png and {tmp_path}/c.JPG? not /no/such.png"
    out, found = extract_images(text)
    assert out == "what is in  and ? not /no/such.png"
    assert found == [base64.b64encode(b"png").decode(), base64.b64encode(b"jpg").decode()]
    assert f"Added image '{tmp_path}/a b.png'" in capsys.readouterr().err
    assert extract_images("no images here") == ("no images here", [])


def test_memory_estimate_counts_the_projector():
    est = Estimate(layers=(100,) * 4, kv_per_layer=10, output=50, cpu_only=20, graph_full=30, graph_partial=40)
    with_proj = Estimate(**{**est.__dict__, "projector": 1000})
    cpu = Inventory(ram_free=1 << 40)
    assert decide(with_proj, cpu).size - decide(est, cpu).size == 1000
    gpu = Inventory(gpus=(Gpu(index=0, library="cuda", name="x", total=1 << 40, free=1 << 40),), ram_free=1 << 40)
    a, b = decide(est, gpu), decide(with_proj, gpu)
    assert b.size_vram - a.size_vram == 1000 and b.size - a.size == 1000


SMOLVLM_TEMPLATE = ("<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
                    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
                    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
                    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
                    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def test_a_template_that_reads_content_parts_gets_the_text_with_its_image_tags():
    msgs, _ = prompt.attach_images([{"role": "user", "content": "What is this?", "images": ["A"]}])
    out = prompt.render(SMOLVLM_TEMPLATE, msgs)
    assert out == "<|im_start|>User: [img-0]What is this?<end_of_utterance>\nAssistant:"
    # a template that also takes strings gets strings, as before
    plain = "{% for m in messages %}{% if m['content'] is string %}{{ m['content'] }}{% endif %}{% endfor %}"
    assert prompt.render(plain, msgs) == "[img-0]What is this?"
