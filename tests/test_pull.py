"""/api/pull against a fake Hub (the real huggingface_hub client downloading), in process."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from ollamalike.hub.pull import HubSource
from ollamalike.hub.sources import DirSource, RemoteFile, choose_gguf
from ollamalike.server.app import CORE, create_app
from tests.fakehub import FakeHub
from tests.fakes import FakeFactory
from tests.ggufwriter import tiny_model

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
SMOL_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct-Q8_0.gguf"  # smollm2:135m is Q8_0, as in Ollama


@pytest.fixture(scope="module")
def hub(tmp_path_factory, smollm2_gguf):
    tmp = tmp_path_factory.mktemp("hub")
    h = FakeHub()
    h.add(SMOL_REPO, SMOL_FILE, smollm2_gguf)
    h.add("acme/tiny-GGUF", "tiny-Q4_K_M.gguf", tiny_model(tmp, "a.gguf", template=TEMPLATE))
    h.add("acme/tiny-GGUF", "tiny-Q8_0.gguf", tiny_model(tmp, "b.gguf", template=TEMPLATE + " "))
    h.add("acme/tiny-GGUF", "README.md", tiny_model(tmp, "c.gguf"))
    h.add("acme/bad-GGUF", "bad-Q4_K_M.gguf", tiny_model(tmp, "d.gguf", template="{{ x }}"))
    h.corrupt.add("bad-Q4_K_M.gguf")
    from tests.visionmodel import write_mmproj
    h.add("acme/seeing-GGUF", "seeing-Q4_K_M.gguf", tiny_model(tmp, "e.gguf", template=TEMPLATE))
    h.add("acme/seeing-GGUF", "mmproj-seeing-f16.gguf", write_mmproj(tmp / "mmproj.gguf", 64))
    h.add("acme/seeing-GGUF", "mmproj-seeing-Q8_0.gguf", write_mmproj(tmp / "mmproj8.gguf", 64, seed=1))
    yield h
    h.close()


@pytest.fixture
async def client(aiohttp_client, tmp_path, hub):
    app = create_app(tmp_path / "models", spawn=FakeFactory(), parallel=2, source=HubSource(endpoint=hub.url))
    return await aiohttp_client(app)


async def pull(client, name, **extra) -> tuple[int, list[dict]]:
    r = await client.post("/api/pull", json={"model": name, **extra})
    text = await r.text()
    assert "\n\n" not in text
    return r.status, [json.loads(x) for x in text.splitlines()]


def blob_files(client):
    return sorted(p.name for p in (client.server.app[CORE].store.blobs.dir).iterdir())


async def test_pull_hf_name_statuses_and_show(client):
    status, lines = await pull(client, "hf.co/acme/tiny-GGUF:q8_0")
    assert status == 200, lines
    names = [x["status"] for x in lines]
    assert names[0] == "pulling manifest"
    assert names[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = [x for x in lines if x["status"].startswith("pulling ") and x["status"] != "pulling manifest"]
    assert layer and all(x["digest"].startswith("sha256:") and x["status"] == "pulling " + x["digest"][7:19]
                         for x in layer)
    assert layer[-1]["completed"] == layer[-1]["total"] > 0
    tags = (await (await client.get("/api/tags")).json())["models"]
    assert [m["name"] for m in tags] == ["hf.co/acme/tiny-GGUF:q8_0"]
    info = await (await client.post("/api/show", json={"model": "hf.co/acme/tiny-GGUF:Q8_0"})).json()
    assert info["template"] == TEMPLATE + " " and '"<|im_end|>"' in info["parameters"]
    # the default quantization is Q4_K_M; pulling again reuses the blob
    status, lines = await pull(client, "hf.co/acme/tiny-GGUF", stream=False)
    assert status == 200 and lines == [{"status": "success"}]
    status, again = await pull(client, "hf.co/acme/tiny-GGUF")
    layer = [x for x in again if x.get("digest")]
    assert len(layer) == 1 and layer[0]["completed"] == layer[0]["total"]
    assert not any(n.endswith("-partial") for n in blob_files(client))


async def test_pull_catalog_name_with_license(client, hub):
    status, lines = await pull(client, "SmolLM2:135m", stream=False)
    assert status == 200 and lines == [{"status": "success"}], lines
    info = await (await client.post("/api/show", json={"name": "smollm2:135m"})).json()
    assert "Apache License 2.0" in info["license"] and info["details"]["family"] == "llama"
    assert "<|im_start|>" in info["template"]


async def test_pull_takes_the_projector_of_a_vision_repo(client):
    status, lines = await pull(client, "hf.co/acme/seeing-GGUF")
    assert status == 200 and lines[-1] == {"status": "success"}, lines
    r = await client.post("/api/show", json={"model": "hf.co/acme/seeing-GGUF"})
    info = await r.json()
    assert "vision" in info["capabilities"] and info["projector_info"]["general.architecture"] == "clip"
    store = client.server.app[CORE].store
    m = store.load("hf.co/acme/seeing-GGUF")
    assert len(m.projectors) == 1 and len(m.model_paths) == 1
    from tests.visionmodel import mmproj_bytes
    assert m.projectors[0].read_bytes() == mmproj_bytes(64, seed=0)  # the F16 one, not the Q8_0
    kinds = [x["mediaType"].rsplit(".", 1)[1] for x in m.manifest["layers"]]
    assert kinds.count("projector") == 1 and kinds.count("model") == 1


async def test_unknown_names(client):
    status, lines = await pull(client, "lama3.2")
    assert status == 404
    assert "not in the catalog; did you mean llama3.2" in lines[0]["error"]
    status, lines = await pull(client, "llama3.2:2b")
    assert status == 404 and "llama3.2:1b" in lines[0]["error"]
    status, lines = await pull(client, "hf.co/acme/missing-GGUF")
    assert status == 200 and lines[0] == {"status": "pulling manifest"}
    assert "repository 'acme/missing-GGUF' not found" in lines[-1]["error"]
    status, lines = await pull(client, "hf.co/acme/tiny-GGUF:Q2_K", stream=False)
    assert status == 404 and "it has: Q4_K_M, Q8_0" in lines[0]["error"]
    status, lines = await pull(client, "bad name!")
    assert status == 400


async def test_corrupt_download_is_rejected(client):
    status, lines = await pull(client, "hf.co/acme/bad-GGUF")
    assert lines[-1]["error"].startswith("digest mismatch, file must be downloaded again: want sha256:")
    assert blob_files(client) == []
    assert (await (await client.get("/api/tags")).json())["models"] == []


async def test_resume_after_cut_and_restart(client, hub):
    # a partial file left by an earlier daemon: the download continues from its end
    store = client.server.app[CORE].store
    f = hub.repos[SMOL_REPO][SMOL_FILE]
    store.blobs.dir.mkdir(parents=True, exist_ok=True)
    half = f.size // 2
    with open(f.path, "rb") as src:
        (store.blobs.dir / f"sha256-{f.sha256}-partial").write_bytes(src.read(half))
    hub.cut_once[SMOL_FILE] = 20 << 20  # and the connection drops 20 MB further on
    before = len(hub.gets(SMOL_FILE))
    status, lines = await pull(client, "smollm2:135m")
    assert lines[-1] == {"status": "success"}, lines[-3:]
    ranges = hub.gets(SMOL_FILE)[before:]
    assert ranges == [f"bytes={half}-", f"bytes={half + (20 << 20)}-"]
    done = [x["completed"] for x in lines if x.get("digest")]
    assert done == sorted(done) and done[0] >= half
    assert store.blobs.exists("sha256:" + f.sha256)


async def test_concurrent_pulls_share_one_download(client, hub):
    before = len(hub.gets(SMOL_FILE))
    results = await asyncio.gather(*(pull(client, n) for n in ("smollm2:135m", "smollm2:135m-instruct-q8_0")))
    assert all(lines[-1] == {"status": "success"} for _, lines in results)
    assert len(hub.gets(SMOL_FILE)) - before == 1
    names = {m["name"] for m in (await (await client.get("/api/tags")).json())["models"]}
    assert names == {"smollm2:135m", "smollm2:135m-instruct-q8_0"}


async def test_directory_mirror(aiohttp_client, tmp_path, hub):
    mirror = tmp_path / "mirror" / "acme" / "tiny-GGUF"
    mirror.mkdir(parents=True)
    shutil.copy(hub.repos["acme/tiny-GGUF"]["tiny-Q4_K_M.gguf"].path, mirror / "tiny-Q4_K_M.gguf")
    app = create_app(tmp_path / "models", spawn=FakeFactory(), source=DirSource(tmp_path / "mirror"))
    c = await aiohttp_client(app)
    status, lines = await pull(c, "hf.co/acme/tiny-GGUF")
    assert lines[-1] == {"status": "success"}, lines


def test_choose_gguf_splits_and_fallback():
    files = [RemoteFile(p) for p in [
        "m-Q8_0.gguf", "Q4_K_M/m-Q4_K_M-00002-of-00002.gguf", "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf",
        "mmproj-f16.gguf", "m.IQ4_XS.gguf"]]
    q, chosen = choose_gguf(files, None, "x")
    assert q == "Q4_K_M" and [f.path for f in chosen] == [
        "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf", "Q4_K_M/m-Q4_K_M-00002-of-00002.gguf"]
    assert [f.path for f in choose_gguf(files, "iq4_xs", "x")[1]] == ["m.IQ4_XS.gguf"]
    assert choose_gguf([RemoteFile("only-Q3_K_S.gguf")], None, "x")[0] == "Q3_K_S"

