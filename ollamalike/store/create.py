"""Creating a model (/api/create): layers from uploaded blobs or an existing model, plus template,
system, params, license and messages layers; the manifest is written last, atomically."""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from ollamalike import options
from ollamalike import template as templates
from ollamalike.api import upstream as up
from ollamalike.api.types import CreateRequest
from ollamalike.errors import BadRequest, OllamaError
from ollamalike.names import Name
from ollamalike.store import manifests as mf
from ollamalike.store.gguf import FILE_TYPES, GGUFInfo, format_parameter_size, read_gguf
from ollamalike.store.manifests import ManifestStore

# Stop strings worth adding when an auto-detected template uses these turn markers.
TURN_ENDS = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>"]


def detect_stops(template: str | None, eos: str | None) -> list[str]:
    """Stop strings for a template: the turn markers it uses, and the EOS text."""
    stops = [t for t in TURN_ENDS if template and t in template]
    if eos and eos not in stops:
        stops.append(eos)
    return stops


# Quantization targets: llama.cpp's types that need no importance matrix, by Ollama's names (its
# general.file_type numbering, which is llama_ftype's); Q4_K means Q4_K_M, as in Ollama.
QUANTIZE_TYPES = {name: n for n, name in FILE_TYPES.items() if not name.startswith(("IQ", "TQ"))}
Quantize = Callable[[Path, int, str], Generator[dict[str, Any], None, tuple[str, int]]]
_SEMVER = re.compile(r"^v?(0|[1-9]\d*)(\.(0|[1-9]\d*))?(\.(0|[1-9]\d*))?(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def _vocab_size(path: Path) -> int:
    tokens = read_gguf(path, tensors=False).metadata.get("tokenizer.ggml.tokens")
    return len(tokens) if isinstance(tokens, list) else 0


def check_draft(store: ManifestStore, name: str, layers: list[dict[str, Any]]) -> str:
    """The DRAFT model's name as stored: an installed model with weights and the vocabulary of the
    model being created (the draft's tokens are verified by the model as they are)."""
    try:
        draft = store.load(name)
    except OllamaError:
        raise BadRequest(f"draft model '{name}' not found: DRAFT takes the name of an installed model "
                         f"(pull or create it first)") from None
    if draft.model_path is None:
        raise BadRequest(f"draft model '{name}' has no weights (an upstream model cannot draft)")
    check_draft_vocab(name, draft.model_path, layers, store)
    return draft.name.display()


def check_draft_vocab(name: str, path: Path, layers: list[dict[str, Any]], store: ManifestStore) -> None:
    """A 400 unless the draft GGUF at `path` has the vocabulary size of the model's weights."""
    weights = [x for x in layers if x["mediaType"] == mf.MODEL]
    if not weights:
        raise BadRequest("an upstream model cannot have a draft model: the model was not created")
    try:
        theirs = _vocab_size(path)
    except BadRequest as exc:
        raise BadRequest(f"draft model '{name}': {exc.message}") from None
    mine = _vocab_size(store.blobs.path(weights[0]["digest"]))
    if mine != theirs:
        raise BadRequest(f"draft model '{name}' has a vocabulary of {theirs} tokens, the model has {mine}: "
                         f"a draft model must share the model's vocabulary")


def quantize_type(name: str) -> str:
    """Ollama's name of a quantization target (case-insensitive); 400 listing the supported ones."""
    upper = name.strip().upper()
    upper = "Q4_K_M" if upper == "Q4_K" else upper
    if upper not in QUANTIZE_TYPES:
        raise BadRequest(f"unsupported quantization type {upper} - supported types are "
                         + ", ".join(QUANTIZE_TYPES))
    return upper


def check_requires(value: str) -> str:
    """REQUIRES as Ollama stores it: a semantic version, without a leading v."""
    if not _SEMVER.match(value.strip()):
        raise BadRequest("requires must be a valid semver (e.g. 0.14.0)")
    return value.strip().removeprefix("v")


def version_tuple(version: str) -> tuple[int, int, int, int]:
    """(major, minor, patch, release) for comparing versions; a pre-release sorts before its release."""
    m = _SEMVER.match(version.strip())
    if not m:
        return (0, 0, 0, 0)
    return (int(m.group(1)), int(m.group(3) or 0), int(m.group(5) or 0), 0 if m.group(6) else 1)


def _status(text: str) -> dict[str, Any]:
    return {"status": text}


def create_model(store: ManifestStore, req: CreateRequest,
                 quantizer: Quantize | None = None) -> Iterator[dict[str, Any]]:
    """Yield Ollama's create statuses; raise BadRequest/NotFound before anything is written.
    `quantizer(source, llama_ftype, status)` does a `quantize`: a generator of progress statuses
    returning the new weights' (digest, size), already stored."""
    name = Name.parse(req.model)
    layers: list[dict[str, Any]] = []
    config: dict[str, Any] = {"model_format": "gguf", "architecture": _arch(), "os": platform.system().lower()}
    base_template = base_system = None
    base_params: dict[str, Any] = {}
    base_messages: list[dict[str, Any]] = []
    base_licenses: list[str] = []
    base_requires: str | None = None
    base_draft: str | None = None
    draft_given = bool(req.draft)
    detected_template: str | None = None
    detected_stops: list[str] = []
    base_info: GGUFInfo | None = None
    refs = [up.parse_ref(r) for r in (req.upstreams or [])] + (
        [up.parse_ref(req.from_)] if up.is_upstream(req.from_) else [])
    upstream_json: bytes | None = None

    if refs:
        if req.files or (req.from_ and not up.is_upstream(req.from_)):
            raise BadRequest("a model is either served by upstream servers or made from weights or a model, not both")
        if len(set(refs)) != len(refs):
            raise BadRequest("the same upstream is listed twice")
        config.update(model_format="upstream", model_family="", remote_host=refs[0].url,
                      remote_model=refs[0].model)
        upstream_json = json.dumps({"upstreams": [r.to_json() for r in refs]}).encode()
        yield _status(f"using upstream {', '.join(r.url for r in refs)}")
    elif req.files:
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
            if base_info is not None:  # a later split: its tensors count for the adapter checks
                base_info.tensors.extend(info.tensors)
            if "model_family" not in config:
                base_info = info
                arch = info.architecture or "unknown"
                config.update(model_family=arch, model_families=[arch],
                              model_type=format_parameter_size(info.parameter_count()),
                              file_type=info.file_type_name())
                detected_template = info.chat_template()
                detected_stops = detect_stops(detected_template, info.eos_text())
                if info.has_pooling():
                    config["pooling"] = True
                if info.is_reranker():
                    config["rerank"] = True
        if not any(x["mediaType"] == mf.MODEL for x in layers) and not req.from_:
            raise BadRequest("a vision projector needs a model: give the model GGUF too (its first FROM line)")
    if not refs and req.from_ and not any(x["mediaType"] == mf.MODEL for x in layers):
        yield _status("reading model metadata")
        base = store.load(req.from_)
        projector_given = any(x["mediaType"] == mf.PROJECTOR for x in layers)
        for lay in base.manifest.get("layers", []):
            if lay.get("mediaType") == mf.PROJECTOR and projector_given:
                continue  # the new projector replaces the base model's
            if lay.get("mediaType") == mf.DRAFT and not draft_given:
                layers.append(dict(lay))  # the base model's draft, unless a new one is given
                continue
            if lay.get("mediaType") in (mf.MODEL, mf.ADAPTER, mf.PROJECTOR, mf.UPSTREAM):
                layers.append(dict(lay))
                yield _status(f"using existing layer {lay['digest']}")
        config.update({k: v for k, v in base.config.items() if k in (
            "model_family", "model_families", "model_type", "file_type", "pooling", "rerank", "model_format",
            "remote_host", "remote_model")})
        base_template, base_system, base_params = base.template, base.system, dict(base.params)
        base_messages, base_licenses = list(base.messages), list(base.licenses)
        base_requires = base.config.get("requires")
        base_draft = base.config.get("draft")
        if req.adapters and base.model_path is not None:
            base_info = read_gguf(base.model_path, tensors=True)
            for split in base.model_paths[1:]:
                base_info.tensors.extend(read_gguf(split, tensors=True).tensors)
    elif not refs and not req.files:
        raise BadRequest("neither 'from' or 'files' was specified")

    if config.get("model_format") == "upstream":
        if req.template:  # the upstream server renders its own chat template
            raise BadRequest("TEMPLATE has no effect on an upstream model: the upstream server applies its own "
                             "chat template (the model was not created)")
        if req.adapters:
            raise BadRequest("an upstream model has no weights for a LoRA adapter: the model was not created")
        if req.quantize:
            raise BadRequest("an upstream model has no weights to quantize: the model was not created")
        up.upstream_options(_typed(req.parameters), req.model)  # a parameter without effect is a 400

    for filename, digest in (req.adapters or {}).items():
        path = store.blobs.require(digest)
        try:
            adapter = read_gguf(path, tensors=True)
        except BadRequest as exc:
            raise BadRequest(f"adapter '{filename}': {exc.message}") from None
        check_adapter(filename, adapter, base_info)
        digest = "sha256:" + path.name.split("-", 1)[1]
        yield _status(f"using existing layer {digest}")
        layers.append(mf.layer(mf.ADAPTER, digest, path.stat().st_size))
    target = quantize_type(req.quantize) if req.quantize else None
    source_type = str(config.get("file_type") or "").upper()
    if target is not None:
        if source_type not in ("F16", "F32", "BF16"):
            raise BadRequest("quantization is only supported for F16, BF16 and F32 models")
        if len([x for x in layers if x["mediaType"] == mf.MODEL]) != 1:
            raise BadRequest("quantizing a split GGUF is not supported: the model was not created "
                             "(merge it with llama-gguf-split first)")
        if quantizer is None:
            raise BadRequest("quantizing is not available here: the model was not created")
    if req.requires is not None:
        config["requires"] = check_requires(req.requires)
    elif req.from_ and base_requires:
        config["requires"] = base_requires
    if isinstance(req.draft, dict):
        if len(req.draft) != 1:
            raise BadRequest("draft takes one GGUF file: {filename: digest}")
        (filename, digest), = req.draft.items()
        path = store.blobs.require(digest)
        check_draft_vocab(filename, path, layers, store)
        layers.append(mf.layer(mf.DRAFT, "sha256:" + path.name.split("-", 1)[1], path.stat().st_size))
    elif req.draft:
        config["draft"] = check_draft(store, req.draft, layers)
    elif req.from_ and base_draft:
        config["draft"] = base_draft

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

    if target is not None and quantizer is not None:
        i = next(i for i, x in enumerate(layers) if x["mediaType"] == mf.MODEL)
        source = store.blobs.require(layers[i]["digest"])
        status = f"quantizing {source_type} model to {target}"  # Ollama's words
        digest, size = yield from quantizer(source, QUANTIZE_TYPES[target], status)
        yield _status("verifying conversion")
        made = read_gguf(store.blobs.require(digest)).file_type_name()
        if made != target:
            store.drop_unused({digest})
            raise OllamaError(f"quantizing to {target} produced {made} weights: the model was not created")
        layers[i] = mf.layer(mf.MODEL, digest, size)
        config["file_type"] = target

    def text_layer(media_type: str, data: bytes, label: str) -> Iterator[dict[str, Any]]:
        digest = store.blobs.write_bytes(data)
        yield _status(f"creating {label} layer")
        layers.append(mf.layer(media_type, digest, len(data)))

    if upstream_json is not None:
        yield from text_layer(mf.UPSTREAM, upstream_json, "upstream")
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


def check_adapter(filename: str, info: GGUFInfo, base: GGUFInfo | None) -> None:
    """Refuse an adapter llama.cpp would refuse at load time: not a LoRA GGUF, another architecture,
    tensors the base model lacks or of another shape (llama-adapter.cpp's checks)."""
    what = f"adapter '{filename}'"
    md = info.metadata
    if md.get("general.type") != "adapter" or md.get("adapter.type") != "lora":
        raise BadRequest(f"{what} is not a LoRA adapter GGUF (general.type 'adapter' and adapter.type 'lora' "
                         "expected): the model was not created")
    if base is None:
        raise BadRequest(f"{what} needs a base model with GGUF weights: the model was not created")
    if info.architecture != base.architecture:
        raise BadRequest(f"{what} is for the '{info.architecture}' architecture but the base model is "
                         f"'{base.architecture}': the model was not created")
    shapes = {t.name: t.shape for t in base.tensors}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for t in info.tensors:
        stem, _, part = t.name.rpartition(".")
        if part in ("lora_a", "lora_b"):
            pairs.setdefault(stem, {})[part] = t.shape
        elif not t.name.endswith("_norm.weight"):  # llama.cpp skips norms, refuses anything else
            raise BadRequest(f"{what} has an unexpected tensor '{t.name}': the model was not created")
    if not pairs:
        raise BadRequest(f"{what} has no LoRA tensors: the model was not created")
    for stem, ab in sorted(pairs.items()):
        if len(ab) != 2:
            raise BadRequest(f"{what}: tensor '{stem}' lacks its lora_a or lora_b: the model was not created")
        if stem not in shapes:
            raise BadRequest(f"{what}: tensor '{stem}' is not in the base model: the model was not created")
        w, a, b = shapes[stem], ab["lora_a"], ab["lora_b"]
        if len(w) < 2 or len(a) < 2 or len(b) < 2:
            ok = False
        elif stem.endswith("token_embd.weight"):  # A and B swapped for the embeddings (llama.cpp)
            ok = w[0] == b[1] and w[1] == a[1]
        else:
            ok = w[0] == a[0] and w[1] == b[1] and a[1] == b[0]
        if not ok:
            raise BadRequest(f"{what}: tensor '{stem}' has shape a{list(a)} b{list(b)}, which does not fit the "
                             f"base model's {list(w)}: the model was not created")


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
