"""The daemon's side of one runner process: spawn it, talk to it over HTTP, end it.

A runner that dies is reported in its own words: the last lines it wrote to stderr.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from ollamalike.errors import BadRequest, OllamaError, RunnerError, TooLarge
from ollamalike.runner import cpushare, rpc


@dataclass(frozen=True)
class RunnerSpec:
    """What a runner is started with; two requests with equal specs can share a runner."""

    model_path: str
    num_ctx: int
    parallel: int
    num_batch: int = 512
    num_thread: int = 0
    num_gpu: int = 0  # layers on the GPU(s); -1 = as many as fit (decided before the spawn)
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # share of the layers per GPU index
    splits: tuple[str, ...] = ()  # the other files of a split GGUF, in order
    kv_unified: bool = False  # one KV cache shared by every sequence, of kv_size cells
    kv_type: str = "f16"  # the KV cache's data type: f16, q8_0, q4_0
    flash_attn: int = -1  # -1 auto (llama.cpp decides), 0 off, 1 on
    use_mmap: bool = True
    kv_size: int = 0
    adapters: tuple[str, ...] = ()  # LoRA adapter GGUFs applied at scale 1.0
    projector: str = ""  # the vision projector (mmproj) GGUF, loaded beside the model
    rpc_servers: tuple[str, ...] = ()  # RPC workers holding layers (decided before the spawn)
    draft: str = ""  # the draft model's GGUF (speculative decoding), loaded beside the model


def self_command() -> list[str]:
    """The argv that re-runs this program (append a command such as `serve` or `runner`).

    The frozen binary is itself; otherwise `python -m ollamalike`, made safe: plain `-m` would put
    the working directory first on sys.path, so an `attr.py` (or any module the program imports)
    lying in the user's directory would run inside the daemon or the runner. `-P` (Python 3.11+)
    leaves it out; older Pythons drop it by hand before importing anything else."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "ollamalike"]
    return [sys.executable, "-c", "import sys; del sys.path[0]; import runpy; "
            "runpy.run_module('ollamalike', run_name='__main__', alter_sys=True)"]


def runner_command(spec: RunnerSpec) -> list[str]:
    """The same executable re-run with the hidden `runner` command."""
    return self_command() + [
        "runner", "--model", spec.model_path, "--ctx", str(spec.num_ctx), "--parallel", str(spec.parallel),
        "--batch", str(spec.num_batch), "--threads", str(spec.num_thread),
        "--gpu-layers", str(max(0, spec.num_gpu)), "--port", "0",
    ] + [arg for path in spec.splits for arg in ("--split", path)] + (
        ["--kv-unified", "--kv-size", str(spec.kv_size)] if spec.kv_unified else []) + (
        ["--main-gpu", str(spec.main_gpu)] if spec.main_gpu else []) + (
        ["--tensor-split", ",".join(f"{x:g}" for x in spec.tensor_split)] if spec.tensor_split else []) + (
        ["--kv-type", spec.kv_type] if spec.kv_type != "f16" else []) + (
        ["--flash-attn", str(spec.flash_attn)] if spec.flash_attn != -1 else []) + (
        [] if spec.use_mmap else ["--no-mmap"]) + [arg for path in spec.adapters for arg in ("--lora", path)] + (
        ["--mmproj", spec.projector] if spec.projector else []) + (
        ["--rpc", ",".join(spec.rpc_servers)] if spec.rpc_servers else []) + (
        ["--draft", spec.draft] if spec.draft else [])


@functools.cache
def cpu_board() -> cpushare.CpuBoard | None:
    """The table through which this daemon's runners share the CPU (one per daemon process); None
    where a runner cannot inherit it (Windows has no pass_fds)."""
    if os.name == "nt":
        return None
    try:
        return cpushare.CpuBoard()
    except (OSError, ValueError, AttributeError):
        return None


