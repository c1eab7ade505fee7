"""A scripted stand-in for the daemon's HTTP API, for exact-output CLI tests: it answers /api/show,
/api/generate, /api/chat, /api/embed, /api/create, /api/pull from canned data, records every request
body, and runs on its own thread so the CLI can be driven in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web

STATS = {"total_duration": 1_500_000_000, "load_duration": 2_000_000, "prompt_eval_count": 5,
         "prompt_eval_duration": 250_000_000, "eval_count": 4, "eval_duration": 500_000_000}


def model_info(**extra: Any) -> dict[str, Any]:
    info = {
        "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                    "parameter_size": "134.52M", "quantization_level": "Q4_1"},
        "model_info": {"general.architecture": "llama", "general.parameter_count": 134515008,
                       "llama.context_length": 8192, "llama.embedding_length": 576},
        "capabilities": ["completion"], "parameters": "temperature                    0",
        "template": "{{ .Prompt }}", "system": "", "license": "", "modelfile": "FROM x\n",
        "modified_at": "2026-11-28T19:00:00.000000Z",
    }
    info.update(extra)
    return info


class FakeDaemon:
    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {"smol": model_info()}
        self.script: list[dict[str, str]] = [{"content": "Hello"}, {"content": " there."}]
        self.embedding = [0.1, -0.25, 3e-7, 1.0]
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.create_level: str | None = None  # quantization the created model reports
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    # --- helpers --------------------------------------------------------------------------------
    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [b for p, b in self.requests if p == path]

    def _info(self, name: str) -> dict[str, Any] | None:
        return self.models.get(name.removesuffix(":latest"))

    # --- server -----------------------------------------------------------------------------------
    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("HEAD", "/", self.heartbeat)
        for path, handler in (("/api/show", self.show), ("/api/generate", self.generate),
                              ("/api/chat", self.chat), ("/api/embed", self.embed),
                              ("/api/create", self.create), ("/api/pull", self.pull)):
            app.router.add_post(path, handler)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def down() -> None:
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _body(self, request: web.Request, path: str) -> dict[str, Any]:
        body = await request.json()
        self.requests.append((path, body))
        return body

    @staticmethod
    def _missing(name: str) -> web.Response:
        return web.json_response({"error": f"model '{name}' not found"}, status=404)

    async def _ndjson(self, request: web.Request, parts: list[dict[str, Any]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for part in parts:
            await resp.write(json.dumps(part).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def heartbeat(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def show(self, request: web.Request) -> web.Response:
        body = await self._body(request, "show")
        info = self._info(body["model"])
        return web.json_response(info) if info is not None else self._missing(body["model"])

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "generate")
        if self._info(body["model"]) is None:
            return self._missing(body["model"])
        if not body.get("prompt"):
            return await self._ndjson(request, [{"model": body["model"], "response": "", "done": True}])
        parts = [{"model": body["model"], "response": p.get("content", ""),
                  **({"thinking": p["thinking"]} if "thinking" in p else {}), "done": False} for p in self.script]
        return await self._ndjson(request, parts + [{"model": body["model"], "response": "", "done": True,
                                                     "done_reason": "stop", **STATS}])

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "chat")
        if self._info(body["model"]) is None:
            return self._missing(body["model"])
        parts = [{"model": body["model"], "message": {"role": "assistant", **p}, "done": False} for p in self.script]
        return await self._ndjson(request, parts + [{"model": body["model"], "message": {"role": "assistant", "content": ""},
                                                     "done": True, "done_reason": "stop", **STATS}])

    async def embed(self, request: web.Request) -> web.Response:
        body = await self._body(request, "embed")
        vec = self.embedding[: body.get("dimensions") or None]
        return web.json_response({"model": body["model"], "embeddings": [vec]})

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "create")
        info = model_info()
        if self.create_level:
            info["details"]["quantization_level"] = self.create_level
        self.models[body["model"]] = info
        return await self._ndjson(request, [{"status": "writing manifest"}, {"status": "success"}])

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, "pull")
        self.models[body["model"]] = model_info()
        return await self._ndjson(request, [{"status": "pulling manifest"}, {"status": "success"}])
