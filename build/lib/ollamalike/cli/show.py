"""`ollamalike show`: Ollama's tables, or one raw field."""

from __future__ import annotations

from ollamalike.cli import ui
from ollamalike.client import Client


async def show(client: Client, model: str, field: str | None) -> None:
    info = await client.show(model)
    if field:
        print(info.get(field) or "")
        return
    d = info.get("details") or {}
    mi = info.get("model_info") or {}
    arch = mi.get("general.architecture", d.get("family", ""))
    rows = [("architecture", arch), ("parameters", d.get("parameter_size", ""))]
    for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
        if f"{arch}.{key}" in mi:
            rows.append((label, str(mi[f"{arch}.{key}"])))
    rows.append(("quantization", d.get("quantization_level", "")))
    print()
    ui.section("Model", rows)
    if info.get("capabilities"):
        ui.section("Capabilities", [(c, "") for c in info["capabilities"]])
    params = [line.split(None, 1) for line in (info.get("parameters") or "").splitlines() if line.strip()]
    if params:
        ui.section("Parameters", [(p[0], p[1] if len(p) > 1 else "") for p in params])
    if info.get("system"):
        ui.section("System", [(line, "") for line in info["system"].splitlines()[:2]])
    if info.get("license"):
        ui.section("License", [(line, "") for line in info["license"].strip().splitlines()[:2]])
