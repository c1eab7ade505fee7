"""One implementation of each operation; native and OpenAI routes are thin converters around it."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ollamalike import __version__, config, images, options
from ollamalike.api import upstream as up
from ollamalike.api.types import ChatRequest, CreateRequest, GenerateRequest
from ollamalike.errors import BadRequest, OllamaError, PreconditionFailed, RunnerError
from ollamalike.hub.pull import Puller
from ollamalike.names import Name
from ollamalike.runner.process import RunnerSpec
from ollamalike.server import prompt as prompts
from ollamalike.server import tools
from ollamalike.server.memory import auto_kv_size, auto_parallel
from ollamalike.server.create import run_create
from ollamalike.server.scheduler import Scheduler
from ollamalike.server.upstream import Upstreams
from ollamalike.store.create import version_tuple
from ollamalike.store.gguf import GGML_TYPES, GGUFInfo, read_gguf
from ollamalike.store.manifests import ManifestStore, Model
from ollamalike.modelfile import Modelfile

log = logging.getLogger(__name__)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(ts: datetime | float) -> str:
    if isinstance(ts, (int, float)):
        try:
            ts = datetime.fromtimestamp(ts, timezone.utc)
        except (OverflowError, OSError, ValueError):  # forever, or past what a timestamp holds
            ts = datetime(2318, 1, 1, tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=64)
def _gguf(path: str, mtime: float) -> GGUFInfo:
    return read_gguf(path, tensors=True)


def gguf_info(model: Model) -> GGUFInfo | None:
    if model.model_path is None or not model.model_path.is_file():
        return None
    return _gguf(str(model.model_path), model.model_path.stat().st_mtime)


def normalize(vector: list[float], dimensions: int | None = None) -> list[float]:
    """L2-normalise, after truncating to `dimensions` when given (as /api/embed does)."""
    if dimensions:
        vector = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def adapter_info(model: Model) -> list[dict[str, Any]]:
    """What show says of each LoRA adapter: its digest, size and header facts."""
    out = []
    for path in model.adapters:
        entry: dict[str, Any] = {"digest": "sha256:" + path.name.split("-", 1)[-1],
                                 "size": path.stat().st_size if path.is_file() else 0, "type": "lora"}
        try:
            info = _gguf(str(path), path.stat().st_mtime)
        except (OSError, OllamaError):  # missing or unreadable: show says what it can
            info = None
        if info is not None:
            entry["architecture"] = info.architecture or ""
            alpha = info.metadata.get("adapter.lora.alpha")
            if isinstance(alpha, (int, float)):
                entry["alpha"] = alpha
            ranks = {t.shape[1] for t in info.tensors if t.name.endswith(".lora_a") and len(t.shape) > 1}
            if len(ranks) == 1:
                entry["rank"] = ranks.pop()
        out.append(entry)
    return out


def check_requires(model: Model) -> None:
    """A model whose REQUIRES names a newer Ollama than the one this daemon reports (/api/version)
    is refused with Ollama's words rather than run wrongly."""
    need = model.config.get("requires")
    if isinstance(need, str) and need and version_tuple(need) > version_tuple(__version__):
        raise PreconditionFailed(f"model '{model.name.display()}' requires a newer version of Ollama: it requires "
                                 f"{need}, this server is version {__version__} (upgrade ollamalike to run it)")


def _projector_info(m: Model, verbose: bool) -> dict[str, Any]:
    path = m.projectors[0]
    if not path.is_file():
        return {}
    return _gguf(str(path), path.stat().st_mtime).model_info(verbose=verbose)


def details(model: Model) -> dict[str, Any]:
    cfg = model.config
    family = cfg.get("model_family", "")
    return {
        "parent_model": "",
        "format": cfg.get("model_format", "gguf"),
        "family": family,
        "families": cfg.get("model_families") or ([family] if family else None),
        "parameter_size": cfg.get("model_type", ""),
        "quantization_level": cfg.get("file_type", ""),
    }


def refs(model: Model) -> list[up.UpstreamRef]:
    """The upstream servers of a model served by them (empty for a model with weights)."""
    return [up.UpstreamRef.from_json(u) for u in model.upstreams]


