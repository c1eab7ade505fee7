"""Pulling a model: resolve the name (catalog or `hf.co/org/repo:quant`), download each GGUF through
huggingface_hub (the only importer of it, so HF_ENDPOINT, HF_TOKEN and proxies apply) straight into
the blob store as `blobs/sha256-<hex>-partial`, verify its sha256 against the Hub's LFS digest, rename
it into place, then write the manifest the way `ollamalike create` does for a GGUF.

Why not `hf_hub_download`: since huggingface_hub 1.x it downloads to a process-unique temp file that
is deleted when the download fails, so a pull interrupted by a restart would start over, and its cache
would hold a second copy. `http_get` with `resume_size` keeps the Hub client's HTTP stack (retries,
Range resume within a call, auth headers, proxies) and lets the partial file survive anything.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ollamalike import config
from ollamalike.api.types import CreateRequest
from ollamalike.errors import BadRequest, NotFound, OllamaError
from ollamalike.hub.catalog import Catalog
from ollamalike.hub.sources import DirSource, RemoteFile, Source, choose_gguf, choose_projector
from ollamalike.names import Name
from ollamalike.store.blobs import file_digest
from ollamalike.store.create import create_model
from ollamalike.store.manifests import ManifestStore, digests_of

log = logging.getLogger(__name__)
HF_HOSTS = ("hf.co", "huggingface.co")
PROGRESS_EVERY = 0.1  # seconds between progress lines of one layer


class _Quiet:
    """A tqdm stand-in: the daemon reports progress itself."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: float | None = 1) -> None:
        pass

    def close(self) -> None:
        pass


class HubSource:
    """The Hugging Face Hub, or anything that answers like it (`endpoint`, e.g. an HTTP mirror)."""

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.token = token

    def describe(self) -> str:
        from huggingface_hub import constants

        return self.endpoint or constants.ENDPOINT

    def list_files(self, repo: str, revision: str) -> list[RemoteFile]:
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        api = HfApi(endpoint=self.endpoint, token=self.token)
        with _hub_errors(repo):
            items = list(api.list_repo_tree(repo, revision=revision, recursive=True))
        return [RemoteFile(x.path, x.size, x.lfs.sha256 if x.lfs else None) for x in items if isinstance(x, RepoFile)]

    def metadata(self, repo: str, path: str, revision: str) -> RemoteFile:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        with _hub_errors(repo, path):
            meta = get_hf_file_metadata(hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint),
                                        token=self.token, endpoint=self.endpoint)
        etag = (meta.etag or "").lower()
        return RemoteFile(path, meta.size, etag if len(etag) == 64 else None)

    def fetch(self, repo: str, path: str, revision: str, out: BinaryIO, resume: int, size: int | None) -> None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint)
        with _hub_errors(repo, path):
            http_get(url, out, resume_size=resume, headers=build_hf_headers(token=self.token),
                     expected_size=size, displayed_filename=path, tqdm_class=_Quiet)


# errors of writing the download locally (full disk, quota, size limit, read-only store)
_LOCAL_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


class _hub_errors:
    """Hub client exceptions -> errors in the daemon's words."""

    def __init__(self, repo: str, path: str | None = None):
        self.repo, self.path = repo, path

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, OllamaError):
            return False
        from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, RepositoryNotFoundError,
                                            RevisionNotFoundError)

        if isinstance(exc, GatedRepoError):
            raise OllamaError(f"pull model manifest: '{self.repo}' is gated on Hugging Face; accept its license "
                              "on the website and set HF_TOKEN") from None
        if isinstance(exc, RepositoryNotFoundError):
            raise NotFound(f"pull model manifest: repository '{self.repo}' not found on Hugging Face "
                           "(private repositories need HF_TOKEN)") from None
        if isinstance(exc, (EntryNotFoundError, RevisionNotFoundError)):
            raise NotFound(f"pull model manifest: file '{self.path}' not found in '{self.repo}'") from None
        if self.path is None:
            raise OllamaError(f"pull model manifest: {exc}") from None
        if isinstance(exc, OSError) and exc.errno in _LOCAL_WRITE:  # our disk, not the network
            raise OllamaError(f"writing {self.path}: {(exc.strerror or str(exc)).lower()} "
                              "(the part already downloaded is kept; pull again to resume)") from None
        raise OllamaError(f"max retries exceeded: {exc}") from None


def default_source() -> Source:
    """The Hub, unless OLLAMALIKE_HF_MIRROR names a directory or an HTTP base URL to use instead."""
    mirror = config.hf_mirror()
    if mirror.startswith(("http://", "https://")):
        return HubSource(endpoint=mirror)
    if mirror:
        return DirSource(Path(mirror).expanduser())
    return HubSource()


@dataclass
class Plan:
    """What a pull will fetch and how the model is then created."""

    name: Name
    repo: str
    files: list[RemoteFile]  # with sha256 and size, in layer order
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    revision: str = "main"


class _Counter:
    """The file a download writes to, counting the bytes for progress reports."""

    def __init__(self, f: BinaryIO, done: int):
        self.f, self.done = f, done

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.done += len(data)
        return n

    def truncate(self, size: int | None = None) -> int:
        n = self.f.truncate(size)
        self.done = self.f.tell() if size is None else size
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


