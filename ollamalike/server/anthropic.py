"""Anthropic's Messages API (/v1/messages): thin handlers converting around the same `Core` calls as
/api/chat. Errors on these paths are in Anthropic's shape (server/app.py's boundary picks it)."""

from __future__ import annotations

from aiohttp import web

from ollamalike.api import anthropic as an
from ollamalike.api.types import ChatRequest
from ollamalike.errors import OllamaError
from ollamalike.server.core import Core, capabilities
from ollamalike.server.native import read_json
from ollamalike.server.sse import stream_named

PREFIX = "/v1/messages"


def relaxed(core: Core, req: ChatRequest) -> ChatRequest:
    """Agents (Claude Code, Codex) ask for thinking whatever the model: for a model that cannot think
    the request runs without it instead of failing, as Ollama relaxes it for its Anthropic API."""
    if req.think not in (None, False) and "thinking" not in capabilities(core.model(req.model)):
        req.think = None
    return req


def _error_event(exc: OllamaError) -> tuple[str, dict]:
    return "error", an.error_body(exc.status, exc.message)


class Anthropic:
    def __init__(self, core: Core):
        self.core = core

    def routes(self, app: web.Application) -> None:
        app.router.add_post(PREFIX, self.messages)
        app.router.add_post(PREFIX + "/count_tokens", self.count_tokens)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = an.MessagesRequest.parse(await read_json(request))
        events = self.core.run(relaxed(self.core, an.to_chat(body)))
        if body.stream:
            stream = an.MessageStream(body.model, body.stop_sequences)
            return await stream_named(request, events, stream.convert, _error_event)
        return web.json_response(an.message(body.model, [ev async for ev in events], body.stop_sequences))

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = an.CountTokensRequest.parse(await read_json(request))
        return web.json_response({"input_tokens": await self.core.count_chat_tokens(relaxed(self.core, an.to_chat(body)))})
