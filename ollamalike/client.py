"""The daemon's HTTP client (aiohttp), one method per endpoint. Used by the CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from ollamalike import config
from ollamalike.errors import OllamaError


class ResponseError(OllamaError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ConnectError(OllamaError):
    pass


async def _file_chunks(path: Path, progress=None) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if progress:
                progress(len(chunk))
            yield chunk


class Client:
    def __init__(self, base_url: str | None = None):
        self.base_url = (base_url or config.host().connect_url).rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Client":
        key = config.api_key()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                                              headers={"Authorization": f"Bearer {key}"} if key else None)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session:
            await self._session.close()

    async def _request(self, method: str, path: str, **kw: Any) -> aiohttp.ClientResponse:
        assert self._session is not None, "use `async with Client()`"
        try:
            resp = await self._session.request(method, self.base_url + path, **kw)
        except aiohttp.ClientConnectorError:
            raise ConnectError(f"could not connect to ollamalike server at {self.base_url}, "
                               "run 'ollamalike serve' to start it") from None
        if resp.status >= 400:
            text = await resp.text()
            try:
                message = json.loads(text).get("error") or text
            except (ValueError, AttributeError):
                message = text or resp.reason or f"status {resp.status}"
            resp.release()
            raise ResponseError(message, resp.status)
        return resp

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self._request(method, path, json=body)
        async with resp:
            text = await resp.text()
            return json.loads(text) if text.strip() else {}

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        resp = await self._request("POST", path, json={**body, "stream": True})
        async with resp:
            async for raw in resp.content:
                line = raw.strip()
                if not line:
                    continue
                part = json.loads(line)
                if part.get("error"):
                    raise ResponseError(part["error"], -1)
                yield part

    # --- endpoints --------------------------------------------------------------------------
    async def heartbeat(self) -> None:
        resp = await self._request("HEAD", "/")
        resp.release()

    async def version(self) -> str:
        return (await self._json("GET", "/api/version"))["version"]

    async def list(self) -> list[dict[str, Any]]:
        return (await self._json("GET", "/api/tags"))["models"]

    async def ps(self) -> list[dict[str, Any]]:
        return (await self._json("GET", "/api/ps"))["models"]

    async def show(self, model: str, verbose: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        if verbose:
            body["verbose"] = True
        return await self._json("POST", "/api/show", body)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/api/embed", body)

    async def copy(self, source: str, destination: str) -> None:
        await self._json("POST", "/api/copy", {"source": source, "destination": destination})

    async def delete(self, model: str) -> None:
        await self._json("DELETE", "/api/delete", {"model": model})

    async def blob_exists(self, digest: str) -> bool:
        try:
            resp = await self._request("HEAD", f"/api/blobs/{digest}")
        except ResponseError as exc:
            if exc.status == 404:
                return False
            raise
        resp.release()
        return True

    async def upload_blob(self, digest: str, path: Path, progress=None) -> None:
        resp = await self._request("POST", f"/api/blobs/{digest}", data=_file_chunks(path, progress))
        resp.release()

    def create(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/api/create", body)

    def pull(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/api/pull", body)

    def generate(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/api/generate", body)

    def chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/api/chat", body)
