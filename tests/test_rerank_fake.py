"""Rerank through the daemon app with a fake runner: request shapes, sorting, top_n, documents,
the routes' names and errors (the real scoring is tests/test_real_rerank.py)."""

from __future__ import annotations

import pytest

from ollamalike.server.app import create_app
from ollamalike.store.gguf import read_gguf
from tests.ggufwriter import tiny_model, tiny_reranker
from tests.test_api_fake import create, upload

DOCS = ["a cat", "the red dog and the cat", "blue sky", "a red cat"]


@pytest.fixture
async def client(aiohttp_client, tmp_path, factory):
    c = await aiohttp_client(create_app(tmp_path / "models", spawn=factory, parallel=1))
    digest = await upload(c, tiny_reranker(tmp_path / "rr.gguf"))
    r = await c.post("/api/create", json={"model": "rr", "files": {"rr.gguf": digest}})
    assert r.status == 200, await r.text()
    return c


def test_reranker_detection_from_gguf(tmp_path):
    assert read_gguf(tiny_reranker(tmp_path / "rr.gguf")).is_reranker()
    assert not read_gguf(tiny_model(tmp_path)).is_reranker()
    assert not read_gguf(tiny_model(tmp_path, name="emb.gguf", pooling=True)).is_reranker()  # mean pooling


@pytest.mark.parametrize("path", ["/api/rerank", "/v1/rerank", "/v1/reranking", "/v2/rerank", "/rerank", "/reranking"])
async def test_results_sorted_by_score(client, factory, path):
    r = await client.post(path, json={"model": "rr", "query": "red cat", "documents": DOCS})
    assert r.status == 200, await r.text()
    out = await r.json()
    assert [x["index"] for x in out["results"]] == [3, 1, 0, 2]
    assert all(set(x) == {"index", "relevance_score"} for x in out["results"])
    assert out["model"] == "rr" and out["object"] == "list" and out["id"].startswith("rerank-")
    assert out["usage"]["prompt_tokens"] == out["usage"]["total_tokens"] == sum(7 + len(d) for d in DOCS)
    assert factory.spawned[0].reranked == [("red cat", DOCS)]


async def test_top_n_documents_and_priority(client, factory):
    r = await client.post("/v1/rerank", json={"model": "rr", "query": "red cat", "top_n": 2, "return_documents": True,
                                              "documents": [{"text": d} for d in DOCS], "priority": -1})
    results = (await r.json())["results"]
    assert [(x["index"], x["document"]["text"]) for x in results] == [(3, "a red cat"), (1, DOCS[1])]
    r = await client.post("/api/rerank", json={"model": "rr", "query": "x", "documents": DOCS, "top_n": 0})
    assert len((await r.json())["results"]) == 4  # 0: all, as vLLM


async def test_tei_request_gets_tei_answer(client):
    r = await client.post("/rerank", json={"model": "rr", "query": "red cat", "texts": DOCS, "return_text": True})
    assert r.status == 200
    out = await r.json()
    assert [x["index"] for x in out] == [3, 1, 0, 2] and out[0]["text"] == "a red cat" and "score" in out[0]


async def test_empty_documents_answer_without_loading(client, factory):
    r = await client.post("/api/rerank", json={"model": "rr", "query": "x", "documents": []})
    assert r.status == 200 and (await r.json())["results"] == [] and factory.spawned == []


async def test_errors(client, tmp_path, factory):
    await create(client, tmp_path, name="chat")
    r = await client.post("/api/rerank", json={"model": "chat", "query": "x", "documents": DOCS})
    assert r.status == 400 and (await r.json())["error"].startswith("model 'chat' is not a reranker")
    r = await client.post("/v1/rerank", json={"model": "chat", "query": "x", "documents": DOCS})
    assert r.status == 400 and "is not a reranker" in (await r.json())["error"]["message"]
    for body, message in [({"query": "x"}, "documents is required"), ({"documents": DOCS}, "query is required"),
                          ({"query": "x", "documents": DOCS, "top_n": -1}, "top_n must not be negative"),
                          ({"query": "x", "documents": [{"txt": "a"}]}, "invalid value for 'documents.0'")]:
        r = await client.post("/api/rerank", json={"model": "rr", **body})
        assert r.status == 400 and message in (await r.json())["error"], body
    r = await client.post("/api/rerank", json={"model": "nope", "query": "x", "documents": DOCS})
    assert r.status == 404
    show = await (await client.post("/api/show", json={"model": "rr"})).json()
    assert show["capabilities"] == ["rerank"]
    r = await client.post("/api/embed", json={"model": "rr", "input": "x"})
    assert r.status == 400 and "is a reranker" in (await r.json())["error"]
    assert factory.spawned == []
