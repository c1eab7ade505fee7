"""The curated catalog (`registry/catalog.json` at the top of the source tree, packaged as
`ollamalike/registry/catalog.json`; its schema is `registry/README.md`): which Hugging Face repo and
GGUF file a name like `llama3.2:1b` or `llama3.2:1b-instruct-q8_0` pulls, with license and overrides.
Stdlib only.

Tags of a model: `latest` (the default size), each size key `S` (its default quantization, Q4_K_M
unless the entry says otherwise), `S-Q` and `S-<variant>-Q` where Q is written the Ollama way
(`q4_K_M`, `q8_0`, `fp16`), plus any `aliases` of S. A size key may carry a variant of its own
(`8b-llama-distill`) so one size can have two sources. Lookups are case-insensitive.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DEFAULT_QUANT = "Q4_K_M"
SCHEMA = 1
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")  # names.py's rule for a tag
_TOP_KEYS = {"schema", "comment", "models"}
_MODEL_KEYS = {"description", "license", "latest", "variant", "template", "system", "params", "sizes"}
_SIZE_KEYS = {"repo", "files", "default_quant", "variant", "aliases", "license", "template", "system", "params",
              "projector"}


def builtin() -> "Traversable":
    """The built-in catalog file. Run from a source checkout (an editable install, or PYTHONPATH set
    to it), the checkout's own `registry/catalog.json`; installed from a wheel or frozen into the
    single executable, the copy packaged beside the code as `ollamalike/registry/catalog.json`."""
    root = Path(__file__).resolve().parents[2]
    checkout = root / "registry" / "catalog.json"
    if (root / "pyproject.toml").is_file() and checkout.is_file():
        return checkout
    # files("ollamalike") rather than files("ollamalike.registry"): the executable carries the JSON
    # as data under ollamalike/registry without that package's module
    return importlib.resources.files("ollamalike") / "registry" / "catalog.json"


def quant_tag(quant: str) -> str:
    """`Q4_K_M` -> `q4_K_M`, `F16` -> `fp16`, `BF16` -> `bf16`: Ollama's spelling in tags."""
    q = quant.upper()
    if q in ("F16", "F32"):
        return "fp" + q[1:]
    if q == "BF16":
        return "bf16"
    return "q" + quant[1:] if q.startswith("Q") else quant.lower()


@dataclass(frozen=True)
class Entry:
    """What one `model:tag` pulls."""

    model: str
    tag: str
    repo: str
    quant: str
    files: tuple[str, ...]  # one GGUF, or the splits of one in order
    license: str = ""
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    projector: str | None = None  # a vision model's mmproj GGUF in the same repo


class CatalogError(ValueError):
    pass


def tags_of(model: dict[str, Any], size: str, quant: str) -> list[str]:
    """The tags naming (size, quant) of one catalog model."""
    s = model["sizes"][size]
    variant = s.get("variant", model.get("variant"))
    names = [f"{size}-{quant_tag(quant)}"]
    if variant:
        names.append(f"{size}-{variant}-{quant_tag(quant)}")
    if quant == s.get("default_quant", DEFAULT_QUANT):
        names += [size, *s.get("aliases", [])]
        if size == model["latest"]:
            names.append("latest")
    return names


class Catalog:
    def __init__(self, data: dict[str, Any]):
        validate(data)
        self.data = data
        self._tags: dict[tuple[str, str], Entry] = {}
        for model, m in data["models"].items():
            for size, s in m["sizes"].items():
                for quant, files in s["files"].items():
                    entry = Entry(model=model, tag=size, repo=s["repo"], quant=quant,
                                  files=tuple(files if isinstance(files, list) else [files]),
                                  license=s.get("license", m.get("license", "")),
                                  template=s.get("template", m.get("template")),
                                  system=s.get("system", m.get("system")),
                                  params={**m.get("params", {}), **s.get("params", {})},
                                  projector=s.get("projector"))
                    for tag in tags_of(m, size, quant):
                        key = (model.lower(), tag.lower())
                        if key in self._tags:
                            raise CatalogError(f"{model}: tag '{tag}' names two entries")
                        self._tags[key] = Entry(**{**entry.__dict__, "tag": tag})

    @classmethod
    def load(cls, *paths: Path | str) -> "Catalog":
        """The built-in catalog, with the models of each extra file (e.g. a team's own) laid over it."""
        data = json.loads(builtin().read_text(encoding="utf-8"))
        for p in paths:
            extra = json.loads(Path(p).read_text(encoding="utf-8"))
            validate(extra)
            data["models"].update(extra["models"])
        return cls(data)

    @classmethod
    def from_file(cls, path: Path | str) -> "Catalog":
        """One catalog file on its own (registry/verify.py checks a file this way)."""
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def names(self) -> list[str]:
        return sorted({f"{e.model}:{e.tag}" for e in self._tags.values()})

    def models(self) -> list[str]:
        return sorted(self.data["models"])

    def resolve(self, model: str, tag: str) -> Entry | None:
        return self._tags.get((model.lower(), tag.lower()))

    def suggest(self, model: str, tag: str, n: int = 3) -> list[str]:
        """Close catalog names for a miss: other tags of a known model, else similar model names."""
        if model.lower() in {m.lower() for m in self.models()}:
            sizes = self.data["models"][next(m for m in self.models() if m.lower() == model.lower())]["sizes"]
            tags = [f"{model}:{s}" for s in sizes]
            return difflib.get_close_matches(f"{model}:{tag}", tags, n=n, cutoff=0) or tags[:n]
        return difflib.get_close_matches(model.lower(), self.models(), n=n, cutoff=0.5)


