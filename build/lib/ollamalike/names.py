"""Model names of the form ``[scheme://][host/][namespace/]model[:tag][@digest]``.

The grammar follows Ollama's model naming rules (see ``ollama.md`` section 4):

* host       ``[A-Za-z0-9_][A-Za-z0-9_.:-]*``, 1 to 350 characters (``host:port`` allowed)
* namespace  ``[A-Za-z0-9_][A-Za-z0-9_-]*``, 1 to 80 characters (no dots)
* model, tag ``[A-Za-z0-9_][A-Za-z0-9_.-]*``, 1 to 80 characters

Missing parts take the defaults ``registry.ollama.ai`` / ``library`` / ``latest``.
A ``:tag`` is only recognised when the last ``:`` comes after the last ``/``, so
``localhost:5000/ns/model`` keeps its port.  Every part is validated so that a
parsed name can always be used as a relative path below a models directory: no
part is empty, contains a separator, starts with a dot or contains ``..``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ollamalike.errors import BadRequest

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_MODEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_TAG_RE = _MODEL_RE
_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_SCHEMES = ("https://", "http://")

_INVALID = "invalid model name"


def _valid(pattern: re.Pattern[str], part: str) -> bool:
    """Report whether ``part`` fully matches ``pattern`` and holds no ``..``."""
    return pattern.fullmatch(part) is not None and ".." not in part


@dataclass(frozen=True)
class Name:
    """A fully qualified model name; build one with :meth:`Name.parse`.

    ``digest`` holds an optional ``sha256:<hex>`` suffix given after ``@``; it
    does not take part in :meth:`display`, :meth:`parts` or the manifest path.
    """

    host: str
    namespace: str
    model: str
    tag: str
    digest: str | None = None

    def __post_init__(self) -> None:
        """Reject parts that break the grammar, also when built directly."""
        if not (
            isinstance(self.host, str)
            and isinstance(self.namespace, str)
            and isinstance(self.model, str)
            and isinstance(self.tag, str)
            and _valid(_HOST_RE, self.host)
            and _valid(_NAMESPACE_RE, self.namespace)
            and _valid(_MODEL_RE, self.model)
            and _valid(_TAG_RE, self.tag)
        ):
            raise BadRequest(_INVALID)
        if self.digest is not None and (
            not isinstance(self.digest, str) or _DIGEST_RE.fullmatch(self.digest) is None
        ):
            raise BadRequest(_INVALID)

    @classmethod
    def parse(cls, s: str) -> "Name":
        """Parse ``s`` into a :class:`Name`, filling in default parts.

        Raises ``BadRequest("invalid model name")`` for anything that does not
        follow the grammar (empty input, empty parts, more than three
        ``/``-separated parts, backslashes, ``..``, illegal characters, bad
        digest).
        """
        if not isinstance(s, str) or not s:
            raise BadRequest(_INVALID)
        rest = s
        lowered = rest.lower()
        for scheme in _SCHEMES:
            if lowered.startswith(scheme):
                rest = rest[len(scheme):]
                break

        digest = None
        if "@" in rest:
            rest, _, raw_digest = rest.rpartition("@")
            match = _DIGEST_RE.fullmatch(raw_digest)
            if match is None:
                raise BadRequest(_INVALID)
            digest = "sha256:" + match.group(1).lower()

        tag = DEFAULT_TAG
        colon, slash = rest.rfind(":"), rest.rfind("/")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]

        pieces = rest.split("/")
        if len(pieces) == 1:
            host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, pieces[0]
        elif len(pieces) == 2:
            host, (namespace, model) = DEFAULT_HOST, pieces
        elif len(pieces) == 3:
            host, namespace, model = pieces
        else:
            raise BadRequest(_INVALID)
        return cls(host=host, namespace=namespace, model=model, tag=tag, digest=digest)

    def parts(self) -> tuple[str, str, str, str]:
        """Return ``(host, namespace, model, tag)``."""
        return (self.host, self.namespace, self.model, self.tag)

    def display(self) -> str:
        """Return the shortest display form (Ollama's ``DisplayShortest``).

        The default host is dropped, and so is the default namespace when the
        host is the default one: ``llama3.2:latest``, ``user/model:tag``,
        ``hf.co/user/repo:Q4_K_M``.  The tag is always shown.
        """
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def display_long(self) -> str:
        """Return the fully qualified form ``host/namespace/model:tag``."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def __str__(self) -> str:
        """Same as :meth:`display`."""
        return self.display()

    def manifest_relpath(self) -> PurePosixPath:
        """Return ``host/namespace/model/tag`` as a relative POSIX path.

        Safe to join below a manifests directory: every part is validated, so
        the path is never absolute and never contains ``..``.
        """
        return PurePosixPath(self.host, self.namespace, self.model, self.tag)

    def fold_key(self) -> tuple[str, str, str, str]:
        """Return the lower-cased parts, for case-insensitive comparisons."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def equal_fold(self, other: "Name") -> bool:
        """Compare two names case-insensitively, ignoring digests."""
        return self.fold_key() == other.fold_key()
