"""Who may talk to the daemon: CORS origins, the Host check against DNS rebinding, optional API keys.

As Ollama does it: browser origins on localhost and the app/file/tauri/vscode-webview schemes are
allowed, more through OLLAMALIKE_ORIGINS; while bound to loopback a request whose Host header is not a
local name or address gets 403. OLLAMALIKE_API_KEYS (off by default) requires `Authorization: Bearer` (or Anthropic's `x-api-key`).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from ollamalike import config
from ollamalike.errors import OllamaError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_ORIGINS = [f"{scheme}://{host}{port}" for host in ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")
                   for scheme in ("http", "https") for port in ("", ":*")] + [
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
ALLOW_HEADERS = ("Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, x-api-key, "
                 "anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access, "
                 "x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, "
                 "x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-poll-helper, "
                 "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout")
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


CORS = web.RequestKey("cors", dict) if hasattr(web, "RequestKey") else "ollamalike.cors"


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Response-prepare hook: the CORS headers of an allowed cross-origin request."""
    response.headers.update(request.get(CORS) or {})


class Unauthorized(OllamaError):
    status = 401


def _wildcard(pattern: str) -> re.Pattern[str]:
    """Only `*` is special in an origin pattern (as in Ollama's); `[::1]` is a literal address."""
    return re.compile(".*".join(map(re.escape, pattern.lower().split("*"))))


def origin_allowed(origin: str, extra: list[str]) -> bool:
    return any(_wildcard(pat).fullmatch(origin.lower()) for pat in extra + DEFAULT_ORIGINS)


def _is_loopback_bind(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(header: str) -> bool:
    """Ollama's allowedHost: local names and loopback/private/link-local/unspecified addresses."""
    if not header:
        return True
    host = header
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local
    except ValueError:
        pass
    if host in ("localhost", socket.gethostname().lower()):
        return True
    return host.endswith((".localhost", ".local", ".internal"))


def middlewares(bind_host: str | None = None) -> list:
    """The access middlewares, configured from the environment once, when the app is built."""
    origins = config.origins()
    keys = config.api_keys()
    check_host = _is_loopback_bind(config.host().host if bind_host is None else bind_host)

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if check_host and not host_allowed(request.host):
            return web.Response(status=403)
        origin = request.headers.get("Origin")
        cors: dict[str, str] = {}
        if origin:
            if not origin_allowed(origin, origins):
                return web.Response(status=403)
            cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return web.Response(status=204, headers=cors | {
                    "Access-Control-Allow-Methods": ALLOW_METHODS, "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": "43200"})
        request[CORS] = cors  # added by `on_prepare`, which also reaches streamed responses
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if keys and request.path not in ("/", "/api/version"):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":  # Anthropic's clients send the key as x-api-key
                token = request.headers.get("x-api-key", "")
            given = token.strip().encode("utf-8", "surrogateescape")  # any bytes, never a 500
            if not given or not any(hmac.compare_digest(given, k.encode()) for k in keys):
                raise Unauthorized("unauthorized: a valid API key is required "
                                   "(Authorization: Bearer <key>, or x-api-key: <key>)")
        return await handler(request)

    return [access, auth]