def validate(data: Any) -> None:
    """Raise CatalogError unless `data` follows the catalog schema (registry/README.md)."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise CatalogError(msg)

    def text(obj: dict[str, Any], key: str, where: str, nullable: bool = False) -> None:
        if key in obj:
            ok = isinstance(obj[key], str) or (nullable and obj[key] is None)
            need(ok, f"{where}: '{key}' must be text")

    def known(obj: dict[str, Any], allowed: set[str], where: str) -> None:
        extra = sorted(set(obj) - allowed)
        need(not extra, f"{where}: unknown key {extra[0]!r}" if extra else "")

    def common(obj: dict[str, Any], where: str) -> None:
        for key in ("license", "variant"):
            text(obj, key, where)
        for key in ("template", "system"):
            text(obj, key, where, nullable=True)
        need(isinstance(obj.get("params", {}), dict), f"{where}: 'params' must be an object")
        if "variant" in obj:
            need(_TAG_RE.fullmatch(f"x-{obj['variant']}") is not None, f"{where}: bad variant {obj['variant']!r}")

    need(isinstance(data, dict) and isinstance(data.get("models"), dict), "catalog: 'models' must be an object")
    known(data, _TOP_KEYS, "catalog")
    need(data.get("schema", SCHEMA) == SCHEMA, f"catalog: schema {data.get('schema')!r} is not {SCHEMA}")
    for model, m in data["models"].items():
        need(_TAG_RE.fullmatch(model) is not None, f"catalog: bad model name {model!r}")
        need(isinstance(m, dict) and isinstance(m.get("sizes"), dict) and m["sizes"], f"{model}: 'sizes' missing")
        known(m, _MODEL_KEYS, model)
        need(m.get("latest") in m["sizes"], f"{model}: 'latest' must name one of its sizes")
        text(m, "description", model)
        common(m, model)
        for size, s in m["sizes"].items():
            where = f"{model}:{size}"
            need(_TAG_RE.fullmatch(size) is not None, f"{where}: bad size {size!r}")
            need(isinstance(s, dict), f"{where}: must be an object")
            known(s, _SIZE_KEYS, where)
            repo = s.get("repo", "")
            need(isinstance(repo, str) and repo.count("/") == 1 and all(repo.split("/")), f"{where}: bad repo {repo!r}")
            files = s.get("files")
            need(isinstance(files, dict) and files, f"{where}: 'files' missing")
            need(s.get("default_quant", DEFAULT_QUANT) in files, f"{where}: no file for its default quantization")
            for quant, f in files.items():
                need(_TAG_RE.fullmatch(quant) is not None, f"{where}: bad quantization {quant!r}")
                flist = f if isinstance(f, list) else [f]
                need(bool(flist) and all(isinstance(x, str) and x.endswith(".gguf") for x in flist),
                     f"{where}: {quant} is not a .gguf")
            proj = s.get("projector")
            need(proj is None or (isinstance(proj, str) and proj.endswith(".gguf")),
                 f"{where}: 'projector' must be a .gguf file")
            aliases = s.get("aliases", [])
            need(isinstance(aliases, list) and all(isinstance(a, str) and _TAG_RE.fullmatch(a) for a in aliases),
                 f"{where}: 'aliases' must be a list of tags")
            common(s, where)