class Puller:
    def __init__(self, store: ManifestStore, source: Source | None = None, catalog: Catalog | None = None):
        self.store = store
        self.source = source
        self.catalog = catalog
        self._tasks: dict[str, asyncio.Task] = {}  # digest -> the one download of it
        self._counters: dict[str, _Counter] = {}

    def _source(self) -> Source:
        return self.source or default_source()

    def _catalog(self) -> Catalog:
        if self.catalog is None:
            extra = config.catalog_path()
            self.catalog = Catalog.load(*([extra] if extra else []))
        return self.catalog

    # --- resolving ----------------------------------------------------------------------
    def check_name(self, model: str) -> Name:
        """Parse and, for catalog names, look up `model` without touching the network."""
        name = Name.parse(model)
        if name.host.lower() in HF_HOSTS:
            return name
        if name.namespace.lower() != "library" or name.host.lower() != "registry.ollama.ai":
            raise BadRequest(f"pull model manifest: '{model}' is neither a catalog model nor hf.co/<org>/<repo>")
        cat = self._catalog()
        if cat.resolve(name.model, name.tag) is None:
            hint = cat.suggest(name.model, name.tag)
            did = f"; did you mean {', '.join(hint)}?" if hint else "; see registry/catalog.json"
            raise NotFound(f"pull model manifest: file does not exist: '{name.display()}' is not in the "
                           f"catalog{did} (any Hugging Face GGUF repo works as hf.co/<org>/<repo>[:quant])")
        return name

    def plan(self, name: Name) -> Plan:
        src = self._source()
        if name.host.lower() in HF_HOSTS:
            repo = f"{name.namespace}/{name.model}"
            quant = None if name.tag.lower() == "latest" else name.tag
            files = src.list_files(repo, "main")
            _, chosen = choose_gguf(files, quant, f"hf.co/{repo}")
            p = Plan(name=name, repo=repo, files=chosen + choose_projector(files))
        else:
            e = self._catalog().resolve(name.model, name.tag)
            assert e is not None
            p = Plan(name=name, repo=e.repo, files=[RemoteFile(f) for f in e.files + ((e.projector,) if e.projector else ())],
                     template=e.template,
                     system=e.system, params=dict(e.params), license=e.license)
        full = []
        for f in p.files:
            if not f.sha256 or f.size is None:
                meta = src.metadata(p.repo, f.path, p.revision)
                f = RemoteFile(f.path, meta.size if meta.size is not None else f.size, f.sha256 or meta.sha256)
            if not f.sha256:
                raise OllamaError(f"pull model manifest: {src.describe()} gave no sha256 for '{f.path}'; "
                                  "it cannot be verified")
            full.append(f)
        p.files = full
        return p

    # --- downloading --------------------------------------------------------------------
    def _partial(self, digest: str) -> Path:
        return self.store.blobs.dir / (digest.replace(":", "-") + "-partial")

    def _download_sync(self, plan: Plan, f: RemoteFile, digest: str) -> None:
        partial = self._partial(digest)
        partial.parent.mkdir(parents=True, exist_ok=True)
        resume = partial.stat().st_size if partial.exists() else 0
        if f.size is not None and resume > f.size:
            partial.unlink()
            resume = 0
        with open(partial, "ab") as out:
            counter = self._counters[digest] = _Counter(out, resume)
            if f.size is None or resume < f.size:
                self._source().fetch(plan.repo, f.path, plan.revision, counter, resume, f.size)
        actual = file_digest(partial)
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise OllamaError(f"digest mismatch, file must be downloaded again: want {digest}, got {actual}")
        os.chmod(partial, 0o644)
        os.replace(partial, self.store.blobs.path(digest))

    def _download(self, plan: Plan, f: RemoteFile, digest: str) -> asyncio.Task:
        """The running download of `digest`, started if none is: concurrent pulls share it."""
        task = self._tasks.get(digest)
        if task is None or task.done():
            task = asyncio.ensure_future(asyncio.to_thread(self._download_sync, plan, f, digest))
            self._tasks[digest] = task
            task.add_done_callback(lambda t, d=digest: (self._tasks.get(d) is t and self._tasks.pop(d, None),
                                                        self._counters.pop(d, None)))
        return task

    async def pull(self, model: str) -> AsyncIterator[dict[str, Any]]:
        """Yield Ollama's pull statuses; a bad or unknown name fails before the first one."""
        name = self.check_name(model)
        yield {"status": "pulling manifest"}
        plan = await asyncio.to_thread(self.plan, name)
        digests = [f"sha256:{f.sha256}" for f in plan.files]
        for f, digest in zip(plan.files, digests):
            status = f"pulling {f.sha256[:12]}"
            total = f.size or 0
            if self.store.blobs.exists(digest):
                yield {"status": status, "digest": digest, "total": total, "completed": total}
                continue
            task = self._download(plan, f, digest)
            last = -1
            while not task.done():
                await asyncio.wait([task], timeout=PROGRESS_EVERY)
                c = self._counters.get(digest)
                done = c.done if c else 0
                if done != last and not task.done():
                    last = done
                    yield {"status": status, "digest": digest, "total": total, "completed": min(done, total or done)}
            await asyncio.shield(task)  # raises a download or verification error
            yield {"status": status, "digest": digest, "total": total, "completed": total}
        yield {"status": "verifying sha256 digest"}
        for digest in digests:
            self.store.blobs.require(digest)
        before = self.store.find(name)
        old = before and self.store.load(before[0])
        req = CreateRequest.parse({
            "model": name.display_long(), "files": {f.path: d for f, d in zip(plan.files, digests)},
            "template": plan.template, "system": plan.system, "parameters": plan.params or None,
            "license": plan.license or None})
        statuses = await asyncio.to_thread(lambda: [s for s in create_model(self.store, req)])
        if "writing manifest" in (s["status"] for s in statuses):
            yield {"status": "writing manifest"}
        if old and old.manifest != self.store.load(name).manifest:
            yield {"status": "removing unused layers"}
            await asyncio.to_thread(self.store.drop_unused, digests_of(old.manifest))
        yield {"status": "success"}
