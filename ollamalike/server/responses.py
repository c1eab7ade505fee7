"""OpenAI's Responses API (/v1/responses, stateless): a thin handler converting around the same
`Core.run` as /api/chat. Errors are in OpenAI's shape (the /v1/ boundary in server/app.py)."""

from __future__ import annotations

from aiohttp import web

from ollamalike.api import responses as rs
from ollamalike.errors import OllamaError
from ollamalike.server.anthropic import relaxed
from ollamalike.server.core import Core
from ollamalike.server.native import read_json
from ollamalike.server.sse import stream_named


class Responses:
    def __init__(self, core: Core):
        self.core = core

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self.create)

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = rs.ResponsesRequest.parse(await read_json(request))
        events = self.core.run(relaxed(self.core, rs.to_chat(body)))
        if body.stream:
            stream = rs.ResponseStream(body)

            def error(exc: OllamaError) -> tuple[str, dict]:
                return "error", rs.error_event(stream.seq, exc.message, exc.status)
            return await stream_named(request, events, stream.convert, error)
        return web.json_response(rs.response(body, [ev async for ev in events]))
