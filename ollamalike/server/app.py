"""The daemon: the aiohttp application, its error boundary, startup and shutdown."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import traceback
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ollamalike import __version__, config
from ollamalike.errors import OllamaError
from ollamalike.hub.catalog import Catalog
from ollamalike.hub.pull import Puller
from ollamalike.hub.sources import Source
from ollamalike.runner.process import RunnerProcess, RunnerSpec
from ollamalike.server.anthropic import Anthropic
from ollamalike.server.core import Core
from ollamalike.api.anthropic import error_body as anthropic_error
from ollamalike.api.openai import error_body as openai_error
from ollamalike.server import security
from ollamalike.runner.rpc import parse_servers
from ollamalike.server.devices import default_context_length, discover, remote_devices
from ollamalike.server.offload import Inventory, Planner
from ollamalike.server.native import Native
from ollamalike.server.openai import OpenAI
from ollamalike.server.rerank import Rerank
from ollamalike.server.responses import Responses
from ollamalike.server.tokens import Tokens
from ollamalike.server.scheduler import Scheduler, Spawn
from ollamalike.store.manifests import ManifestStore

log = logging.getLogger("ollamalike.server")
CORE = web.AppKey("core", Core)


@web.middleware
async def errors(request: web.Request, handler):
    """One error boundary: every failure is `{"error": message}` with the right status."""
    def error(message: str, status: int) -> web.Response:
        if request.path.startswith("/v1/messages"):  # Anthropic's routes, Anthropic's error shape
            return web.json_response(anthropic_error(status, message), status=status)
        if request.path.startswith("/v1/"):  # the OpenAI routes answer in OpenAI's error shape
            return web.json_response(openai_error(status, message), status=status)
        return web.json_response({"error": message}, status=status)

    try:
        return await handler(request)
    except OllamaError as exc:
        return error(exc.message, exc.status)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.text and not exc.text.startswith("{"):
            return error(exc.text.lower(), exc.status)
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # a bug must not take the daemon down
        log.error("unhandled error on %s %s: %s", request.method, request.path, traceback.format_exc())
        return error(str(exc) or type(exc).__name__, 500)


def create_app(models: Path | None = None, spawn: Spawn | None = None, *, parallel: int = 0,
               source: Source | None = None, catalog: Catalog | None = None,
               bind_host: str | None = None,
               inventory: Callable[[], Inventory] | None = None) -> web.Application:
    store = ManifestStore(models or config.models_dir())
    devices = inventory or discover

    async def start_runner(spec: RunnerSpec) -> RunnerProcess:
        limit = config.load_timeout()
        return await RunnerProcess.start(spec, load_timeout=None if math.isinf(limit) else limit)
    try:
        workers = parse_servers(config.rpc_servers())
    except ValueError as exc:
        raise OllamaError(f"OLLAMALIKE_RPC_SERVERS: {exc}") from None
    planner = Planner(devices, remotes=(lambda busy: remote_devices(workers, busy)) if workers else None)
    scheduler = Scheduler(spawn or start_runner, max_loaded=config.max_loaded_models() or 3,
                          max_queue=config.max_queue(), keep_alive=config.keep_alive_seconds(),
                          planner=planner)
    planner.busy = lambda: {ep for e in scheduler.entries.values() if e.runner.alive
                            for ep in getattr(getattr(e.runner, "spec", None), "rpc_servers", ())}
    core = Core(store, scheduler, parallel=parallel, puller=Puller(store, source, catalog),
                default_num_ctx=lambda: default_context_length(devices()),
                memory=(lambda: inventory().ram_free) if inventory else None)
    access, auth = security.middlewares(bind_host)
    app = web.Application(middlewares=[access, errors, auth], client_max_size=config.max_body())
    app.on_response_prepare.append(security.on_prepare)
    app[CORE] = core
    Native(core).routes(app)
    OpenAI(core).routes(app)
    Anthropic(core).routes(app)
    Responses(core).routes(app)
    Tokens(core).routes(app)
    Rerank(core).routes(app)

    async def on_startup(app: web.Application) -> None:
        store.root.mkdir(parents=True, exist_ok=True)
        if not config.noprune():  # as Ollama: strays are pruned at startup, never while serving
            await asyncio.to_thread(store.prune, True)

    async def on_cleanup(app: web.Application) -> None:
        await scheduler.shutdown()
        await core.upstreams.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def serve() -> None:
    """Run the daemon until SIGINT/SIGTERM; every runner is ended on the way out."""
    logging.addLevelName(config.TRACE, "TRACE")
    logging.basicConfig(level=config.log_level(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hp = config.host()
    log.info("ollamalike %s, server config: %s", __version__,
             " ".join(f"{k}={v}" for k, v, _ in config.describe()))
    app = create_app()

    async def main() -> None:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=log if config.debug() else None)
        await runner.setup()
        site = web.TCPSite(runner, hp.host, hp.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OllamaError(f"listen tcp {hp.host}:{hp.port}: {exc.strerror or exc}") from None
        log.info("listening on %s:%d (models: %s)", hp.host, hp.port, app[CORE].store.root)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await runner.cleanup()

    asyncio.run(main())
