"""Rerank wire shapes (llama-server's and vLLM's, Jina/Cohere-style) and the pure response builder."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, field_validator

from ollamalike.api.types import PRIORITY, _ModelRequest, _RunRequest
from ollamalike.errors import BadRequest


class RerankRequest(_ModelRequest):
    query: str = Field(description="the query the documents are scored against")
    documents: list[Any] = Field(description='the documents: strings, or objects with a "text" field')
    top_n: int | None = Field(None, description="return only the best n results (unset or 0: all)")
    return_documents: bool | None = Field(None, description="add each result's document text")
    return_text: bool | None = Field(None, description="llama-server's name for return_documents")
    truncate: bool = Field(True, description="cut a query/document pair longer than the context "
                           "(default); false: 400")
    priority: int = Field(0, description=PRIORITY)
    keep_alive: float | None = None

    _keep_alive = field_validator("keep_alive", mode="before")(_RunRequest._keep_alive.__func__)

    @classmethod
    def _missing(cls, where: str) -> str | None:
        if where in ("query", "documents"):
            return f"{where} is required"
        return super()._missing(where)

    @field_validator("top_n")
    @classmethod
    def _top_n(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("top_n must not be negative")
        return v

    def texts(self) -> list[str]:
        out = []
        for i, doc in enumerate(self.documents):
            if isinstance(doc, str):
                out.append(doc)
            elif isinstance(doc, dict) and isinstance(doc.get("text"), str):
                out.append(doc["text"])
            else:
                raise BadRequest(f"invalid value for 'documents.{i}': a document is a string "
                                 'or an object with a "text" string')
        return out

    @property
    def with_documents(self) -> bool:
        return bool(self.return_documents or self.return_text)


def from_tei(body: Any) -> Any:
    """Hugging Face TEI's request (`texts` for the documents), as llama-server takes it on /rerank."""
    if isinstance(body, dict) and "texts" in body and "documents" not in body:
        return {**body, "documents": body["texts"]}
    return body


def _order(req: RerankRequest, scores: list[float]) -> list[int]:
    """Best first; ties keep the documents' order; cut to top_n."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order[: req.top_n] if req.top_n else order


def tei_response(req: RerankRequest, texts: list[str], scores: list[float]) -> list[dict[str, Any]]:
    """TEI's answer: a bare list of `{"index", "score"}` (and `"text"` when asked), best first."""
    return [{"index": i, "score": scores[i], **({"text": texts[i]} if req.with_documents else {})}
            for i in _order(req, scores)]


def rerank_response(req: RerankRequest, texts: list[str], scores: list[float], prompt_tokens: int) -> dict[str, Any]:
    """The Jina/Cohere shape llama-server and vLLM answer: results best first, with usage."""
    order = _order(req, scores)
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if req.with_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return {"id": f"rerank-{uuid.uuid4().hex}", "object": "list", "model": req.model, "results": results,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
