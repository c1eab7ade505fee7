"""Models served by OpenAI-compatible upstream servers: sending the translated requests, balancing a
model's upstreams (least outstanding requests), health checks, failover before the first byte, and
the request/error/latency counters /metrics shows. No runner and no scheduler are involved."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp

from ollamalike import config, options
from ollamalike.api import upstream as up
from ollamalike.api.types import ChatRequest, GenerateRequest
from ollamalike.api.upstream import UpstreamRef
from ollamalike.errors import OllamaError
from ollamalike.store.manifests import Model

log = logging.getLogger(__name__)
RETRYABLE = (502, 503, 504)  # the upstream answered, but generated nothing: another one may serve it


class UpstreamError(OllamaError):
    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


@dataclass
class Backend:
    """One upstream URL of one model, with its counters."""

    ref: UpstreamRef
    outstanding: int = 0
    healthy: bool | None = None  # None: not checked yet (tried like a healthy one)
    last_error: str = ""
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0  # seconds from sending the request to its last byte
    latency_count: int = 0
    ttft_sum: float = 0.0  # seconds to the first streamed byte

    def headers(self) -> dict[str, str]:
        if not self.ref.api_key_env:
            return {}
        key = os.environ.get(self.ref.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def down(self, reason: str) -> None:
        if self.healthy is not False:
            log.warning("upstream %s is down: %s", self.ref.url, reason)
        self.healthy, self.last_error = False, reason


@dataclass
class Pool:
    """The upstreams of one model."""

    backends: list[Backend]
    task: asyncio.Task | None = None
    last_used: float = 0.0
    keep_until: float = 0.0
    name: str = ""
    turn: int = 0

    def order(self) -> list[Backend]:
        """Healthy (or unchecked) upstreams first, each group by fewest outstanding requests, ties taken
        in turn (so a trickle of requests spreads too); the down ones stay last in the list since a
        health check may be stale."""
        n = len(self.backends)
        self.turn += 1
        ranked = sorted(range(n), key=lambda i: (self.backends[i].healthy is False, self.backends[i].outstanding,
                                                 (i - self.turn) % n))
        return [self.backends[i] for i in ranked]


class Upstreams:
    """Every upstream pool of the daemon, one per model (a copy has its own counters)."""

    def __init__(self, *, health_interval: float | None = None, connect_timeout: float | None = None,
                 read_timeout: float | None = None):
        self.pools: dict[tuple[str, tuple[UpstreamRef, ...]], Pool] = {}
        self.health_interval = config.upstream_health_interval() if health_interval is None else health_interval
        self.connect_timeout = config.upstream_connect_timeout() if connect_timeout is None else connect_timeout
        self.read_timeout = config.upstream_read_timeout() if read_timeout is None else read_timeout
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # no total limit: a long generation is fine; connecting and each read are bounded
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, connect=self.connect_timeout,
                sock_read=self.read_timeout),
                connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def pool(self, refs: list[UpstreamRef], name: str) -> Pool:
        key = (name, tuple(refs))
        p = self.pools.get(key)
        if p is None:
            p = self.pools[key] = Pool([Backend(r) for r in refs], name=name)
            if self.health_interval > 0:
                p.task = asyncio.get_running_loop().create_task(self._health_loop(p))
        return p

    async def close(self) -> None:
        for p in self.pools.values():
            if p.task:
                p.task.cancel()
        for p in self.pools.values():
            if p.task:
                try:
                    await p.task
                except (asyncio.CancelledError, Exception):
                    pass
        if self._session is not None:
            await self._session.close()

    # --- health ---------------------------------------------------------------------------
    async def check(self, b: Backend) -> bool:
        """GET <url>/models: any answer below 500 means the server is up (a 401 too: it is there)."""
        try:
            async with self.session().get(b.ref.url + "/models", headers=b.headers(),
                                          timeout=aiohttp.ClientTimeout(total=max(self.connect_timeout, 1.0))) as r:
                await r.read()
                ok = r.status < 500
                reason = f"GET /models answered {r.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            ok, reason = False, _reason(exc)
        if ok:
            if b.healthy is False:
                log.info("upstream %s is up again", b.ref.url)
            b.healthy, b.last_error = True, ""
        else:
            b.down(reason)
        return ok

    async def _health_loop(self, p: Pool) -> None:
        while True:
            await asyncio.gather(*(self.check(b) for b in p.backends))
            await asyncio.sleep(self.health_interval)

    # --- requests -------------------------------------------------------------------------
    async def _open(self, p: Pool, name: str, path: str, body: dict[str, Any]) -> tuple[Backend, aiohttp.ClientResponse, float]:
        """Send to the least busy upstream; on a connection failure or a 502/503/504 (nothing generated
        yet) try the next one. All failing: 502 naming each upstream and why (503 if they all said so)."""
        failures: list[str] = []
        statuses: list[int] = []
        for b in p.order():
            b.outstanding += 1
            b.requests += 1
            t0 = time.perf_counter()
            try:
                resp = await self.session().post(b.ref.url + path, json=body | {"model": b.ref.model},
                                                 headers=b.headers())
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                b.outstanding -= 1
                b.errors += 1
                b.down(_reason(exc))
                failures.append(f"{b.ref.url} ({_reason(exc)})")
                continue
            if resp.status < 400:
                return b, resp, t0
            text = await resp.text(errors="replace")
            resp.release()
            b.outstanding -= 1
            b.errors += 1
            try:
                message = up.error_message(json.loads(text))
            except ValueError:
                message = text.strip()[:500] or resp.reason or ""
            if resp.status in RETRYABLE:
                failures.append(f"{b.ref.url} ({resp.status}: {message})")
                statuses.append(resp.status)
                continue
            raise _mapped(resp.status, name, b, message)
        status = 503 if statuses and all(s == 503 for s in statuses) and len(statuses) == len(failures) else 502
        raise UpstreamError(f"no upstream of model '{name}' could take the request: " + "; ".join(failures), status)

    async def stream(self, refs: list[UpstreamRef], name: str, path: str,
                     body: dict[str, Any]) -> AsyncIterator[tuple[dict[str, Any], float]]:
        """The upstream's SSE chunks (decoded), each with the seconds since the request was sent."""
        p = self.pool(refs, name)
        p.last_used = time.time()
        b, resp, t0 = await self._open(p, name, path, body)
        first = None
        ok = failed = False
        try:
            if not resp.content_type.startswith("text/event-stream"):  # a server that ignored stream:true
                try:
                    data = json.loads(await resp.read())
                except ValueError:
                    failed = True
                    raise UpstreamError(f"upstream {b.ref.url} of model '{name}' answered something other "
                                        f"than JSON or an event stream ({resp.content_type})") from None
                first = time.perf_counter() - t0
                yield data, first
            else:
                async for line in _lines(resp):
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        break
                    if first is None:
                        first = time.perf_counter() - t0
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise UpstreamError(f"upstream {b.ref.url} of model '{name}' sent invalid JSON: "
                                            f"{payload[:200]!r}") from None
                    yield chunk, time.perf_counter() - t0
            ok = True
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            failed = True
            raise UpstreamError(f"upstream {b.ref.url} of model '{name}' failed mid-reply: {_reason(exc)}") from None
        except UpstreamError:
            failed = True
            raise
        finally:
            resp.release()
            b.outstanding -= 1
            if ok:
                b.latency_sum += time.perf_counter() - t0
                b.latency_count += 1
                b.ttft_sum += first or 0.0
            elif failed:
                b.errors += 1

    async def serve(self, req: GenerateRequest | ChatRequest, m: Model, refs: list[UpstreamRef],
                    t0: float) -> AsyncIterator[dict[str, Any]]:
        """Core events for a chat or generate on a model served by upstream servers, with the model's
        SYSTEM, MESSAGEs and PARAMETERs applied here as for local weights."""
        name = m.name.display()
        opts = options.merge(m.params, req.options)  # only what was set: the upstream keeps its defaults
        is_chat = isinstance(req, ChatRequest)
        self.touch(refs, name, req.keep_alive)
        if (not req.messages) if is_chat else (not req.prompt and not req.context and not req.suffix):
            # a load request: nothing to load, an upstream is always there
            yield {"done": True, "done_reason": "unload" if req.keep_alive == 0 else "load",
                   "total_duration": int((time.perf_counter() - t0) * 1e9)}
            return
        if is_chat:
            path, body = "/chat/completions", up.chat_body(req, m.system, m.messages, opts)
        else:
            path, body = up.generate_body(req, m.system, m.messages, opts)
        async for ev in self.run(refs, name, path, body):
            if ev.get("done"):
                ev["load_duration"] = 0
                ev["total_duration"] = int((time.perf_counter() - t0) * 1e9)
            yield ev

    async def run(self, refs: list[UpstreamRef], name: str, path: str,
                  body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Core events for a chat (`/chat/completions`) or text (`/completions`) request."""
        reader = up.ChunkReader()
        ttft: float | None = None
        t = 0.0
        async with aclosing(self.stream(refs, name, path, body)) as chunks:  # the upstream freed at once
            async for chunk, t in chunks:
                try:
                    events = reader.feed(chunk)
                except up.UpstreamStreamError as exc:
                    raise UpstreamError(f"upstream of model '{name}' failed mid-reply: {exc}") from None
                if events and ttft is None:
                    ttft = t
                for ev in events:
                    yield ev
        for ev in reader.finish_events(ttft, t):
            yield ev

    async def embed(self, refs: list[UpstreamRef], name: str, inputs: list[str]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        async with aclosing(self.stream(refs, name, "/embeddings", {"input": inputs})) as chunks:
            async for chunk, _ in chunks:
                data = chunk
        rows = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        vectors = [r.get("embedding") for r in rows]
        if len(vectors) != len(inputs) or not all(isinstance(v, list) for v in vectors):
            raise UpstreamError(f"upstream of model '{name}' answered embeddings in an unexpected shape "
                                "(expected one float array per input)")
        return {"embeddings": vectors, "prompt_eval_count": int((data.get("usage") or {}).get("prompt_tokens") or 0)}

    # --- ps and metrics ---------------------------------------------------------------------
    def touch(self, refs: list[UpstreamRef], name: str, keep_alive: float | None) -> None:
        """Remember the model as in use (for ps) until its keep_alive passes; 0 forgets it."""
        p = self.pool(refs, name)
        ka = config.keep_alive_seconds() if keep_alive is None else keep_alive
        p.keep_until = time.time() + ka if ka >= 0 else float("inf")

    def in_use(self, name: str, refs: list[UpstreamRef]) -> Pool | None:
        p = self.pools.get((name, tuple(refs)))
        if p is None or (p.keep_until <= time.time() and not any(b.outstanding for b in p.backends)):
            return None
        return p

    def metrics(self) -> list[str]:
        lines = []
        for p in self.pools.values():
            for b in p.backends:
                label = f'model="{_esc(p.name)}",upstream="{_esc(b.ref.url)}"'
                lines += [f"ollamalike_upstream_requests_total{{{label}}} {b.requests}",
                          f"ollamalike_upstream_errors_total{{{label}}} {b.errors}",
                          f"ollamalike_upstream_in_flight{{{label}}} {b.outstanding}",
                          f"ollamalike_upstream_up{{{label}}} {0 if b.healthy is False else 1}",
                          f"ollamalike_upstream_request_seconds_sum{{{label}}} {b.latency_sum:.6f}",
                          f"ollamalike_upstream_request_seconds_count{{{label}}} {b.latency_count}",
                          f"ollamalike_upstream_first_byte_seconds_sum{{{label}}} {b.ttft_sum:.6f}"]
        return lines


def _mapped(status: int, name: str, b: Backend, message: str) -> UpstreamError:
    """An upstream's refusal in Ollama's shape: its own 4xx passes through (bad request, not found,
    too large, rate limited); a rejected key is the daemon's configuration problem, so a 502."""
    where = f"upstream {b.ref.url} of model '{name}'"
    if status in (401, 403):
        hint = f" (set {b.ref.api_key_env} in the daemon's environment)" if b.ref.api_key_env else \
            " (add api_key=$ENV_NAME to the model's FROM line)"
        return UpstreamError(f"{where} rejected the api key: {message}{hint}", 502)
    if status == 422:
        status = 400
    if status >= 500:
        return UpstreamError(f"{where} failed: {message}", 502)
    return UpstreamError(f"{where}: {message}", status)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    os_err = getattr(exc, "os_error", None)
    text = str(os_err.strerror if os_err is not None and os_err.strerror else exc) or type(exc).__name__
    return text.lower()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Lines of an SSE body, whatever its chunking."""
    buf = b""
    async for data in resp.content.iter_any():
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if buf:
        yield buf
