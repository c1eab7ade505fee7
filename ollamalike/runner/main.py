"""The runner process: loads one model, serves it over a small loopback HTTP app.

Started by the daemon as `ollamalike runner --model PATH ...`; prints `listening on HOST:PORT` on stdout
once the model is loaded, so the daemon knows where to talk to it. Debuggable with curl, given the key.

What the daemon hands a runner through its environment (never argv, which every local user can read):
- OLLAMALIKE_RUNNER_SECRET: the key every request must carry (`Authorization: Bearer KEY`; 401
  otherwise). A runner started by hand without one makes its own and prints it on stderr.
- OLLAMALIKE_RUNNER_WATCH_STDIN=1: stdin is a pipe from the daemon; its end (the daemon died, even by
  SIGKILL) ends the runner. On Linux the runner also asks for SIGTERM when its parent dies.
- OLLAMALIKE_RUNNER_CPU_BOARD=FD:SLOT: the daemon's table of busy runners (runner/cpushare.py), so
  runners decoding at the same time split the cores instead of spinning against each other.
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import logging
import os
import secrets
import signal
import sys
import threading
from typing import Any

from aiohttp import web

from ollamalike import config, images
from ollamalike.errors import OllamaError
from ollamalike.runner import protocol
from ollamalike.runner.engine import EmbedJob, Engine, Request
from ollamalike.runner.imagerows import image_key, image_tokens
from ollamalike.runner.cpushare import CpuShare
from ollamalike.runner.llama import LlamaModel, LoadError, LoadParams, format_grammar, log_backends, physical_cores
from ollamalike.runner.speculative import DraftModel

log = logging.getLogger("ollamalike.runner")


class RunnerApp:
    def __init__(self, model: LlamaModel, engine: Engine, num_ctx: int, vision: Any = None):
        self.model = model
        self.engine = engine
        self.num_ctx = num_ctx
        self.vision = vision  # runner.vision.Vision when the model has a projector

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self.health)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
        app.router.add_post("/completion", self.completion)
        app.router.add_post("/embedding", self.embedding)
        app.router.add_post("/rerank", self.rerank)
        app.router.add_get("/metrics", self.metrics)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "running": self.engine.running,
                                  "waiting": len(self.engine.waiting)})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        tokens = await asyncio.to_thread(self.model.tokenize, str(body.get("content", "")),
                                         bool(body.get("add_special", True)))
        return web.json_response({"tokens": tokens})

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = b"".join(self.model.piece(int(t)) for t in body.get("tokens", []))
        return web.json_response({"content": data.decode("utf-8", "replace")})

    async def metrics(self, request: web.Request) -> web.Response:
        st, e = self.engine.stats, self.engine
        rows = [
            ("requests_running", "gauge", "sequences generating or prefilling", e.running),
            ("requests_waiting", "gauge", "requests waiting for a free slot", len(e.waiting)),
            ("requests_total", "counter", "completion requests admitted", st["requests"]),
            ("tokens_prefilled_total", "counter", "prompt tokens decoded", st["prompt_tokens"]),
            ("tokens_decoded_total", "counter", "generated tokens decoded", st["decoded_tokens"]),
            ("tokens_reused_total", "counter", "prompt tokens served from the prefix cache", st["reused_tokens"]),
            ("embeddings_total", "counter", "inputs embedded", st["embeddings"]),
            ("reranked_total", "counter", "query/document pairs scored", st["ranked"]),
            ("steps_total", "counter", "batched decode steps", st["steps"]),
            ("step_seconds_total", "counter", "seconds spent in llama_decode", round(st["step_seconds"], 6)),
            ("kv_cells_used", "gauge", "KV cells holding tokens (running and cached)", e.kv_cells_used),
            ("kv_cells_total", "gauge", "KV cells in the cache", self.model.n_ctx),
            ("preemptions_total", "counter", "sequences requeued because the cache was full", st["preemptions"]),
            ("draft_tokens_total", "counter", "speculative draft tokens proposed", st["draft_tokens"]),
            ("draft_accepted_total", "counter", "speculative draft tokens accepted", st["draft_accepted"]),
            ("context_shifts_total", "counter", "context shifts (half the context dropped to go on)", st["context_shifts"]),
            ("image_tokens_total", "counter", "image embedding rows prefilled", st["image_tokens"]),
            ("image_tokens_reused_total", "counter", "image rows served from the prefix cache", st["image_tokens_reused"]),
            ("slots", "gauge", "parallel sequence slots", e.n_parallel),
            ("threads", "gauge", "CPU threads the last decode step used", self.model.threads),
        ]
        if self.vision is not None:
            vs = self.vision.stats
            rows += [("image_encodes_total", "counter", "images encoded by the projector", vs["image_encodes"]),
                     ("image_cache_hits_total", "counter", "images whose embeddings were cached", vs["image_cache_hits"]),
                     ("image_encode_seconds_total", "counter", "seconds spent encoding images",
                      round(vs["image_encode_seconds"], 6))]
        share = self.model.share
        if share is not None:
            rows += [
                ("cpu_busy_runners_other", "gauge", "other runners of this daemon decoding at the last step",
                 share.busy_others),
                ("cpu_shared_steps_total", "counter",
                 "steps run on a share of the cores because other runners were decoding", share.shared_steps),
            ]
        lines = []
        for name, kind, help_, value in rows:
            lines += [f"# HELP ollamalike_runner_{name} {help_}", f"# TYPE ollamalike_runner_{name} {kind}",
                      f"ollamalike_runner_{name} {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _fim(self, prefix: str, suffix: str) -> list[int]:
        """Fill-in-the-middle prompt, prefix-suffix-middle order, with the model's own FIM tokens."""
        fim = self.model.fim_tokens()
        if fim is None:
            raise ValueError("model does not support insert")
        pre, suf, mid = fim
        bos = self.model.tokenize("", add_special=True)
        return (bos + [pre] + self.model.tokenize(prefix, add_special=False) + [suf]
                + self.model.tokenize(suffix, add_special=False) + [mid])

    def _limit(self, body: dict[str, Any]) -> int:
        return max(1, min(int(body.get("num_ctx") or self.num_ctx), self.model.seq_ctx))

    async def _pooled(self, inputs: list[list[int]], rank: bool = False) -> tuple[list[Any] | None, str | None]:
        """Run a pooling job on the engine thread: (vectors or scores, None) or (None, error)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(results, error):
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result((results, error)))
        job = EmbedJob(inputs=inputs, done=done, rank=rank)
        self.engine.submit_embed(job)
        try:
            return await fut
        finally:
            job.cancelled = True

    async def embedding(self, request: web.Request) -> web.Response:
        body = await request.json()
        contents = body.get("content")
        contents = [contents] if isinstance(contents, str) else list(contents or [])
        truncate = bool(body.get("truncate", True))
        limit = self._limit(body)
        inputs = []
        for text in contents:
            toks = await asyncio.to_thread(self.model.tokenize, str(text), True) or [0]
            if len(toks) > limit:
                if not truncate:
                    return web.json_response({"error": "the input length exceeds the context length"}, status=400)
                toks = toks[:limit]
            inputs.append(toks)
        vectors, error = await self._pooled(inputs)
        if error:
            return web.json_response({"error": error}, status=500)
        return web.json_response({"embeddings": vectors, "prompt_eval_count": sum(len(x) for x in inputs)})

    async def rerank(self, request: web.Request) -> web.Response:
        """`{"query", "documents": [str], "truncate", "num_ctx"}` -> `{"scores": [float], "prompt_eval_count"}`:
        one score per document, in the documents' order (the daemon sorts)."""
        body = await request.json()
        query = str(body.get("query") or "")
        docs = [str(d) for d in body.get("documents") or []]
        limit = self._limit(body)
        inputs = []
        for i, doc in enumerate(docs):
            toks = await asyncio.to_thread(self.model.rerank_tokens, query, doc)
            if len(toks) > limit:
                if body.get("truncate") is False:
                    return web.json_response({"error": f"the input length of documents[{i}] ({len(toks)} tokens "
                                                       f"with the query) exceeds the context length ({limit})"},
                                             status=400)
                toks = toks[:limit]
            inputs.append(toks or [0])
        scores, error = await self._pooled(inputs, rank=True)
        if error:
            return web.json_response({"error": error}, status=500)
        return web.json_response({"scores": scores, "prompt_eval_count": sum(len(x) for x in inputs)})

    def _prompt_tokens(self, body: dict[str, Any]) -> tuple[list[int], str | None, dict[int, Any]]:
        """The request's tokens and grammar; ValueError for a bad request. Runs off the event loop:
        tokenizing megabytes takes seconds (llama.cpp releases the GIL meanwhile)."""
        context = body.get("context") or []
        if not isinstance(context, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self.model.n_vocab for t in context):
            raise ValueError(f"invalid context: token ids must be integers from 0 to {self.model.n_vocab - 1}")
        prompt = str(body.get("prompt", ""))
        grammar = body.get("grammar") or format_grammar(body.get("format"))
        if grammar:
            self.model.check_grammar(grammar)
        embeds: dict[int, Any] = {}
        if body.get("images"):
            if body.get("suffix") is not None:
                raise ValueError("images cannot be used with suffix")
            tokens, embeds = self._with_images(prompt, body["images"], add_special=not context)
            tokens = context + tokens
        elif body.get("suffix") is not None:
            tokens = self._fim(prompt, str(body["suffix"]))
        else:
            tokens = context + (self.model.tokenize(prompt, add_special=not context) if prompt else [])
        limit = min(int(body.get("num_ctx") or self.num_ctx), self.model.seq_ctx)
        if (body.get("truncate") is False or embeds) and len(tokens) >= limit:  # else the engine keeps num_keep + the end
            what = "the input with its images" if embeds else "the input length"
            raise ValueError(f"{what} ({len(tokens)} tokens) exceeds the context length ({limit})")
        return tokens, grammar, embeds

    def _with_images(self, prompt: str, sent: Any, add_special: bool) -> tuple[list[int], dict[int, Any]]:
        """The prompt's tokens with each [img-N] marker replaced by image N's pseudo-tokens, and the
        embeddings of every image (encoded here, in the request's thread, or taken from the cache)."""
        if self.vision is None:
            raise ValueError("this model does not support images (it has no projector)")
        if not isinstance(sent, list):
            raise ValueError("invalid images: expected a list")
        images.check_count(len(sent))
        by_id: dict[int, images.Image] = {}
        for i, item in enumerate(sent):
            ident, data = (item.get("id", i), item.get("data")) if isinstance(item, dict) else (i, item)
            by_id[int(ident)] = images.inspect(images.decode_b64(data, f"image {ident}"), f"image {ident}")
        parts: list[Any] = []
        pos, used = 0, set()
        for m in images.MARKER.finditer(prompt):
            n = int(m.group(1))
            if n not in by_id:
                continue
            parts.append(prompt[pos:m.start()])
            img = by_id[n]
            parts.append((img.data, img.format, img.sha256))
            used.add(n)
            pos = m.end()
        parts.append(prompt[pos:])
        missing = sorted(set(by_id) - used)
        if missing:
            raise ValueError(f"image {missing[0]} is not referenced in the prompt (expected an [img-{missing[0]}] marker)")
        tokens: list[int] = []
        embeds: dict[int, Any] = {}
        for item in self.vision.tokenize([p for p in parts if p != ""], add_special):
            if isinstance(item, list):
                tokens += item
                continue
            if self.engine.image_non_causal and item.n_tokens > self.model.n_batch:
                raise ValueError(f"an image takes {item.n_tokens} tokens, more than num_batch ({self.model.n_batch})")
            key = image_key(item.sha256)
            embeds[key] = item.embd
            tokens += image_tokens(key, item.n_tokens)
        return tokens, embeds

    async def completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        try:
            tokens, grammar, embeds = await asyncio.to_thread(self._prompt_tokens, body)
        except ValueError as exc:  # a bad request, answered before any byte of the stream
            return web.json_response({"error": str(exc)}, status=400)
        except OllamaError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        emit = queue.put_nowait if self.engine.deliver else \
            (lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev))
        req = Request(tokens=tokens, options=dict(body.get("options") or {}),
                      num_ctx=int(body.get("num_ctx") or self.num_ctx), grammar=grammar, emit=emit,
                      logprobs=int(body.get("top_logprobs") or 0) if body.get("logprobs") else -1,
                      shift=body.get("shift") is not False and not embeds, images=embeds,
                      priority=int(body.get("priority") or 0))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        finished = False
        try:
            self.engine.submit(req)
            while not finished:
                events = [await queue.get()]
                while not queue.empty():  # whatever else is ready goes out in the same write
                    events.append(queue.get_nowait())
                finished = any("done" in ev or "error" in ev for ev in events)
                await resp.write(b"".join(map(protocol.line, events)))
        finally:
            if not finished:  # client went away: free the sequence at the next step
                req.cancel()
                self.engine.wake()
        return resp


