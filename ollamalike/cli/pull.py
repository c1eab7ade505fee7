"""`ollamalike pull`, and the auto-pull of `ollamalike run` when the model is missing (as Ollama does)."""

from __future__ import annotations

from typing import Any

from ollamalike.cli import ui
from ollamalike.client import Client, ResponseError

INSECURE_NOTE = ("note: --insecure changes nothing here: models come from the Hugging Face Hub over HTTPS, "
                 "or from OLLAMALIKE_HF_MIRROR (which may be a plain http:// server) when that is set")


async def pull(client: Client, model: str, insecure: bool = False) -> None:
    body: dict[str, Any] = {"model": model}
    if insecure:  # Ollama's meaning (a plain-http or self-signed registry) has no counterpart here
        ui.status(INSECURE_NOTE)
        body["insecure"] = True
    with ui.PullProgress() as progress:
        async for part in client.pull(body):
            progress.update(part)


async def show_or_pull(client: Client, model: str, insecure: bool = False) -> dict[str, Any]:
    """The model's /api/show answer, pulling it first when the daemon does not have it."""
    try:
        return await client.show(model)
    except ResponseError as exc:
        if exc.status != 404:
            raise
    await pull(client, model, insecure)
    return await client.show(model)
