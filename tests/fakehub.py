"""A local HTTP server that answers like the Hugging Face Hub for the calls huggingface_hub makes
when pulling (`list_repo_tree`, `get_hf_file_metadata`, `http_get`), serving real files from disk.
Runs in its own thread; point clients at `hub.url` (HF_ENDPOINT or an explicit endpoint).

Faults for tests: `cut_once[path] = n` closes the connection after n bytes of the next GET of path;
`corrupt.add(path)` serves flipped bytes while advertising the true sha256."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    path: Path
    size: int
    sha256: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, HubFile]] = {}
        self.cut_once: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self._digests: dict[Path, str] = {}
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)

    def add(self, repo: str, name: str, source: Path) -> HubFile:
        """Serve `source` as `name` in `repo` (digests cached: the same file is hashed once)."""
        source = Path(source)
        if source not in self._digests:
            self._digests[source] = _sha256(source)
        f = HubFile(source, source.stat().st_size, self._digests[source])
        self.repos.setdefault(repo, {})[name] = f
        return f

    def gets(self, name: str) -> list[str | None]:
        """The Range headers of the GETs of file `name` so far."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + name)]

    # --- server -------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/api/models/{org}/{repo}/tree/{rev}", self.tree)
        app.router.add_get("/api/models/{org}/{repo}", self.info)
        app.router.add_get("/api/models/{org}/{repo}/revision/{rev}", self.info)
        app.router.add_route("*", "/{org}/{repo}/resolve/{rev}/{path:.+}", self.resolve)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._started.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _repo(self, request: web.Request) -> dict[str, HubFile]:
        repo = f"{request.match_info['org']}/{request.match_info['repo']}"
        if repo not in self.repos:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound",
                                            "X-Error-Message": "Repository not found"})
        return self.repos[repo]

    async def tree(self, request: web.Request) -> web.Response:
        files = self._repo(request)
        return web.json_response([
            {"type": "file", "oid": f.sha256[:40], "size": f.size, "path": name,
             "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}}
            for name, f in sorted(files.items())])

    async def info(self, request: web.Request) -> web.Response:
        files = self._repo(request)
        repo = f"{request.match_info['org']}/{request.match_info['repo']}"
        return web.json_response({"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                  "siblings": [{"rfilename": n} for n in sorted(files)]})

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"]
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        f = self._repo(request).get(name)
        if f is None:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound",
                                            "X-Error-Message": "Entry not found"})
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{f.sha256}"', "X-Linked-Etag": f'"{f.sha256}"',
                   "X-Linked-Size": str(f.size), "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(f.size)})
        start = 0
        rng = request.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        length = f.size - start
        resp = web.StreamResponse(status=206 if start else 200, headers=headers)
        resp.content_length = length
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{f.size - 1}/{f.size}"
        await resp.prepare(request)
        cut = self.cut_once.pop(name, None)
        sent = 0
        with open(f.path, "rb") as src:
            src.seek(start)
            while chunk := src.read(1 << 20):
                if name in self.corrupt:
                    chunk = bytes(b ^ 0xFF for b in chunk[:16]) + chunk[16:]
                if cut is not None and sent + len(chunk) >= cut:
                    await resp.write(chunk[:cut - sent])
                    request.transport.close()  # the connection drops mid-file
                    return resp
                await resp.write(chunk)
                sent += len(chunk)
        await resp.write_eof()
        return resp
