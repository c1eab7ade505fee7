"""What a pull reads from, apart from the Hub client itself (which lives in hub/pull.py): the file
record, the directory mirror for air-gapped teams, and choosing the GGUF a quantization tag names."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ollamalike.errors import NotFound

SPLIT_RE = re.compile(r"^(?P<base>.*)-(?P<n>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
# Tried in order when a repo has no file for the requested (or default) quantization.
FALLBACK_QUANTS = ["Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS", "F16", "BF16"]


@dataclass(frozen=True)
class RemoteFile:
    path: str  # path inside the repo
    size: int | None = None
    sha256: str | None = None  # hex; the LFS oid on the Hub


class Source(Protocol):
    """Where weights come from. `fetch` appends the bytes from offset `resume` on to `out`."""

    def describe(self) -> str: ...

    def list_files(self, repo: str, revision: str) -> list[RemoteFile]: ...

    def metadata(self, repo: str, path: str, revision: str) -> RemoteFile: ...

    def fetch(self, repo: str, path: str, revision: str, out: BinaryIO, resume: int, size: int | None) -> None: ...


class DirSource:
    """A directory laid out like the Hub: `<root>/<org>/<repo>/<file>`. Digests come from a
    `<file>.sha256` sidecar when there is one, else from hashing the mirror's file."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def describe(self) -> str:
        return f"mirror {self.root}"

    def _repo(self, repo: str) -> Path:
        d = self.root / repo
        if ".." in Path(repo).parts or not d.is_dir():
            raise NotFound(f"repository '{repo}' not found in the mirror {self.root}")
        return d

    def list_files(self, repo: str, revision: str) -> list[RemoteFile]:
        d = self._repo(repo)
        return [RemoteFile(p.relative_to(d).as_posix(), p.stat().st_size)
                for p in sorted(d.rglob("*")) if p.is_file() and not p.name.endswith(".sha256")]

    def metadata(self, repo: str, path: str, revision: str) -> RemoteFile:
        p = self._repo(repo) / path
        if not p.is_file():
            raise NotFound(f"file '{path}' not found in the mirror's {repo}")
        side = p.with_name(p.name + ".sha256")
        if side.is_file():
            digest = side.read_text().split()[0].lower()
        else:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            digest = h.hexdigest()
        return RemoteFile(path, p.stat().st_size, digest)

    def fetch(self, repo: str, path: str, revision: str, out: BinaryIO, resume: int, size: int | None) -> None:
        with open(self._repo(repo) / path, "rb") as f:
            f.seek(resume)
            shutil.copyfileobj(f, out, 1 << 20)


def _stem(path: str) -> tuple[str, int]:
    """(name without split suffix and `.gguf`, split number or 0)."""
    name = path.rsplit("/", 1)[-1]
    m = SPLIT_RE.match(name)
    if m:
        return m.group("base"), int(m.group("n"))
    return name[:-5] if name.lower().endswith(".gguf") else name, 0


def _matches(path: str, quant: str) -> bool:
    stem, _ = _stem(path)
    folder = path.rsplit("/", 1)[0].lower() if "/" in path else ""
    s = stem.lower()
    q = quant.lower()
    spellings = {q, "fp16", "f16"} if q in ("f16", "fp16") else {q, "fp32", "f32"} if q in ("f32", "fp32") else {q}
    return any(s == x or folder == x or any(s.endswith(sep + x) for sep in "-._") for x in spellings)


def choose_gguf(files: list[RemoteFile], quant: str | None, where: str) -> tuple[str, list[RemoteFile]]:
    """The quantization picked and its file (or its splits, in order) among a repo's files.
    `quant` None means the default (Q4_K_M, else the first of FALLBACK_QUANTS present, else the first)."""
    ggufs = [f for f in files if f.path.lower().endswith(".gguf") and "mmproj" not in f.path.lower()]
    if not ggufs:
        raise NotFound(f"pull model manifest: no GGUF files in {where}")
    wanted = [quant] if quant else FALLBACK_QUANTS
    for q in wanted:
        hits = [f for f in ggufs if _matches(f.path, q)]
        if hits:
            first = min(hits, key=lambda f: (_stem(f.path)[1] > 1, f.path))
            base, n = _stem(first.path)
            if n:  # the splits of that one file, in order
                group = sorted((f for f in hits if _stem(f.path)[0] == base), key=lambda f: _stem(f.path)[1])
                return q.upper(), group
            return q.upper(), [first]
    if quant:
        have = sorted({_label(f.path) for f in ggufs})
        raise NotFound(f"pull model manifest: no '{quant}' quantization in {where}; it has: {', '.join(have)}")
    return _label(ggufs[0].path), [ggufs[0]]


def choose_projector(files: list[RemoteFile]) -> list[RemoteFile]:
    """A vision repo's projector (an mmproj GGUF; F16 preferred, as llama.cpp's -hf does), or none."""
    projs = [f for f in files if f.path.lower().endswith(".gguf") and "mmproj" in f.path.lower()]
    if not projs:
        return []
    return [min(projs, key=lambda f: (not _matches(f.path, "f16"), not _matches(f.path, "q8_0"), f.path))]


def _label(path: str) -> str:
    stem, _ = _stem(path)
    m = re.search(r"(?i)(?:^|[-._])((?:UD-)?(?:I?Q\d\w*|BF16|FP16|F16|FP32|F32))$", stem)
    return m.group(1).upper() if m else stem
