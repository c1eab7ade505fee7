"""`ollamalike create -f Modelfile`: parse the Modelfile here, upload local weights as blobs,
then ask the daemon to create the model."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from ollamalike import options
from ollamalike.cli import ui
from ollamalike.client import Client
from ollamalike.errors import BadRequest, OllamaError
from ollamalike.modelfile import parse_modelfile


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _local_files(ref: str, base: Path) -> list[Path] | None:
    """The files a FROM/ADAPTER line names, or None when it names a model instead."""
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        if not files:
            raise BadRequest(f"no .gguf files found in {path}")
        return files
    if path.is_file():
        return [path]
    if ref.startswith((".", "/", "~")) or ref.endswith(".gguf"):
        raise BadRequest(f"no such file: {path}")
    return None


async def _upload(client: Client, files: list[Path]) -> dict[str, str]:
    out = {}
    for path in files:
        with ui.spinner(f"gathering model components: hashing {path.name}"):
            digest = await asyncio.to_thread(_sha256, path)
        if not await client.blob_exists(digest):
            with ui.spinner(f"copying file {digest}"):
                await client.upload_blob(digest, path)
        ui.status(f"copying file {digest} 100%")
        out[path.name] = digest
    return out


async def create(client: Client, model: str, modelfile: Path, quantize: str | None = None) -> None:
    if not modelfile.is_file():
        raise BadRequest(f"no Modelfile found at {modelfile}")
    mf = parse_modelfile(modelfile.read_text(encoding="utf-8-sig"))
    base = modelfile.resolve().parent
    body: dict = {"model": model}
    files = None if mf.upstreams else _local_files(mf.from_, base)
    if mf.upstreams:  # served by OpenAI-compatible servers: the daemon stores the references
        body["upstreams"] = mf.upstreams
    elif files is None:
        body["from"] = mf.from_
    else:
        body["files"] = await _upload(client, files)
    for ref in mf.more_from:  # a second FROM: the projector GGUF of a vision model, as Ollama's create
        more = _local_files(ref, base)
        if more is None:
            raise BadRequest(f"FROM {ref}: a further FROM line must name a GGUF file (a vision projector)")
        body["files"] = {**body.get("files", {}), **await _upload(client, more)}
    adapters: dict[str, str] = {}
    for ref in mf.adapters:
        paths = _local_files(ref, base)
        if paths is None:  # not a model name: an adapter is always a file
            raise BadRequest(f"adapter '{ref}' not found: ADAPTER takes the path of a LoRA adapter GGUF")
        for name, digest in (await _upload(client, paths)).items():
            adapters[name if name not in adapters else f"{len(adapters)}-{name}"] = digest
    if adapters:
        body["adapters"] = adapters
    if mf.template is not None:
        body["template"] = mf.template
    if mf.system is not None:
        body["system"] = mf.system
    if mf.licenses:
        body["license"] = mf.licenses
    if mf.parameters:
        body["parameters"] = options.parameters_to_dict(mf.parameters)
    if mf.messages:
        body["messages"] = mf.messages
    if mf.requires:
        body["requires"] = mf.requires
    if mf.draft:  # a GGUF file is uploaded; otherwise it names an installed model
        files = _local_files(mf.draft, base)
        if files is not None and len(files) != 1:
            raise BadRequest(f"DRAFT {mf.draft}: a draft model must be one GGUF file")
        body["draft"] = mf.draft if files is None else await _upload(client, files)
    if quantize:
        body["quantize"] = quantize
    last = None
    async for part in client.create(body):
        text = part.get("status", "")
        if part.get("total"):  # quantizing: its first and last progress, as "status NN%"
            pct = int(part.get("completed") or 0) * 100 // int(part["total"])
            if text != last or pct == 100:
                ui.status(f"{text} {pct}%")
        else:
            ui.status(text)
        last = text
    if quantize:  # never claim a quantization the daemon did not do
        level = ((await client.show(model)).get("details") or {}).get("quantization_level", "")
        if level.upper() != {"Q4_K": "Q4_K_M"}.get(quantize.upper(), quantize.upper()):
            raise OllamaError(f"model '{model}' was created but not quantized to {quantize}: its weights are "
                              f"{level or 'of an unknown type'} (this daemon ignored the quantize request)")