def no_weights(model: Model, what: str) -> BadRequest:
    if model.upstreams:
        return BadRequest(f"model '{model.name.display()}' is served by upstream servers "
                          f"({', '.join(r.url for r in refs(model))}): {what} needs local weights")
    return BadRequest(f"model '{model.name.display()}' has no weights")


def capabilities(model: Model) -> list[str]:
    if model.config.get("rerank"):  # a cross-encoder: scores query/document pairs, nothing else
        return ["rerank"]
    if model.upstreams:  # what the upstream serves is its own business; /api/embed is passed on too
        return ["completion", "tools"]
    caps = ["embedding"] if model.config.get("pooling") else ["completion"]
    template = model.template or ""
    # a template without a tools section still gets tools: they are taught in a Hermes-style system
    # prompt and the calls parsed from the reply (server/tools.py), so say so to clients that ask
    if "completion" in caps:
        caps.append("tools")
    if model.projectors and "completion" in caps:
        caps.append("vision")
    go_caps = prompts.go_capabilities(template) if template else None
    if go_caps is not None:  # Ollama's reading of a Go template: .Suffix, think tags
        return caps + [c for c in go_caps if c not in caps]
    if ".Suffix" in template or "suffix" in template:
        caps.append("insert")
    if "<think>" in template:
        caps.append("thinking")
    return caps


def _remote(m: Model) -> dict[str, Any]:
    """Ollama's fields for a model served elsewhere (its cloud models): the first upstream."""
    r = refs(m)
    return {"remote_model": r[0].model, "remote_host": r[0].url} if r else {}


