"""Ollama's native API (/api/*) as aiohttp handlers around `Core`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ollamalike import __version__, config
from ollamalike.api.types import (ChatRequest, CopyRequest, CreateRequest, DeleteRequest, EmbeddingsRequest,
                                  EmbedRequest, GenerateRequest, PullRequest, ShowRequest)
from ollamalike.errors import BadRequest, OllamaError, TooLarge
from ollamalike.runner import protocol
from ollamalike.server.core import Core, normalize, now_rfc3339
from ollamalike.store.blobs import normalize_digest

NDJSON = "application/x-ndjson"


dumps = protocol.dumps


async def read_json(request: web.Request) -> Any:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"request body too large: the limit is {config.max_body() / 2**20:g} MiB "
                       "(OLLAMALIKE_MAX_BODY)") from None
    if not body.strip():
        raise BadRequest("missing request body")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None


async def stream_ndjson(request: web.Request, events: AsyncIterator[dict[str, Any]]) -> web.StreamResponse:
    """Send NDJSON lines. The first event is awaited before the status line goes out, so an early
    failure still gets its own HTTP status; a later one becomes a final `{"error"}` line."""
    it = events.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = None
    resp = web.StreamResponse(headers={"Content-Type": NDJSON})
    await resp.prepare(request)
    try:
        if first is not None:
            await resp.write(dumps(first) + b"\n")
            async for ev in it:
                await resp.write(dumps(ev) + b"\n")
    except OllamaError as exc:
        await resp.write(dumps({"error": exc.message}) + b"\n")
    await resp.write_eof()
    return resp


def _metrics(ev: dict[str, Any]) -> dict[str, Any]:
    keys = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
            "eval_duration", "draft_count", "draft_accepted_count")  # the last two: speculative decoding (extension)
    return {k: int(ev[k]) for k in keys if ev.get(k)}


class Native:
    def __init__(self, core: Core):
        self.core = core

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.root)  # aiohttp answers HEAD for GET routes
        r.add_get("/api/version", self.version)
        r.add_get("/api/tags", self.tags)
        r.add_post("/api/show", self.show)
        r.add_get("/api/ps", self.ps)
        r.add_post("/api/copy", self.copy)
        r.add_delete("/api/delete", self.delete)
        r.add_post("/api/create", self.create)
        r.add_post("/api/pull", self.pull)
        r.add_head("/api/blobs/{digest}", self.blob_head)
        r.add_post("/api/blobs/{digest}", self.blob_upload)
        r.add_post("/api/generate", self.generate)
        r.add_post("/api/chat", self.chat)
        r.add_post("/api/embed", self.embed)
        r.add_post("/api/embeddings", self.embeddings)
        r.add_get("/metrics", self.metrics)

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": __version__})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=await self.core.metrics(), content_type="text/plain")

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": self.core.list_models()})

    async def show(self, request: web.Request) -> web.Response:
        req = ShowRequest.parse(await read_json(request))
        return web.json_response(self.core.show(req.model, req.verbose))

    async def ps(self, request: web.Request) -> web.Response:
        return web.json_response({"models": self.core.ps()})

    async def copy(self, request: web.Request) -> web.Response:
        req = CopyRequest.parse(await read_json(request))
        self.core.copy(req.source, req.destination)
        return web.Response(status=200)

    async def delete(self, request: web.Request) -> web.Response:
        req = DeleteRequest.parse(await read_json(request))
        await self.core.delete(req.model)
        return web.Response(status=200)

    async def create(self, request: web.Request) -> web.StreamResponse:
        req = CreateRequest.parse(await read_json(request))
        if req.stream:
            return await stream_ndjson(request, self.core.create(req))
        last: dict[str, Any] = {}
        async for status in self.core.create(req):
            last = status
        return web.json_response(last)

    async def pull(self, request: web.Request) -> web.StreamResponse:
        req = PullRequest.parse(await read_json(request))
        if req.stream:
            return await stream_ndjson(request, self.core.pull(req.model))
        last: dict[str, Any] = {}
        async for ev in self.core.pull(req.model):
            last = ev
        return web.json_response(last)

    async def blob_head(self, request: web.Request) -> web.Response:
        exists = self.core.store.blobs.exists(normalize_digest(request.match_info["digest"]))
        return web.Response(status=200 if exists else 404)

    async def blob_upload(self, request: web.Request) -> web.Response:
        digest = normalize_digest(request.match_info["digest"])
        blobs = self.core.store.blobs
        if blobs.exists(digest):
            return web.Response(status=200)
        await blobs.write_stream(request.content.iter_chunked(1 << 20), expected=digest)
        return web.Response(status=201)

    async def embed(self, request: web.Request) -> web.Response:
        req = EmbedRequest.parse(await read_json(request))
        inputs = req.inputs()
        out = await self.core.embed(req.model, inputs, truncate=req.truncate, options_=req.options,
                                    keep_alive=req.keep_alive, priority=req.priority)
        out["embeddings"] = [normalize(v, req.dimensions) for v in out["embeddings"]]
        return web.json_response({"model": req.model, **out})

    async def embeddings(self, request: web.Request) -> web.Response:
        req = EmbeddingsRequest.parse(await read_json(request))
        out = await self.core.embed(req.model, [req.prompt] if req.prompt else [], options_=req.options,
                                    keep_alive=req.keep_alive)
        return web.json_response({"embedding": out["embeddings"][0] if out["embeddings"] else []})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        req = GenerateRequest.parse(await read_json(request))
        name = req.model

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for ev in self.core.run(req):
                if "content" in ev or "thinking" in ev or "logprobs" in ev:
                    yield {"model": name, "created_at": now_rfc3339(), "response": ev.get("content", ""),
                           **{k: ev[k] for k in ("thinking", "logprobs") if k in ev}, "done": False}
                elif ev.get("done"):
                    final = {"model": name, "created_at": now_rfc3339(), "response": "", "done": True,
                             "done_reason": ev["done_reason"]}
                    if ev.get("tokens") is not None and not req.raw:
                        final["context"] = ev["tokens"]
                    yield final | _metrics(ev)
        return await self._respond(request, events(), req.stream, "response")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        req = ChatRequest.parse(await read_json(request))
        name = req.model

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for ev in self.core.run(req):
                if not ev.get("done"):  # content, thinking or tool_calls
                    yield {"model": name, "created_at": now_rfc3339(),
                           "message": {"role": "assistant", "content": ev.get("content", "")} | {
                               k: ev[k] for k in ("thinking", "tool_calls") if k in ev}, "done": False,
                           **({"logprobs": ev["logprobs"]} if "logprobs" in ev else {})}
                elif ev.get("done"):
                    yield {"model": name, "created_at": now_rfc3339(),
                           "message": {"role": "assistant", "content": ""}, "done": True,
                           "done_reason": ev["done_reason"]} | _metrics(ev)
        return await self._respond(request, events(), req.stream, "message")

    async def _respond(self, request: web.Request, events: AsyncIterator[dict[str, Any]], stream: bool,
                       field: str) -> web.StreamResponse:
        if stream:
            return await stream_ndjson(request, events)
        text, thinking, calls, logprobs, final = [], [], [], [], {}
        async for ev in events:
            if ev.get("done"):
                final = ev
                continue
            logprobs += ev.get("logprobs", [])
            part = ev if field == "response" else ev["message"]
            text.append(part.get(field if field == "response" else "content", ""))
            thinking.append(part.get("thinking", ""))
            calls += part.get("tool_calls", [])
        extra = {"thinking": "".join(thinking)} if any(thinking) else {}
        if field == "response":
            final = final | {"response": "".join(text)} | extra
        else:
            final["message"] = {"role": "assistant", "content": "".join(text)} | extra | (
                {"tool_calls": calls} if calls else {})
        if logprobs:
            final["logprobs"] = logprobs
        return web.json_response(final)
