"""Content-addressed blob store: `blobs/sha256-<hex>`, written to a temp file while hashing, then
renamed into place only once the digest is known (and verified when one was expected)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

from ollamalike.errors import BadRequest, NotFound, OllamaError

DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
CHUNK = 1 << 20


def normalize_digest(digest: str) -> str:
    """`sha256:<hex>` (lowercase) from `sha256:` or `sha256-` forms; 400 otherwise."""
    m = DIGEST_RE.match(digest or "")
    if not m:
        raise BadRequest("invalid digest format")
    return f"sha256:{m.group(1).lower()}"


class BlobStore:
    def __init__(self, root: Path):
        self.dir = Path(root) / "blobs"

    def path(self, digest: str) -> Path:
        return self.dir / normalize_digest(digest).replace(":", "-")

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def require(self, digest: str) -> Path:
        p = self.path(digest)
        if not p.is_file():
            raise NotFound(f'blob "{normalize_digest(digest)}" not found')
        return p

    def _tmp(self) -> tuple[int, str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix="-partial")

    def _commit(self, tmp: str, actual: str, expected: str | None) -> str:
        if expected is not None and actual != normalize_digest(expected):
            os.unlink(tmp)
            raise BadRequest(f'digest mismatch, expected "{normalize_digest(expected)}", got "{actual}"')
        dest = self.path(actual)
        if dest.exists():
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        return actual

    def write_bytes(self, data: bytes) -> str:
        """Store `data`; return its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest
        fd, tmp = self._tmp()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException as exc:
            os.unlink(tmp)
            _reraise(exc, self.dir)
        return self._commit(tmp, digest, None)

    async def write_stream(self, chunks: AsyncIterator[bytes], expected: str | None = None) -> str:
        """Store an upload, hashing as it arrives; a mismatch with `expected` stores nothing."""
        fd, tmp = self._tmp()
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    h.update(chunk)
                    f.write(chunk)
        except BaseException as exc:
            os.unlink(tmp)
            _reraise(exc, self.dir)
        return self._commit(tmp, "sha256:" + h.hexdigest(), expected)

    def adopt(self, path: Path) -> str:
        """Store a finished file written in the blobs dir (a temp name there): hashed, then renamed
        into place, so a half-written one is never a blob."""
        return self._commit(str(path), file_digest(path), None)

    def all_digests(self) -> set[str]:
        if not self.dir.is_dir():
            return set()
        out = set()
        for p in self.dir.iterdir():
            m = DIGEST_RE.match(p.name)
            if m and p.is_file():
                out.add(f"sha256:{m.group(1).lower()}")
        return out

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)


def _reraise(exc: BaseException, where: Path) -> NoReturn:
    """A failed write (full disk, file size limit, I/O error) as the daemon's own clear error; the
    temporary file is already gone. Anything else (a cancelled upload, a bad digest) as it was."""
    if isinstance(exc, OSError):
        raise OllamaError(f"writing a blob in {where}: {(exc.strerror or str(exc)).lower()}") from exc
    raise exc


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