SECRET_ENV = "OLLAMALIKE_RUNNER_SECRET"
WATCH_ENV = "OLLAMALIKE_RUNNER_WATCH_STDIN"
EXIT_GRACE = 5.0  # seconds a runner told to stop may spend cleaning up before it exits hard


def require_key(secret: str):
    """Middleware: every route answers 401 unless the request carries the runner's key."""
    expected = f"Bearer {secret}".encode()

    @web.middleware
    async def check(request: web.Request, handler):
        got = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(got, expected):
            return web.json_response({"error": "unauthorized: this runner answers only its daemon"}, status=401)
        return await handler(request)
    return check


def _die_with_parent() -> None:
    """Linux: SIGTERM when the parent (the daemon) dies. The stdin pipe covers every platform."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _hard_exit_later() -> None:
    """The runner was told to stop; if cleanup hangs (a long decode), leave anyway."""
    t = threading.Timer(EXIT_GRACE, lambda: os._exit(1))
    t.daemon = True
    t.start()


def _watch_stdin(stop: Any) -> None:
    """Block on stdin until the daemon's end of the pipe closes, then stop."""
    def run() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        log.info("stdin closed: the daemon is gone or unloading this model; exiting")
        _hard_exit_later()
        stop()
    threading.Thread(target=run, name="parent-watch", daemon=True).start()


