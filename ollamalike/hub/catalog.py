"""The curated catalog (`ollamalike/registry/catalog.json`): which Hugging Face repo and GGUF file a
name like `llama3.2:1b` or `llama3.2:1b-instruct-q8_0` pulls, with license and overrides. Stdlib only.

Tags of a model with sizes {S} and quantizations {Q}: `latest` (the default size), `S` (its default
quantization, Q4_K_M unless the entry says otherwise), `S-Q` and `S-<variant>-Q` where Q is written the
Ollama way (`q4_K_M`, `q8_0`, `fp16`), plus any `aliases` of S. Lookups are case-insensitive.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN = Path(__file__).resolve().parent.parent / "registry" / "catalog.json"
DEFAULT_QUANT = "Q4_K_M"


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


class CatalogError(ValueError):
    pass


class Catalog:
    def __init__(self, data: dict[str, Any]):
        validate(data)
        self.data = data
        self._tags: dict[tuple[str, str], Entry] = {}
        for model, m in data["models"].items():
            for size, s in m["sizes"].items():
                default_q = s.get("default_quant", DEFAULT_QUANT)
                variant = s.get("variant", m.get("variant"))
                for quant, files in s["files"].items():
                    entry = Entry(model=model, tag=size, repo=s["repo"], quant=quant,
                                  files=tuple(files if isinstance(files, list) else [files]),
                                  license=s.get("license", m.get("license", "")),
                                  template=s.get("template", m.get("template")),
                                  system=s.get("system", m.get("system")),
                                  params={**m.get("params", {}), **s.get("params", {})})
                    names = [f"{size}-{quant_tag(quant)}"]
                    if variant:
                        names.append(f"{size}-{variant}-{quant_tag(quant)}")
                    if quant == default_q:
                        names += [size, *s.get("aliases", [])]
                        if size == m["latest"]:
                            names.append("latest")
                    for tag in names:
                        self._tags[(model.lower(), tag.lower())] = Entry(**{**entry.__dict__, "tag": tag})

    @classmethod
    def load(cls, *paths: Path | str) -> "Catalog":
        """The built-in catalog, with the models of each extra file (e.g. a team's own) laid over it."""
        data = json.loads(BUILTIN.read_text())
        for p in paths:
            extra = json.loads(Path(p).read_text())
            validate(extra)
            data["models"].update(extra["models"])
        return cls(data)

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
    """Raise CatalogError unless `data` follows the catalog schema."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise CatalogError(msg)
    need(isinstance(data, dict) and isinstance(data.get("models"), dict), "catalog: 'models' must be an object")
    for model, m in data["models"].items():
        need(isinstance(m, dict) and isinstance(m.get("sizes"), dict) and m["sizes"], f"{model}: 'sizes' missing")
        need(m.get("latest") in m["sizes"], f"{model}: 'latest' must name one of its sizes")
        need(isinstance(m.get("license", ""), str), f"{model}: 'license' must be text")
        for size, s in m["sizes"].items():
            where = f"{model}:{size}"
            repo = s.get("repo", "")
            need(isinstance(repo, str) and repo.count("/") == 1 and all(repo.split("/")), f"{where}: bad repo {repo!r}")
            files = s.get("files")
            need(isinstance(files, dict) and files, f"{where}: 'files' missing")
            need(s.get("default_quant", DEFAULT_QUANT) in files, f"{where}: no file for its default quantization")
            for quant, f in files.items():
                flist = f if isinstance(f, list) else [f]
                need(all(isinstance(x, str) and x.endswith(".gguf") for x in flist), f"{where}: {quant} is not a .gguf")
            for key in ("template", "system"):
                need(isinstance(s.get(key, m.get(key, "")), (str, type(None))), f"{where}: {key} must be text")
            need(isinstance(s.get("params", {}), dict), f"{where}: params must be an object")