class RunnerProcess:
    """A live runner. Create with `await RunnerProcess.start(spec)`."""

    def __init__(self, spec: RunnerSpec, proc: asyncio.subprocess.Process, secret: str = ""):
        self.spec = spec
        self.proc = proc
        self.secret = secret  # the runner answers only requests that carry it
        self.url = ""
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=30)
        self._lines = 0  # stderr lines read so far
        self._mark = 0  # how many of them were written before the model finished loading
        self._session: aiohttp.ClientSession | None = None
        self._stderr_task: asyncio.Task | None = None
        self.cpu_slot: int | None = None

    @classmethod
    async def start(cls, spec: RunnerSpec, load_timeout: float | None = 300.0) -> "RunnerProcess":
        secret = secrets.token_urlsafe(32)
        # The key travels in the environment (argv is world-readable); stdin is a pipe the runner
        # watches: when this process dies, even by SIGKILL, the pipe closes and the runner exits.
        env = dict(os.environ, OLLAMALIKE_RUNNER_SECRET=secret, OLLAMALIKE_RUNNER_WATCH_STDIN="1")
        if not os.environ.get("OLLAMALIKE_DEBUG"):  # an abort's gdb backtrace would bury its message
            env.setdefault("GGML_NO_BACKTRACE", "1")
        board = cpu_board()
        slot = board.assign(object(), alive=lambda r: getattr(r, "alive", True)) if board else None
        fds: tuple[int, ...] = ()
        if board is not None and slot is not None:
            env[cpushare.FD_ENV] = board.env(slot)
            fds = (board.fd,)
        try:
            proc = await asyncio.create_subprocess_exec(
                *runner_command(spec), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True, pass_fds=fds)
        except BaseException:
            if board is not None:
                board.release(slot)
            raise
        self = cls(spec, proc, secret)
        if board is not None and slot is not None:
            board.hold(slot, self)
            self.cpu_slot = slot
        self._stderr_task = asyncio.create_task(self._read_stderr())
        try:
            line = await asyncio.wait_for(self._await_port(), load_timeout)
        except (asyncio.TimeoutError, RunnerError) as exc:
            await self.close()
            if isinstance(exc, RunnerError):
                raise
            raise RunnerError(f"timed out waiting for the model to load: {self.last_words()}") from None
        self.url = "http://" + line
        self._mark = self._lines  # a later crash is told in the lines written after the load
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                              headers={"Authorization": f"Bearer {secret}"})
        return self

    async def _await_port(self) -> str:
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                await self.proc.wait()
                if self._stderr_task:
                    await asyncio.wait([self._stderr_task], timeout=2)
                raise RunnerError(f"{await self.lost_workers()}llama runner process has terminated: "
                                  f"{self.last_words()}")
            text = raw.decode(errors="replace").strip()
            if text.startswith("listening on "):
                return text[len("listening on "):]

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        debug = os.environ.get("OLLAMALIKE_DEBUG")
        while raw := await self.proc.stderr.readline():
            text = raw.decode(errors="replace").rstrip()
            if text:
                self.stderr_tail.append(text)
                self._lines += 1
                if debug:
                    print(f"[runner {self.proc.pid}] {text}", file=sys.stderr)
        await self.proc.wait()  # stderr closed: the runner is gone, so is its claim on the cores
        self._release_cpu_slot()

    def _release_cpu_slot(self) -> None:
        board = cpu_board()
        if board is not None and self.cpu_slot is not None:
            board.release(self.cpu_slot)
            self.cpu_slot = None

    def last_words(self) -> str:
        """The runner's own last error lines, for a crash report."""
        fresh = self._lines - self._mark  # never quote the load's log for a later crash
        lines = list(self.stderr_tail)[-fresh:] if fresh > 0 else []
        keys = ("error", "fail", "abort", "crash", "exception", "unable")
        errs = [x for x in lines if any(k in x.lower() for k in keys)]
        picked = errs[-3:] or lines[-3:]
        code = self.proc.returncode
        status = ""
        if code is not None and code < 0:
            try:
                status = f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                status = f" (killed by signal {-code})"
        elif code is not None:
            status = f" (exit status {code})"
        text = "; ".join(picked)
        return text + status if text else (status.strip(" ()") or "no output")

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def _live_session(self) -> aiohttp.ClientSession:
        """The session to the runner; a clear error once the runner has been stopped (a request
        that waited behind a crash must not reach a closed session)."""
        if self._session is None:
            raise RunnerError("llama runner process has terminated: " + self.last_words()
                              if self.proc.returncode not in (None, 0) else "the model was unloaded, try again")
        return self._session

    @staticmethod
    async def _refusal(resp: aiohttp.ClientResponse) -> OllamaError:
        """The runner's own error answer (400 bad request, 413 too large...) as the daemon's error."""
        try:
            message = (await resp.json(content_type=None)).get("error") or resp.reason
        except (ValueError, aiohttp.ClientError):
            message = (await resp.text()).strip()[:200] or resp.reason or "runner error"
        kind = {400: BadRequest, 413: TooLarge}.get(resp.status, RunnerError)
        return kind(str(message).lower() if kind is TooLarge else str(message))

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        session = self._live_session()
        try:
            async with session.post(self.url + path, json=payload) as resp:
                if resp.status != 200:
                    raise await self._refusal(resp)
                return await resp.json()
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise await self._crashed(exc) from None

    async def _crashed(self, exc: BaseException) -> RunnerError:
        try:
            await asyncio.wait_for(self.proc.wait(), 2)
        except asyncio.TimeoutError:
            return RunnerError(f"runner connection failed: {exc}")
        if self._stderr_task:
            await asyncio.wait([self._stderr_task], timeout=2)
        return RunnerError(f"{await self.lost_workers()}llama runner process has terminated: {self.last_words()}")

    async def lost_workers(self) -> str:
        """`rpc worker h:p is down (...); ` for each of the runner's RPC workers that is gone: the
        likely cause of its death, which llama.cpp's own abort message does not name."""
        async def check(ep: str) -> str:
            try:
                await asyncio.to_thread(rpc.probe, ep, 2.0)
                return ""
            except rpc.RpcDown as exc:
                return f"{exc}; "
        return "".join(await asyncio.gather(*(check(ep) for ep in self.spec.rpc_servers)))

    async def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return (await self._post("/tokenize", {"content": text, "add_special": add_special}))["tokens"]

    async def embed(self, inputs: list[str], truncate: bool = True, num_ctx: int = 0) -> dict[str, Any]:
        """`{"embeddings": [[float]], "prompt_eval_count": n}`: pooled, not normalised."""
        return await self._post("/embedding", {"content": inputs, "truncate": truncate, "num_ctx": num_ctx})

    async def rerank(self, query: str, documents: list[str], truncate: bool = True,
                     num_ctx: int = 0) -> dict[str, Any]:
        """`{"scores": [float], "prompt_eval_count": n}`: one score per document, in their order."""
        return await self._post("/rerank", {"query": query, "documents": documents, "truncate": truncate,
                                            "num_ctx": num_ctx})

    async def detokenize(self, tokens: list[int]) -> str:
        return (await self._post("/detokenize", {"tokens": tokens}))["content"]

    async def metrics(self) -> str:
        """The runner's Prometheus text ('' when it cannot answer)."""
        if not self.alive or self._session is None:
            return ""
        try:
            async with self._session.get(self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
                return await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            return ""

    async def health(self) -> bool:
        if not self.alive or self._session is None:
            return False
        try:
            async with self._session.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=10)) as r:
                return r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            return False

    async def completion(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream the runner's events: `{"content"}` pieces, then `{"done": true, ...}`."""
        session = self._live_session()
        try:
            async with session.post(self.url + "/completion", json=payload) as resp:
                if resp.status != 200:  # the runner refused the request itself (bad format, no FIM)
                    raise await self._refusal(resp)
                async for raw in resp.content:
                    line = raw.strip()
                    if not line:
                        continue
                    ev = json.loads(line)
                    if "error" in ev:
                        raise RunnerError(ev["error"])
                    yield ev
                    if ev.get("done"):  # read on to the stream's end: a response left unread closes its
                        async for _ in resp.content:  # connection, and every request would open a new one
                            pass
                        return
        except (aiohttp.ClientError, ConnectionError, json.JSONDecodeError) as exc:
            raise await self._crashed(exc) from None
        raise await self._crashed(ConnectionError("stream ended early"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the runner's cue to go, should the signal below not reach it
        if self.proc.returncode is None:
            try:
                self.proc.terminate()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (asyncio.TimeoutError, ProcessLookupError):
                try:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
                await self.proc.wait()
        if self._stderr_task:
            self._stderr_task.cancel()
        self._release_cpu_slot()