def load_draft(args: Any, model: LlamaModel, parallel: int, share: Any = None) -> LlamaModel | None:
    """The draft model of `--draft` (speculative decoding), beside the target: one KV stream per
    slot of the target's per-sequence context, on the same devices; its vocabulary must be the
    target's. It takes the same share of the cores as the model when other runners decode."""
    path = getattr(args, "draft", "")
    if not path:
        return None
    per = min(model.seq_ctx, args.ctx)  # a unified cache's seq_ctx is the whole cache: one num_ctx each
    draft = LlamaModel(LoadParams(path=path, n_ctx=per * parallel, n_seq_max=parallel,
                                  num_ctx=per, n_batch=args.batch, n_threads=args.threads,
                                  n_gpu_layers=args.gpu_layers, main_gpu=args.main_gpu, use_mmap=args.use_mmap),
                       share=share)
    if draft.n_vocab != model.n_vocab:
        draft.close()
        model.close()
        raise LoadError(f"draft model {path} has a vocabulary of {draft.n_vocab} tokens, "
                        f"the model has {model.n_vocab}")
    return draft


def serve(args: Any) -> None:
    """Entry point of the hidden `runner` command."""
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s runner %(levelname)s %(message)s")
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        secret = secrets.token_urlsafe(32)
        print(f"runner key (send 'Authorization: Bearer KEY'): {secret}", file=sys.stderr, flush=True)
    if os.environ.pop(WATCH_ENV, "") == "1":
        _die_with_parent()
        stopped = threading.Event()
        _watch_stdin(stopped.set)
    else:
        stopped = None
    log_backends()  # which CPU variant and GPUs came up (or why none did)
    parallel = max(1, args.parallel)
    total = args.kv_size if args.kv_unified and args.kv_size else args.ctx * parallel
    share = CpuShare.from_env(cores=args.threads or physical_cores(), fixed=args.threads > 0)
    model = LlamaModel(LoadParams(path=args.model, n_ctx=total, n_seq_max=parallel, num_ctx=args.ctx,
                                  kv_unified=args.kv_unified, kv_type=args.kv_type, flash_attn=args.flash_attn,
                                  use_mmap=args.use_mmap, n_batch=args.batch, n_threads=args.threads,
                                  loras=tuple(getattr(args, "loras", ()) or ()),
                                  n_gpu_layers=args.gpu_layers, splits=tuple(args.splits or ()),
                                  main_gpu=args.main_gpu, tensor_split=tuple(args.tensor_split),
                                  rpc_servers=tuple(getattr(args, "rpc", ()) or ())), share=share)
    draft = load_draft(args, model, parallel, share)
    engine = Engine(model, parallel, draft=DraftModel(draft) if draft is not None else None)
    vision = None
    if getattr(args, "mmproj", None):
        from ollamalike.runner.vision import Vision  # loads libmtmd only for a model with a projector

        vision = Vision(args.mmproj, model.model, model.n_embd, args.threads or physical_cores(),
                        use_gpu=args.gpu_layers > 0)
        engine.image_non_causal = vision.non_causal
    engine.start()
    runner = RunnerApp(model, engine, args.ctx, vision)
    # the daemon bounds request bodies (OLLAMALIKE_MAX_BODY); its own payload adds the rendered
    # template and options, so the runner takes somewhat more than that
    app = web.Application(client_max_size=config.max_body() + (16 << 20), middlewares=[require_key(secret)])
    runner.routes(app)

    async def main() -> None:
        app_runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await app_runner.setup()
        site = web.TCPSite(app_runner, "127.0.0.1", args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def deliver_all(items):
            for req, ev in items:
                req.emit(ev)
        engine.deliver = lambda items: loop.call_soon_threadsafe(deliver_all, items)

        def on_signal() -> None:
            _hard_exit_later()
            stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        if stopped is not None:  # the parent watch fires from its own thread
            threading.Thread(target=lambda: (stopped.wait(), loop.call_soon_threadsafe(stop.set)),
                             daemon=True).start()
        await stop.wait()
        await app_runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        engine.close()
        if vision is not None:
            vision.close()
        if draft is not None:
            draft.close()
        model.close()
