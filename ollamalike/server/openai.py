"""The OpenAI-compatible API (/v1/*): thin handlers converting around the same `Core` calls as /api/*."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from ollamalike.api import openai as oa
from ollamalike.errors import OllamaError
from ollamalike.runner import protocol
from ollamalike.server.core import Core, normalize
from ollamalike.server.native import read_json

SSE = "text/event-stream"


def sse(obj: Any) -> bytes:
    return b"data: " + protocol.dumps(obj) + b"\n\n"


async def stream_sse(request: web.Request, events: AsyncIterator[dict[str, Any]],
                     convert: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> web.StreamResponse:
    """SSE `data: {chunk}` events ending in `data: [DONE]`. The first event is awaited before the
    status goes out, so an early failure keeps its HTTP status; a later one is an `{"error"}` event."""
    it = events.__aiter__()
    try:
        first: dict[str, Any] | None = await it.__anext__()
    except StopAsyncIteration:
        first = None
    resp = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        if first is not None:
            for chunk in convert(first):
                await resp.write(sse(chunk))
            async for ev in it:
                for chunk in convert(ev):
                    await resp.write(sse(chunk))
    except OllamaError as exc:
        await resp.write(sse(oa.error_body(exc.status, exc.message)))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


class OpenAI:
    def __init__(self, core: Core):
        self.core = core

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_get("/v1/models", self.models)
        r.add_get("/v1/models/{model:.+}", self.model)
        r.add_post("/v1/embeddings", self.embeddings)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = oa.ChatCompletionRequest.parse(await read_json(request))
        return await self._answer(request, body, oa.to_chat(body), oa.ChatStream, oa.chat_completion)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = oa.CompletionRequest.parse(await read_json(request))
        return await self._answer(request, body, oa.to_generate(body), oa.CompletionStream, oa.completion)

    async def _answer(self, request: web.Request, body: Any, req: Any, stream: Callable[..., Any],
                      whole: Callable[[str, list[dict[str, Any]]], dict[str, Any]]) -> web.StreamResponse:
        """Run a native request and answer in OpenAI's shape: SSE chunks, or one aggregated body."""
        events = self.core.run(req)
        if body.stream:
            return await stream_sse(request, events, stream(body.model, body.include_usage).convert)
        return web.json_response(whole(body.model, [ev async for ev in events]))

    async def models(self, request: web.Request) -> web.Response:
        data = [oa.model_card(m["name"], m["modified_at"]) for m in self.core.list_models()]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        info = self.core.show(name)
        return web.json_response(oa.model_card(name, info["modified_at"]))

    async def embeddings(self, request: web.Request) -> web.Response:
        body = oa.EmbeddingRequest.parse(await read_json(request))
        out = await self.core.embed(body.model, body.inputs(), options_=body.options,
                                    keep_alive=body.keep_alive_seconds(), priority=body.priority)
        vectors = [normalize(v, body.dimensions) for v in out["embeddings"]]  # as /api/embed does
        return web.json_response(oa.embedding_list(body.model, vectors, body.encoding_format,
                                                   int(out.get("prompt_eval_count") or 0)))
