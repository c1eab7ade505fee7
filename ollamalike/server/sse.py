"""Server-sent events with named events (`event: name` + `data: {json}`), as Anthropic's Messages and
OpenAI's Responses streams are sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from ollamalike.errors import OllamaError
from ollamalike.runner import protocol

Named = tuple[str, dict[str, Any]]


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + protocol.dumps(data) + b"\n\n"


async def stream_named(request: web.Request, events: AsyncIterator[dict[str, Any]],
                       convert: Callable[[dict[str, Any]], list[Named]],
                       error: Callable[[OllamaError], Named]) -> web.StreamResponse:
    """Convert Core events to named SSE events. The first Core event is awaited before the status goes
    out, so an early failure (unknown model, bad request) keeps its HTTP status and error body; a later
    one becomes the `error(exc)` event."""
    it = events.__aiter__()
    try:
        first: dict[str, Any] | None = await it.__anext__()
    except StopAsyncIteration:
        first = None
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        if first is not None:
            for name, data in convert(first):
                await resp.write(event(name, data))
            async for ev in it:
                for name, data in convert(ev):
                    await resp.write(event(name, data))
    except OllamaError as exc:
        await resp.write(event(*error(exc)))
    await resp.write_eof()
    return resp
