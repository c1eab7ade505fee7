"""POST /api/tokenize and /api/detokenize: the model's own tokenizer, served by its runner."""

from __future__ import annotations

from aiohttp import web

from ollamalike.api.types import DetokenizeRequest, TokenizeRequest
from ollamalike.server.core import Core
from ollamalike.server.native import read_json


class Tokens:
    def __init__(self, core: Core):
        self.core = core

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/tokenize", self.tokenize)
        app.router.add_post("/api/detokenize", self.detokenize)

    async def tokenize(self, request: web.Request) -> web.Response:
        req = TokenizeRequest.parse(await read_json(request))
        tokens = await self.core.tokenize(req.model, req.input_text(), add_special=req.add_special,
                                          keep_alive=req.keep_alive)
        return web.json_response({"model": req.model, "tokens": tokens})

    async def detokenize(self, request: web.Request) -> web.Response:
        req = DetokenizeRequest.parse(await read_json(request))
        content = await self.core.detokenize(req.model, req.tokens, keep_alive=req.keep_alive)
        return web.json_response({"model": req.model, "content": content})
