"""Rerank on the real daemon: a tiny BERT cross-encoder written here (random seeded weights, a
classification head, rank pooling) scored by llama.cpp through its runner. The scores mean nothing,
but they are deterministic, differ between documents and follow the document, not its position."""

from __future__ import annotations

import pytest
import requests

from tests.ggufwriter import tiny_reranker

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]

RERANKER = "tiny-reranker"
DOCS = ["hi", "it is a bear", "the giant panda is a bear species of china", "bread recipe flour water salt"]
QUERY = "what is a panda?"


@pytest.fixture(scope="module")
def reranker(daemon, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rerank")
    daemon.create(RERANKER, tiny_reranker(tmp / "reranker.gguf"), tmp)
    return daemon


def rerank(d, path="/api/rerank", **body):
    return requests.post(d.url + path, json={"model": RERANKER, "query": QUERY, "documents": DOCS, **body},
                         timeout=120)


def test_rerank_scores_sorted_and_follow_the_documents(reranker):
    r = rerank(reranker)
    assert r.status_code == 200, r.text
    out = r.json()
    results = out["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(DOCS)  # sorted, all different
    assert all("document" not in x for x in results)
    assert out["model"] == RERANKER and out["usage"]["total_tokens"] > sum(len(d.split()) for d in DOCS)
    by_doc = {DOCS[x["index"]]: x["relevance_score"] for x in results}
    # deterministic, and a score belongs to its document: reversed input, same scores per document
    again = rerank(reranker, documents=DOCS[::-1]).json()["results"]
    assert {DOCS[::-1][x["index"]]: x["relevance_score"] for x in again} == pytest.approx(by_doc, rel=1e-4)
    assert [DOCS[::-1][x["index"]] for x in again] == [DOCS[x["index"]] for x in results]
    # and to the query: another query scores the same documents differently
    other = rerank(reranker, query="bread").json()["results"]
    assert {DOCS[x["index"]]: x["relevance_score"] for x in other} != pytest.approx(by_doc, rel=1e-4)


def test_v1_rerank_top_n_and_return_documents(reranker):
    full = rerank(reranker).json()["results"]
    r = rerank(reranker, path="/v1/rerank", top_n=2, return_documents=True)
    assert r.status_code == 200, r.text
    top = r.json()["results"]
    assert [x["index"] for x in top] == [x["index"] for x in full[:2]]
    assert [x["document"]["text"] for x in top] == [DOCS[x["index"]] for x in full[:2]]
    # llama-server's names: /v1/reranking, return_text; documents as {"text": ...} objects (Cohere/vLLM)
    r = rerank(reranker, path="/v1/reranking", top_n=1, return_text=True, documents=[{"text": d} for d in DOCS])
    assert r.status_code == 200 and r.json()["results"][0]["index"] == full[0]["index"]
    assert r.json()["results"][0]["document"]["text"] == DOCS[full[0]["index"]]


def test_rerank_empty_documents_and_errors(reranker):
    r = rerank(reranker, documents=[])
    assert r.status_code == 200 and r.json()["results"] == []
    # a model that is not a reranker: an explicit 400 naming it, on both routes in their shapes
    r = rerank(reranker, model="smollm2:135m")
    assert r.status_code == 400 and r.json()["error"].startswith("model 'smollm2:135m' is not a reranker")
    r = rerank(reranker, path="/v1/rerank", model="smollm2:135m")
    assert r.status_code == 400 and "is not a reranker" in r.json()["error"]["message"]
    r = rerank(reranker, model="no-such-model")
    assert r.status_code == 404
    r = requests.post(reranker.url + "/api/rerank", json={"model": RERANKER, "documents": DOCS}, timeout=60)
    assert r.status_code == 400 and r.json()["error"] == "query is required"
    r = rerank(reranker, documents=[1, 2])
    assert r.status_code == 400 and "documents.0" in r.json()["error"]
    # the reranker generates nothing and embeds nothing, and says so
    r = requests.post(reranker.url + "/api/generate", json={"model": RERANKER, "prompt": "hi"}, timeout=60)
    assert r.status_code == 400 and "does not support generate" in r.json()["error"]
    r = requests.post(reranker.url + "/api/embed", json={"model": RERANKER, "input": "hi"}, timeout=60)
    assert r.status_code == 400 and "is a reranker" in r.json()["error"]


def test_show_reports_the_rerank_capability(reranker):
    show = requests.post(reranker.url + "/api/show", json={"model": RERANKER}, timeout=60).json()
    assert show["capabilities"] == ["rerank"]
    show = requests.post(reranker.url + "/api/show", json={"model": "smollm2:135m"}, timeout=60).json()
    assert "rerank" not in show["capabilities"]


def test_long_document_is_truncated_or_refused(reranker):
    long_doc = " ".join(["panda"] * 400)  # past the model's 128-token context
    r = rerank(reranker, documents=[long_doc, "hi"])
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    r = rerank(reranker, documents=[long_doc, "hi"], truncate=False)
    assert r.status_code == 400 and "documents[0]" in r.json()["error"]
