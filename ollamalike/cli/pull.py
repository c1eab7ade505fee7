"""`ollamalike pull`, and the auto-pull of `ollamalike run` when the model is missing (as Ollama does)."""

from __future__ import annotations

from typing import Any

from ollamalike.cli import ui
from ollamalike.client import Client, ResponseError


async def pull(client: Client, model: str) -> None:
    with ui.PullProgress() as progress:
        async for part in client.pull({"model": model}):
            progress.update(part)


async def show_or_pull(client: Client, model: str) -> dict[str, Any]:
    """The model's /api/show answer, pulling it first when the daemon does not have it."""
    try:
        return await client.show(model)
    except ResponseError as exc:
        if exc.status != 404:
            raise
    await pull(client, model)
    return await client.show(model)
