"""Manifests in Ollama's layout (`manifests/<host>/<namespace>/<model>/<tag>`) and the models they
describe. Lookups are case-insensitive; writes are atomic; deleting removes the model's own blobs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ollamalike.errors import BadRequest, model_not_found
from ollamalike.names import Name
from ollamalike.store.blobs import BlobStore

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
_IMAGE = "application/vnd.ollama.image."
MODEL, TEMPLATE, SYSTEM, PARAMS = _IMAGE + "model", _IMAGE + "template", _IMAGE + "system", _IMAGE + "params"
MESSAGES, LICENSE, ADAPTER, PROJECTOR = (
    _IMAGE + "messages", _IMAGE + "license", _IMAGE + "adapter", _IMAGE + "projector")
# a model served by OpenAI-compatible upstream servers instead of weights: {"upstreams": [{url, model, ...}]}
UPSTREAM = "application/vnd.ollamalike.upstream+json"
# the weights of a draft model given as a GGUF file (Modelfile DRAFT path); DRAFT naming a model is in the config
DRAFT = "application/vnd.ollamalike.draft"


def digests_of(manifest: dict[str, Any]) -> set[str]:
    """The blobs a manifest names: its config and every layer."""
    out = {(manifest.get("config") or {}).get("digest", "")}
    out.update(x.get("digest", "") for x in manifest.get("layers", []))
    return out - {""}


def layer(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def new_manifest(config: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": config, "layers": layers}


@dataclass
class Model:
    """A local model: its manifest and the contents of its small layers."""

    name: Name
    manifest: dict[str, Any]
    digest: str  # hex sha256 of the manifest file (the model ID)
    modified_at: datetime
    config: dict[str, Any] = field(default_factory=dict)
    model_path: Path | None = None  # the first (or only) GGUF
    model_paths: list[Path] = field(default_factory=list)  # every split, in order
    model_digest: str | None = None
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    adapters: list[Path] = field(default_factory=list)
    upstreams: list[dict[str, Any]] = field(default_factory=list)  # see api/upstream.py
    projectors: list[Path] = field(default_factory=list)  # vision projector (mmproj) GGUFs
    draft_path: Path | None = None  # a draft model's GGUF (DRAFT given as a file)

    @property
    def size(self) -> int:
        return sum(int(x.get("size", 0)) for x in self.manifest.get("layers", [])) + int(
            self.manifest.get("config", {}).get("size", 0))


class ManifestStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.dir = self.root / "manifests"
        self.blobs = BlobStore(self.root)
        self._cache: dict[Path, tuple[tuple[int, int, int], Model]] = {}  # manifest path -> (stat key, model)

    # --- lookup -------------------------------------------------------------------------
    def _all_paths(self) -> list[tuple[Name, Path]]:
        out = []
        if not self.dir.is_dir():
            return out
        for p in sorted(self.dir.glob("*/*/*/*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            host, ns, model, tag = p.relative_to(self.dir).parts
            try:
                out.append((Name.parse(f"{host}/{ns}/{model}:{tag}"), p))
            except Exception:
                continue
        return out

    def find(self, name: str | Name) -> tuple[Name, Path] | None:
        """The stored name and manifest path matching `name`, case-insensitively."""
        n = name if isinstance(name, Name) else Name.parse(name)
        exact = self.dir / n.manifest_relpath()
        try:
            if exact.is_file():
                return n, exact
        except OSError:  # a part longer than the filesystem allows: no such model can exist
            return None
        want = tuple(x.lower() for x in n.parts())
        for stored, path in self._all_paths():
            if tuple(x.lower() for x in stored.parts()) == want:
                return stored, path
        return None

    def load(self, name: str | Name) -> Model:
        found = self.find(name)
        if found is None:
            raise model_not_found(str(name))
        return self._load(*found)

    def _load(self, name: Name, path: Path) -> Model:
        """The model a manifest describes, read once per version of the file: every request looks its
        model up, and reading the manifest and its small layers each time cost half a millisecond.
        Writes replace the file (a new inode), so a changed manifest is never served from the cache."""
        st = path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key and cached[1].name == name:
            return cached[1]
        m = self._read(name, path)
        self._cache[path] = (key, m)
        return m

    def _read(self, name: Name, path: Path) -> Model:
        data = path.read_bytes()
        manifest = json.loads(data)
        m = Model(
            name=name, manifest=manifest, digest=hashlib.sha256(data).hexdigest(),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))
        cfg = manifest.get("config") or {}
        if cfg.get("digest") and self.blobs.exists(cfg["digest"]):
            m.config = json.loads(self.blobs.path(cfg["digest"]).read_text())
        for lay in manifest.get("layers", []):
            mt, digest = lay.get("mediaType"), lay.get("digest", "")
            p = self.blobs.path(digest)
            if mt == MODEL:
                if m.model_path is None:
                    m.model_path, m.model_digest = p, digest
                m.model_paths.append(p)
            elif mt == ADAPTER:
                m.adapters.append(p)
            elif mt == PROJECTOR:
                m.projectors.append(p)
            elif mt == DRAFT:
                m.draft_path = p
            elif mt == TEMPLATE:
                m.template = p.read_text()
            elif mt == SYSTEM:
                m.system = p.read_text()
            elif mt == PARAMS:
                m.params = json.loads(p.read_text())
            elif mt == MESSAGES:
                m.messages = json.loads(p.read_text())
            elif mt == LICENSE:
                m.licenses.append(p.read_text())
            elif mt == UPSTREAM:
                m.upstreams = list(json.loads(p.read_text()).get("upstreams") or [])
        return m

    def list(self) -> list[Model]:
        models = []
        for name, path in self._all_paths():
            try:
                models.append(self._load(name, path))
            except (OSError, ValueError):
                continue  # a broken manifest must not hide the others
        return models

    # --- changes ------------------------------------------------------------------------
    def write(self, name: Name, manifest: dict[str, Any]) -> Path:
        """Atomically write the manifest; every blob it names must already be stored."""
        for d in [manifest["config"]["digest"]] + [x["digest"] for x in manifest["layers"]]:
            self.blobs.require(d)
        found = self.find(name)
        path = found[1] if found else self.dir / name.manifest_relpath()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # never show a filesystem path to the caller
                raise BadRequest(f"invalid model name: '{name.display()}' is too long") from None
            raise
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(manifest, f, separators=(",", ":"))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def copy(self, source: str, destination: str) -> Name:
        src = self.load(source)
        dst = Name.parse(destination)
        self.write(dst, src.manifest)
        return dst

    def delete(self, name: str) -> Name:
        """Remove the manifest and those of its own blobs no other manifest uses (as Ollama does);
        other unreferenced blobs (an upload waiting for its create) are left alone."""
        found = self.find(name)
        if found is None:
            raise model_not_found(name)
        stored, path = found
        try:
            own = digests_of(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            own = set()
        path.unlink()
        self._cache.pop(path, None)
        parent = path.parent
        while parent != self.dir and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
        self.drop_unused(own)
        return stored

    def drop_unused(self, digests: set[str]) -> None:
        """Remove those of `digests` that no manifest references any more."""
        for digest in digests - self.referenced():
            self.blobs.remove(digest)

    def referenced(self) -> set[str]:
        refs = set()
        for _, path in self._all_paths():
            try:
                manifest = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            refs |= digests_of(manifest)
        return refs

    def prune(self, startup: bool = False) -> None:
        """Remove blobs no manifest references; at startup also leftover temp files."""
        refs = self.referenced()
        for digest in self.blobs.all_digests() - refs:
            self.blobs.remove(digest)
        if startup and self.blobs.dir.is_dir():
            for p in self.blobs.dir.glob(".tmp-*"):
                p.unlink(missing_ok=True)
