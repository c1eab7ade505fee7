"""The daemon's side of /api/create: store.create's statuses from a worker thread, and quantizing
(`create -q`, `quantize`): llama.cpp's llama_model_quantize run in a process of its own (the same
executable's hidden `quantize` command), so neither the daemon's loop nor its memory carries it;
progress read from llama.cpp's one log line per tensor; the result hashed into the blob store from a
temp file in the blobs dir, atomically."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import subprocess
import threading
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

from ollamalike.errors import OllamaError
from ollamalike.runner.process import self_command
from ollamalike.api.types import CreateRequest
from ollamalike.store.blobs import BlobStore
from ollamalike.store.create import create_model
from ollamalike.store.manifests import ManifestStore

log = logging.getLogger(__name__)
_TENSOR = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\s*\]")
PROGRESS_DIGEST = "0000000000000000000"  # what Ollama's quantize progress carries


class Quantizer:
    """Called by store.create with a source GGUF; yields progress, returns (digest, size)."""

    def __init__(self, blobs: BlobStore, cancel: threading.Event | None = None):
        self.blobs = blobs
        self.cancel = cancel or threading.Event()

    def __call__(self, source: Path, ftype: int, status: str) -> Generator[dict[str, Any], None, tuple[str, int]]:
        total = source.stat().st_size
        self.blobs.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.blobs.dir / f".tmp-quantize-{os.getpid()}-{threading.get_ident()}-partial"
        cmd = self_command() + ["quantize", str(source), str(tmp), str(ftype), "--watch-stdin"]
        tail: collections.deque[str] = collections.deque(maxlen=8)
        finished = threading.Event()
        proc: subprocess.Popen | None = None
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, errors="replace", start_new_session=True)
            killer = threading.Thread(target=self._kill_on_cancel, args=(proc, finished), daemon=True)
            killer.start()
            log.info("%s: %s (pid %d)", status, source.name, proc.pid)
            yield {"status": status, "digest": PROGRESS_DIGEST, "total": total, "completed": 0}
            last = 0
            assert proc.stderr is not None
            for line in proc.stderr:
                tail.append(line.rstrip())
                m = _TENSOR.match(line)
                if m and int(m.group(2)):
                    done = total * int(m.group(1)) // int(m.group(2))
                    if done - last >= total // 50 or done == total:  # about 50 updates in all
                        last = done
                        yield {"status": status, "digest": PROGRESS_DIGEST, "total": total, "completed": done}
            rc = proc.wait()
            if self.cancel.is_set():
                log.info("quantize of %s ended: the create was canceled", source.name)
                raise OllamaError("create canceled while quantizing")
            if rc != 0 or not tmp.is_file():
                said = "; ".join(x for x in tail if x and not x.startswith("llama_model_loader"))[-600:]
                raise OllamaError(f"quantizing {source.name} failed: {said or f'exit status {rc}'}")
            size = tmp.stat().st_size
            digest = self.blobs.adopt(tmp)
            return digest, size
        finally:
            finished.set()  # ends the killer thread
            if proc is not None:
                if proc.poll() is None:  # the create was abandoned mid-way
                    proc.kill()
                    proc.wait()
                for pipe in (proc.stdin, proc.stderr):
                    if pipe is not None:
                        pipe.close()
            tmp.unlink(missing_ok=True)

    def _kill_on_cancel(self, proc: subprocess.Popen, finished: threading.Event) -> None:
        while not finished.wait(0.2):
            if self.cancel.is_set():
                proc.kill()
                return


async def run_create(store: ManifestStore, req: CreateRequest) -> AsyncIterator[dict[str, Any]]:
    """The create's statuses, run in a worker thread. They are held back until its checks have passed
    (the first progress of a quantize, or the end), so that a bad request fails with its own status
    before any byte of the answer is sent. Leaving early ends a quantize under way."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
        except RuntimeError:  # the loop is closed: the daemon is shutting down
            cancel.set()

    def work() -> None:
        try:
            for status in create_model(store, req, Quantizer(store.blobs, cancel)):
                put("status", status)
                if cancel.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the request
            put("error", exc)
        else:
            put("end", None)

    worker = asyncio.ensure_future(asyncio.to_thread(work))
    held: list[dict[str, Any]] | None = []
    try:
        while True:
            kind, item = await queue.get()
            if kind == "error":
                raise item
            if kind == "end":
                break
            if held is not None and "total" not in item:
                held.append(item)
                continue
            for status in held or ():
                yield status
            held = None
            yield item
        for status in held or ():
            yield status
    finally:
        cancel.set()  # a client gone mid-quantize: the quantize process is ended, nothing stored
        if worker.done():
            worker.result()