class Core:
    def __init__(self, store: ManifestStore, scheduler: Scheduler, *, parallel: int = 0,
                 puller: Puller | None = None, default_num_ctx: Callable[[], int] = lambda: 4096,
                 upstreams: Upstreams | None = None):
        self.store = store
        self._default_num_ctx = default_num_ctx  # when OLLAMALIKE_CONTEXT_LENGTH is unset
        self._auto_ctx: int | None = None
        self.scheduler = scheduler
        self.parallel = parallel or config.num_parallel()  # 0 = chosen per model from memory
        self.puller = puller or Puller(store)
        self.upstreams = upstreams or Upstreams()

    def default_num_ctx(self) -> int:
        """The daemon's own default context length (from GPU memory, asked once)."""
        if self._auto_ctx is None:
            self._auto_ctx = self._default_num_ctx()
            log.info("default context length: %d", self._auto_ctx)
        return self._auto_ctx

    # --- models -------------------------------------------------------------------------
    def model(self, name: str) -> Model:
        Name.parse(name)  # 400 on an invalid name before any lookup
        return self.store.load(name)

    def list_models(self) -> list[dict[str, Any]]:
        out = []
        for m in sorted(self.store.list(), key=lambda m: m.modified_at, reverse=True):
            out.append({"name": m.name.display(), "model": m.name.display(),
                        "modified_at": rfc3339(m.modified_at), "size": m.size, "digest": m.digest,
                        "details": details(m), **_remote(m)})
        return out

    def show(self, name: str, verbose: bool = False) -> dict[str, Any]:
        m = self.model(name)
        info = gguf_info(m)
        froms = [r.modelfile() for r in refs(m)]
        mf = Modelfile(from_=froms[0] if froms else str(m.model_path or ""), froms=froms if len(froms) > 1 else [], parameters=[
            (k, options.format_value(v)) for k, vs in m.params.items() for v in (vs if isinstance(vs, list) else [vs])],
            template=m.template, system=m.system, licenses=list(m.licenses), messages=list(m.messages),
            adapters=[str(p) for p in m.adapters], requires=m.config.get("requires"),
            draft=str(m.draft_path) if m.draft_path else m.config.get("draft"))
        header = ('# Modelfile generated by "ollamalike show"\n'
                  "# To build a new Modelfile based on this, replace FROM with:\n"
                  f"# FROM {m.name.display()}\n\n")
        return {
            "license": "\n".join(m.licenses),
            "modelfile": header + mf.to_text(),
            "parameters": options.format_parameters(m.params),
            "template": m.template or "",
            "system": m.system or "",
            "details": details(m),
            "messages": m.messages or None,
            "model_info": info.model_info(verbose=verbose) if info else {},
            **({"projector_info": _projector_info(m, verbose)} if m.projectors else {}),
            "capabilities": capabilities(m),
            "modified_at": rfc3339(m.modified_at), **_remote(m),
            **({"upstreams": [r.to_json() for r in refs(m)]} if m.upstreams else {}),
            **({"requires": m.config["requires"]} if m.config.get("requires") else {}),
            **({"draft": str(m.draft_path) if m.draft_path else m.config["draft"]}
               if m.draft_path or m.config.get("draft") else {}),
            **({"adapters": adapter_info(m)} if m.adapters else {}),
            **({"tensors": [{"name": t.name, "type": GGML_TYPES.get(t.ggml_type, str(t.ggml_type)),
                             "shape": list(t.shape)} for t in info.tensors]} if verbose and info else {}),
        }

    def copy(self, source: str, destination: str) -> None:
        Name.parse(destination)
        self.store.copy(source, destination)

    async def delete(self, name: str) -> None:
        m = self.model(name)
        self.store.delete(name)
        # runners are per weights file: a copy (or another tag) still using them keeps it loaded
        if m.model_digest is not None and m.model_digest not in self.store.referenced():
            await self.scheduler.unload_model(str(m.model_path))

    def create(self, req: CreateRequest) -> AsyncIterator[dict[str, Any]]:
        """Ollama's create statuses; a bad request fails before the first one (server/create.py)."""
        return run_create(self.store, req)

    async def pull(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """Ollama's pull statuses; an unknown name fails at the first step, before any status."""
        found = self.store.find(name)
        if found is not None:
            m = self.store.load(found[0])
            if m.upstreams:
                raise BadRequest(f"model '{m.name.display()}' is served by upstream servers "
                                 f"({', '.join(r.url for r in refs(m))}): there are no weights to pull")
        async for ev in self.puller.pull(name):
            yield ev

    def ps(self) -> list[dict[str, Any]]:
        out = []
        for e in self.scheduler.running():
            m = e.info.get("model")
            size = e.info.get("size", 0)
            out.append({"name": e.info["name"], "model": e.info["name"], "size": size,
                        "size_vram": e.info.get("size_vram", 0),
                        "digest": e.info.get("digest", ""), "details": details(m) if m else {},
                        "expires_at": rfc3339(e.expires_at), "context_length": e.spec.num_ctx})
            if e.info.get("devices"):  # split over RPC workers: where its layers are
                out[-1]["devices"] = e.info["devices"]
        for m in self.store.list():  # upstream models in use: no memory here, the upstreams named
            pool = self.upstreams.in_use(m.name.display(), refs(m)) if m.upstreams else None
            if pool is not None:
                out.append({"name": m.name.display(), "model": m.name.display(), "size": 0, "size_vram": 0,
                            "digest": m.digest, "details": details(m), "expires_at": rfc3339(pool.keep_until),
                            "context_length": 0, **_remote(m),
                            "upstreams": [{"url": b.ref.url, "model": b.ref.model, "in_flight": b.outstanding,
                                           "healthy": b.healthy} for b in pool.backends]})
        return out

    async def metrics(self) -> str:
        """Daemon metrics plus every runner's own, labelled with its model."""
        lines = [f"ollamalike_requests_waiting {self.scheduler.pending}",
                 f"ollamalike_models_loaded {len(self.scheduler.entries)}"]
        for e in self.scheduler.running():
            label = e.info["name"].replace('"', "")
            for line in (await e.runner.metrics()).splitlines():
                if line and not line.startswith("#"):
                    metric, _, value = line.partition(" ")
                    lines.append(f'{metric}{{model="{label}"}} {value}')
        lines += self.upstreams.metrics()
        return "\n".join(lines) + "\n"

    # --- generation ---------------------------------------------------------------------
    def _spec(self, m: Model, opts: dict[str, Any]) -> RunnerSpec:
        num_ctx = int(opts.get("num_ctx") or 0) or config.context_length() or self.default_num_ctx()
        if m.projectors:  # as Ollama: a vision model gets room for images
            num_ctx = max(num_ctx, 2048)
        info = gguf_info(m)
        if info and info.context_length():
            num_ctx = min(num_ctx, int(info.context_length()))
        num_ctx = max(num_ctx, 4)
        unified = config.kv_unified()
        # a unified cache reserves nothing per slot, so more slots cost no memory up front
        parallel = self.parallel or (16 if unified else auto_parallel(info, num_ctx))
        if m.config.get("pooling"):
            parallel = 1  # embedding models: one slot, as Ollama does
        kv_size = (config.kv_size() or auto_kv_size(info, num_ctx, parallel)) if unified else 0
        kv_type = config.kv_cache_type()
        flash = config.flash_attention()
        return RunnerSpec(model_path=str(m.model_path), draft=self._draft_path(m), splits=tuple(str(p) for p in m.model_paths[1:]),
                          kv_type=kv_type, flash_attn=1 if kv_type != "f16" and flash == -1 else flash,
                          use_mmap=opts.get("use_mmap") is not False, adapters=tuple(str(p) for p in m.adapters),
                          projector=str(m.projectors[0]) if m.projectors else "",
                          num_ctx=num_ctx, parallel=parallel, kv_unified=unified, kv_size=kv_size,
                          num_batch=int(opts.get("num_batch") or 512),
                          num_thread=int(opts.get("num_thread") or config.num_threads()),
                          num_gpu=int(opts.get("num_gpu", -1)), main_gpu=int(opts.get("main_gpu") or 0))

    def _draft_path(self, m: Model) -> str:
        """The GGUF of the model's DRAFT (a different draft is a different runner); "" when it has
        none, or when the draft model was removed since (the model then runs without one)."""
        if m.draft_path is not None:
            return str(m.draft_path)
        name = m.config.get("draft")
        if not name:
            return ""
        try:
            d = self.store.load(name)
        except OllamaError:
            log.warning("draft model '%s' of '%s' is not installed: running without it", name, m.name.display())
            return ""
        return str(d.model_path) if d.model_path is not None else ""

    def _prepare(self, req: GenerateRequest | ChatRequest) -> tuple[Model, dict[str, Any], RunnerSpec]:
        m = self.model(req.model)
        if m.model_path is None:
            raise no_weights(m, "counting tokens")
        check_requires(m)
        if "completion" not in capabilities(m):
            raise BadRequest(f'"{req.model}" does not support {"chat" if isinstance(req, ChatRequest) else "generate"}')
        opts = options.merge(options.merge(options.defaults(), m.params), req.options)
        return m, opts, self._spec(m, opts)

    def _info(self, m: Model) -> dict[str, Any]:
        size = m.model_path.stat().st_size if m.model_path else 0
        return {"name": m.name.display(), "digest": m.digest, "model": m, "size": size}

    async def _load_only(self, m: Model, spec: RunnerSpec, keep_alive: float | None) -> str:
        if keep_alive == 0:
            await self.scheduler.unload_model(spec.model_path)
            return "unload"
        lease = await self.scheduler.acquire(spec, self._info(m), keep_alive)
        await self.scheduler.release(lease, keep_alive)
        return "load"

    def think_value(self, req: GenerateRequest | ChatRequest, m: Model) -> bool | str | None:
        """`think` as the template sees it: unset means on for a model that can think (Ollama)."""
        if req.think is None and "thinking" in capabilities(m):
            return True
        return req.think

    async def generate_prompt(self, req: GenerateRequest, m: Model, think: bool | str | None = None) -> str:
        if req.raw:
            if req.template or req.system or req.context:
                raise BadRequest("raw mode does not support template, system, or context")
            text = req.prompt or ""
            marked = {int(x) for x in images.MARKER.findall(text)}
            return "".join(f"[img-{n}]" for n in range(len(req.images or [])) if n not in marked) + text
        template = req.template if req.template else m.template
        if req.suffix:  # a template that knows .Suffix builds the fill-in-the-middle prompt itself
            return await self._render(m, template, [], prompt=req.prompt or "", suffix=req.suffix, think=think)
        system = req.system if req.system else m.system
        user = {"role": "user", "content": req.prompt or "", **({"images": req.images} if req.images else {})}
        msgs = ([{"role": "system", "content": system}] if system else []) + \
            ([] if req.context else list(m.messages)) + [user]
        msgs, _ = prompts.attach_images(msgs)
        return await self._render(m, template, msgs, think=think)

    def chat_messages(self, req: ChatRequest, m: Model) -> list[dict[str, Any]]:
        """The model's MESSAGEs, then the request's, with the model's SYSTEM in front unless the
        request starts with its own system message (Ollama's order)."""
        req_msgs = [x.model_dump(exclude_none=True) for x in req.messages or []]
        req_msgs, _ = prompts.attach_images(req_msgs)
        msgs = list(m.messages) + req_msgs
        if m.system and not (req_msgs and req_msgs[0]["role"] == "system"):
            msgs.insert(0, {"role": "system", "content": m.system})
        if req.tools and not tools.template_knows_tools(m.template):  # teach the Hermes convention
            msgs = [tools.inline_calls(x) for x in msgs]
            if msgs and msgs[0]["role"] == "system":
                msgs[0] = {**msgs[0], "content": msgs[0]["content"] + "\n\n" + tools.tools_system_prompt(req.tools)}
            else:
                msgs.insert(0, {"role": "system", "content": tools.tools_system_prompt(req.tools)})
        return msgs

    async def chat_prompt(self, req: ChatRequest, m: Model, think: bool | str | None = None) -> str:
        return await self._render(m, m.template, self.chat_messages(req, m), tools=req.tools, think=think)

    async def _render(self, m: Model, template: str | None, msgs: list[dict[str, Any]],
                      tools: list[Any] | None = None, **kw: Any) -> str:
        info = gguf_info(m)
        bos = (info.bos_text() or "") if info else ""
        eos = (info.eos_text() or "") if info else ""
        return await prompts.render_async(template, msgs, tools=tools, bos=bos, eos=eos, **kw)

    def _images(self, req: GenerateRequest | ChatRequest, m: Model) -> dict[int, str]:
        """The request's images, numbered as their [img-N] markers, each checked (a 400 for a
        non-image, a truncated or a too large one, too many, or a model without vision)."""
        if isinstance(req, ChatRequest):
            _, sent = prompts.attach_images([x.model_dump(exclude_none=True) for x in req.messages or []])
        else:
            sent = dict(enumerate(req.images or []))
        if not sent:
            return {}
        if "vision" not in capabilities(m):
            raise BadRequest(f'"{req.model}" does not support vision')
        images.check_count(len(sent))
        for n, data in sent.items():
            images.inspect(images.decode_b64(data, f"image {n}"), f"image {n}")
        return sent

    async def _fit(self, req: GenerateRequest | ChatRequest, m: Model, text: str, lease: Any, num_ctx: int,
                   think: bool | str | None) -> str:
        """Chat: drop whole oldest messages until the prompt fits (Ollama's chatPrompt);
        `truncate: false`: 400 when the input does not fit."""
        truncate = req.truncate is not False
        if isinstance(req, ChatRequest):
            msgs = self.chat_messages(req, m)
            async def count(t: str) -> list[int]:  # Ollama counts 768 tokens per image
                return await lease.runner.tokenize(t) + [0] * (prompts.IMAGE_TOKENS * len(images.MARKER.findall(t)))
            return await prompts.fit_chat(
                msgs, num_ctx, lambda ms: self._render(m, m.template, ms, tools=req.tools, think=think),
                count, truncate=truncate, first=text)
        if not truncate and len(text.encode()) + len(req.context or []) + 2 > num_ctx:
            if len(req.context or []) + len(await lease.runner.tokenize(text)) > num_ctx:
                raise BadRequest(prompts.CONTEXT_EXCEEDED)
        return text

    async def embed(self, model: str, inputs: list[str], *, truncate: bool = True,
                    options_: dict[str, Any] | None = None, keep_alive: float | None = None,
                    priority: int = 0) -> dict[str, Any]:
        """Pooled embeddings (raw, not normalised) from the model's runner; empty input only loads."""
        t0 = time.perf_counter()
        m = self.model(model)
        if m.upstreams:
            if any(v is not None for v in (options_ or {}).values()):
                raise BadRequest(f"options have no effect on the embeddings of upstream model '{m.name.display()}'")
            self.upstreams.touch(refs(m), m.name.display(), keep_alive)
            body = await self.upstreams.embed(refs(m), m.name.display(), inputs) if inputs else \
                {"embeddings": [], "prompt_eval_count": 0}
            return body | {"load_duration": 0, "total_duration": int((time.perf_counter() - t0) * 1e9)}
        if m.model_path is None:
            raise BadRequest(f"model '{model}' has no weights")
        if "rerank" in capabilities(m):
            raise BadRequest(f"model '{model}' is a reranker: it scores documents (/api/rerank) and has no embeddings")
        check_requires(m)
        opts = options.merge(options.merge(options.defaults(), m.params), options_)
        spec = self._spec(m, opts)
        lease = await self.scheduler.acquire(spec, self._info(m), keep_alive, priority)
        try:
            body = await lease.runner.embed(inputs, truncate, spec.num_ctx) if inputs else \
                {"embeddings": [], "prompt_eval_count": 0}
        except RunnerError:
            await self.scheduler.forget(lease.entry)
            raise
        finally:
            await self.scheduler.release(lease, keep_alive)
        return {"embeddings": body["embeddings"], "prompt_eval_count": body["prompt_eval_count"],
                "load_duration": int(lease.load_duration * 1e9),
                "total_duration": int((time.perf_counter() - t0) * 1e9)}

    async def run(self, req: GenerateRequest | ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """Stream runner events for a generate or chat request: `{"content"}`... then the final
        record `{"done": True, "done_reason", counts, durations, "tokens"}`. An empty prompt or
        message list only loads (or with keep_alive 0 unloads) the model."""
        if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:
            raise BadRequest("top_logprobs must be between 0 and 20")
        t0 = time.perf_counter()
        served = self.model(req.model)
        if served.upstreams:
            async for ev in self.upstreams.serve(req, served, refs(served), t0):
                yield ev
            return
        m, opts, spec = self._prepare(req)
        is_chat = isinstance(req, ChatRequest)
        empty = not req.messages if is_chat else (not req.prompt and not req.context and not req.suffix
                                                  and not req.images)
        if empty:
            reason = await self._load_only(m, spec, req.keep_alive)
            yield {"done": True, "done_reason": reason, "total_duration": int((time.perf_counter() - t0) * 1e9)}
            return
        sent = self._images(req, m)
        thinking = "thinking" in capabilities(m)
        if req.think not in (None, False) and not thinking:
            raise BadRequest(f'"{req.model}" does not support thinking')
        think = self.think_value(req, m)
        suffix = None if is_chat else (req.suffix or None)
        template = None if is_chat else (req.template or m.template)
        if suffix is not None and not req.raw and template and \
                await asyncio.to_thread(prompts.is_go_with_suffix, template):
            suffix = None  # Ollama's way: the template's own FIM markers around .Prompt and .Suffix
        if suffix is not None:  # fill-in-the-middle: the runner builds the prompt from the FIM tokens
            text = req.prompt or ""
        else:
            text = await self.chat_prompt(req, m, think) if is_chat else await self.generate_prompt(req, m, think)
        payload = {"options": {k: v for k, v in opts.items() if k not in options.LOAD_OPTIONS},
                   "num_ctx": spec.num_ctx}
        if req.truncate is not None:
            payload["truncate"] = req.truncate
        if req.shift is not None:
            payload["shift"] = req.shift
        if req.format not in (None, ""):
            payload["format"] = req.format
        if suffix is not None:
            payload["suffix"] = suffix
        if not is_chat and req.context:
            payload["context"] = req.context
        if req.logprobs:
            payload["logprobs"], payload["top_logprobs"] = True, req.top_logprobs or 0
        splitter = tools.ThinkSplitter(opened=text.rstrip().endswith(tools.THINK_OPEN)) if thinking else None
        payload["priority"] = req.priority
        lease = await self.scheduler.acquire(spec, self._info(m), req.keep_alive, req.priority)
        try:
            if suffix is None and (is_chat or req.truncate is False):
                text = await self._fit(req, m, text, lease, spec.num_ctx, think)
            payload["prompt"] = text
            if sent:  # only the images whose markers survived the fitting
                used = {int(x) for x in images.MARKER.findall(text)}
                payload["images"] = [{"id": n, "data": d} for n, d in sent.items() if n in used]
            log.log(config.TRACE, "rendered prompt for %s: %r", m.name.display(), text)
            events = tools.parse_output(lease.runner.completion(payload), think=splitter,
                                        keep_thinking=req.think is not False,
                                        tools=req.tools if is_chat else None)
            async for ev in events:
                if ev.get("done"):
                    ev["load_duration"] = int(lease.load_duration * 1e9)
                    ev["total_duration"] = int((time.perf_counter() - t0) * 1e9)
                yield ev
        except RunnerError:
            await self.scheduler.forget(lease.entry)
            raise
        finally:
            await self.scheduler.release(lease, req.keep_alive)

    # --- tokens -------------------------------------------------------------------------
    async def _on_runner(self, m: Model, spec: RunnerSpec, keep_alive: float | None, call, priority: int = 0):
        """`await call(runner)` on the model's runner (loaded if need be), the lease released after."""
        lease = await self.scheduler.acquire(spec, self._info(m), keep_alive, priority)
        try:
            return await call(lease.runner)
        except RunnerError:
            await self.scheduler.forget(lease.entry)
            raise
        finally:
            await self.scheduler.release(lease, keep_alive)

    def _weights(self, model: str) -> tuple[Model, RunnerSpec]:
        m = self.model(model)
        if m.model_path is None:
            raise no_weights(m, "tokenizing")
        check_requires(m)
        return m, self._spec(m, options.merge(options.defaults(), m.params))

    async def tokenize(self, model: str, text: str, *, add_special: bool = True,
                       keep_alive: float | None = None) -> list[int]:
        m, spec = self._weights(model)
        return await self._on_runner(m, spec, keep_alive, lambda r: r.tokenize(text, add_special))

    async def detokenize(self, model: str, tokens: list[int], *, keep_alive: float | None = None) -> str:
        m, spec = self._weights(model)
        info = gguf_info(m)
        n_vocab = len(info.metadata.get("tokenizer.ggml.tokens") or []) if info else 0
        if n_vocab and not all(0 <= t < n_vocab for t in tokens):  # llama.cpp aborts on an unknown id
            raise BadRequest(f"invalid tokens: token ids must be integers from 0 to {n_vocab - 1}")
        return await self._on_runner(m, spec, keep_alive, lambda r: r.detokenize(tokens))

    async def rerank(self, model: str, query: str, documents: list[str], *, truncate: bool = True,
                     keep_alive: float | None = None, priority: int = 0) -> dict[str, Any]:
        """One relevance score per document, in their order (`{"scores", "prompt_eval_count"}`);
        an empty list only checks the model."""
        m, spec = self._weights(model)
        if "rerank" not in capabilities(m):
            raise BadRequest(f"model '{model}' is not a reranker: rerank needs a reranking model "
                             "(a GGUF with rank pooling, such as bge-reranker)")
        if not documents:
            return {"scores": [], "prompt_eval_count": 0}
        return await self._on_runner(m, spec, keep_alive,
                                     lambda r: r.rerank(query, documents, truncate, spec.num_ctx), priority)

    async def count_chat_tokens(self, req: ChatRequest) -> int:
        """Tokens in a chat request's rendered prompt (tools included), as the runner tokenizes it."""
        m, _, spec = self._prepare(req)
        text = await self.chat_prompt(req, m, self.think_value(req, m))
        return len(await self._on_runner(m, spec, req.keep_alive, lambda r: r.tokenize(text, True)))
