"""POST /api/rerank, /v1/rerank and the names llama-server and vLLM clients use: scores from a
reranker's runner (llama.cpp rank pooling), sorted here."""

from __future__ import annotations

from aiohttp import web

from ollamalike.api.rerank import RerankRequest, from_tei, rerank_response, tei_response
from ollamalike.server.core import Core
from ollamalike.server.native import read_json

# llama-server answers /rerank, /reranking, /v1/rerank, /v1/reranking; vLLM /rerank, /v1/rerank, /v2/rerank
PATHS = ("/api/rerank", "/v1/rerank", "/v1/reranking", "/v2/rerank", "/rerank", "/reranking")


class Rerank:
    def __init__(self, core: Core):
        self.core = core

    def routes(self, app: web.Application) -> None:
        for path in PATHS:
            app.router.add_post(path, self.rerank)

    async def rerank(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        tei = from_tei(body)
        req = RerankRequest.parse(tei)
        texts = req.texts()
        out = await self.core.rerank(req.model, req.query, texts, truncate=req.truncate,
                                     keep_alive=req.keep_alive, priority=req.priority)
        if tei is not body:  # asked in TEI's words: answered in TEI's shape
            return web.json_response(tei_response(req, texts, out["scores"]))
        return web.json_response(rerank_response(req, texts, out["scores"], out["prompt_eval_count"]))
