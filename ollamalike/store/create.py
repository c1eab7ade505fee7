"""Creating a model (/api/create): layers from uploaded blobs or an existing model, plus template,
system, params, license and messages layers; the manifest is written last, atomically."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from typing import Any

from ollamalike import options
from ollamalike import template as templates
from ollamalike.api.types import CreateRequest
from ollamalike.errors import BadRequest
from ollamalike.names import Name
from ollamalike.store import manifests as mf
from ollamalike.store.gguf import format_parameter_size, read_gguf
from ollamalike.store.manifests import ManifestStore

# Stop strings worth adding when an auto-detected template uses these turn markers.
TURN_ENDS = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>"]


def detect_stops(template: str | None, eos: str | None) -> list[str]:
    """Stop strings for a template: the turn markers it uses, and the EOS text."""
    stops = [t for t in TURN_ENDS if template and t in template]
    if eos and eos not in stops:
        stops.append(eos)
    return stops


def _status(text: str) -> dict[str, Any]:
    return {"status": text}


def create_model(store: ManifestStore, req: CreateRequest) -> Iterator[dict[str, Any]]:
    """Yield Ollama's create statuses; raise BadRequest/NotFound before anything is written."""
    name = Name.parse(req.model)
    layers: list[dict[str, Any]] = []
    config: dict[str, Any] = {"model_format": "gguf", "architecture": _arch(), "os": platform.system().lower()}
    base_template = base_system = None
    base_params: dict[str, Any] = {}
    base_messages: list[dict[str, Any]] = []
    base_licenses: list[str] = []
    detected_template: str | None = None
    detected_stops: list[str] = []

    if req.files:
        yield _status("parsing GGUF")
        for filename, digest in req.files.items():
            path = store.blobs.require(digest)
            info = read_gguf(path, tensors=True)
            size = path.stat().st_size
            digest = "sha256:" + path.name.split("-", 1)[1]
            yield _status(f"using existing layer {digest}")
            if info.architecture == "clip":  # a vision projector (mmproj), as Ollama's create detects it
                if any(x["mediaType"] == mf.PROJECTOR for x in layers):
                    raise BadRequest("only one vision projector per model is supported")
                layers.append(mf.layer(mf.PROJECTOR, digest, size))
                continue
            layers.append(mf.layer(mf.MODEL, digest, size))
            if "model_family" not in config:
                arch = info.architecture or "unknown"
                config.update(model_family=arch, model_families=[arch],
                              model_type=format_parameter_size(info.parameter_count()),
                              file_type=info.file_type_name())
                detected_template = info.chat_template()
                detected_stops = detect_stops(detected_template, info.eos_text())
                if info.has_pooling():
                    config["pooling"] = True
        if not any(x["mediaType"] == mf.MODEL for x in layers) and not req.from_:
            raise BadRequest("a vision projector needs a model: give the model GGUF too (its first FROM line)")
    if req.from_ and not any(x["mediaType"] == mf.MODEL for x in layers):
        yield _status("reading model metadata")
        base = store.load(req.from_)
        projector_given = any(x["mediaType"] == mf.PROJECTOR for x in layers)
        for lay in base.manifest.get("layers", []):
            if lay.get("mediaType") == mf.PROJECTOR and projector_given:
                continue  # the new projector replaces the base model's
            if lay.get("mediaType") in (mf.MODEL, mf.ADAPTER, mf.PROJECTOR):
                layers.append(dict(lay))
                yield _status(f"using existing layer {lay['digest']}")
        config.update({k: v for k, v in base.config.items() if k in (
            "model_family", "model_families", "model_type", "file_type", "pooling")})
        base_template, base_system, base_params = base.template, base.system, dict(base.params)
        base_messages, base_licenses = list(base.messages), list(base.licenses)
    elif not req.files:
        raise BadRequest("neither 'from' or 'files' was specified")

    if req.adapters or any(x.get("mediaType") == mf.ADAPTER for x in layers):
        # accepted, it would be ignored: the runner does not load LoRA adapters yet
        raise BadRequest("ADAPTER (LoRA) is not supported yet by this daemon: the model was not created")
    if req.quantize:
        kind = str(config.get("file_type") or "").upper()
        if kind not in ("F16", "F32", "BF16"):
            raise BadRequest("quantization is only supported for F16 and F32 models")
        raise BadRequest(f"quantizing to {req.quantize} is not supported yet by this daemon: the model was not "
                         "created (create it from an already quantized GGUF)")

    template = req.template if req.template is not None else base_template or detected_template
    if req.template:  # a template that cannot render fails the create, as in Ollama
        try:
            templates.check(req.template)
        except templates.TemplateError as exc:
            raise BadRequest(f"template error: {exc}") from None
    params = dict(base_params)
    if req.template is None and base_template is None and detected_template:
        yield _status("using autodetected template")
        if detected_stops and "stop" not in params:
            params["stop"] = detected_stops
    params = options.merge(params, _typed(req.parameters))
    system = req.system if req.system is not None else base_system
    messages = [m.model_dump(exclude_none=True) for m in req.messages] if req.messages is not None \
        else base_messages
    licenses = base_licenses + ([req.license] if isinstance(req.license, str) else list(req.license or []))

    def text_layer(media_type: str, data: bytes, label: str) -> Iterator[dict[str, Any]]:
        digest = store.blobs.write_bytes(data)
        yield _status(f"creating {label} layer")
        layers.append(mf.layer(media_type, digest, len(data)))

    if template:
        yield from text_layer(mf.TEMPLATE, template.encode(), "template")
    if system:
        yield from text_layer(mf.SYSTEM, system.encode(), "system")
    for text in licenses:
        yield from text_layer(mf.LICENSE, text.encode(), "license")
    if params:
        yield from text_layer(mf.PARAMS, json.dumps(params).encode(), "parameters")
    if messages:
        yield from text_layer(mf.MESSAGES, json.dumps(messages).encode(), "messages")

    config["rootfs"] = {"type": "layers", "diff_ids": [x["digest"] for x in layers]}
    cfg = json.dumps(config).encode()
    cfg_digest = store.blobs.write_bytes(cfg)
    yield _status("writing manifest")
    store.write(name, mf.new_manifest(mf.layer(mf.CONFIG_V1, cfg_digest, len(cfg)), layers))
    yield _status("success")


def _typed(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Request parameters may be JSON-typed or Modelfile strings; both end up typed."""
    out: dict[str, Any] = {}
    for key, value in (parameters or {}).items():
        if isinstance(value, str) and key in options.OPTIONS and options.OPTIONS[key][0] != options.STRINGS:
            value = options.parse_parameter(key, value)
        elif isinstance(value, list) and key in options.OPTIONS and options.OPTIONS[key][0] != options.STRINGS:
            value = options.parse_parameter(key, str(value[-1])) if value else None
        out[key] = value
    return out


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
