"""The curated catalog (registry/): its schema, the tags it answers, Ollama's defaults, where the
package finds it (checkout, wheel), and registry/verify.py against the Hub look-alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from ollamalike.hub.catalog import Catalog, CatalogError, builtin, validate
from ollamalike.hub.sources import RemoteFile, choose_gguf
from tests.conftest import ROOT
from tests.fakehub import FakeHub

MODELS = ("llama3.2", "llama3.1", "qwen2.5", "qwen2.5-coder", "qwen3", "gemma3", "phi3", "phi4-mini",
          "mistral", "smollm2", "tinyllama", "deepseek-r1", "nomic-embed-text", "all-minilm")


def resolve(cat: Catalog, name: str):
    e = cat.resolve(*name.split(":"))
    assert e is not None, name
    return e


def test_catalog_schema_and_uniqueness():
    cat = Catalog.load()
    for model in MODELS:
        assert cat.resolve(model, "latest"), model
    for name in ("llama3.2:1b", "llama3.2:3b", "qwen2.5:0.5b", "llama3.2:1b-instruct-q8_0", "gemma3:1b-it-q4_K_M"):
        assert cat.resolve(*name.split(":")), name
    e = resolve(cat, "llama3.2:1b-instruct-q8_0")
    assert e.repo == "bartowski/Llama-3.2-1B-Instruct-GGUF" and e.files == ("Llama-3.2-1B-Instruct-Q8_0.gguf",)
    # one (repo, file) never appears under two sizes; every file's name carries its quantization
    seen = {}
    for model, m in cat.data["models"].items():
        for size, s in m["sizes"].items():
            for quant, f in s["files"].items():
                key = (s["repo"], f)
                assert seen.setdefault(key, (model, size)) == (model, size), key
                assert choose_gguf([RemoteFile(x) for x in s["files"].values()], quant, s["repo"])[1][0].path == f


@pytest.mark.parametrize("name, quant, file", [
    ("llama3.2:1b", "Q8_0", "Llama-3.2-1B-Instruct-Q8_0.gguf"),
    ("llama3.2:3b", "Q4_K_M", "Llama-3.2-3B-Instruct-Q4_K_M.gguf"),
    ("gemma3:270m", "Q8_0", "gemma-3-270m-it-Q8_0.gguf"),
    ("gemma3:1b", "Q4_K_M", "gemma-3-1b-it-Q4_K_M.gguf"),
    ("smollm2:135m", "Q8_0", "SmolLM2-135M-Instruct-Q8_0.gguf"),
    ("smollm2:360m", "Q8_0", "SmolLM2-360M-Instruct-Q8_0.gguf"),
    ("smollm2:latest", "Q8_0", "SmolLM2-1.7B-Instruct-Q8_0.gguf"),
    ("tinyllama:latest", "Q4_0", "tinyllama-1.1b-chat-v1.0.Q4_0.gguf"),
    ("tinyllama:1.1b-chat-v1-q4_K_M", "Q4_K_M", "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"),
    ("mistral:7b", "Q4_0", "Mistral-7B-Instruct-v0.3-Q4_0.gguf"),
    ("mistral:7b-instruct-q4_0", "Q4_0", "Mistral-7B-Instruct-v0.3-Q4_0.gguf"),
    ("phi4-mini:3.8b-q8_0", "Q8_0", "Phi-4-mini-instruct.Q8_0.gguf"),
    ("phi4-mini:latest", "Q4_K_M", "Phi-4-mini-instruct-Q4_K_M.gguf"),
])
def test_default_quantizations_follow_ollama(name, quant, file):
    e = resolve(Catalog.load(), name)
    assert (e.quant, e.files) == (quant, (file,))


def test_deepseek_r1_8b_is_the_0528_qwen3_distill():
    cat = Catalog.load()
    qwen3 = ("unsloth/DeepSeek-R1-0528-Qwen3-8B-GGUF", ("DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf",))
    for name in ("deepseek-r1:latest", "deepseek-r1:8b", "deepseek-r1:8b-0528-qwen3-q4_K_M"):
        e = resolve(cat, name)
        assert (e.repo, e.files) == qwen3, name
    assert resolve(cat, "deepseek-r1:8b-0528-qwen3-q8_0").files == ("DeepSeek-R1-0528-Qwen3-8B-Q8_0.gguf",)
    # the Llama distill stays reachable under Ollama's tags for it
    for name, file in (("deepseek-r1:8b-llama-distill-q4_K_M", "DeepSeek-R1-Distill-Llama-8B-Q4_K_M.gguf"),
                       ("deepseek-r1:8b-llama-distill-q8_0", "DeepSeek-R1-Distill-Llama-8B-Q8_0.gguf")):
        e = resolve(cat, name)
        assert (e.repo, e.files) == ("bartowski/DeepSeek-R1-Distill-Llama-8B-GGUF", (file,))
    assert resolve(cat, "deepseek-r1:7b-qwen-distill-q4_K_M").repo == "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF"
    assert cat.resolve("deepseek-r1", "8b-qwen3-llama-distill") is None
    assert "deepseek-r1:8b-llama-distill" in cat.suggest("deepseek-r1", "8b-lama-distill")


def test_phi3_stops():
    e = resolve(Catalog.load(), "phi3:latest")
    assert e.params["stop"] == ["<|end|>", "<|endoftext|>", "<|user|>", "<|assistant|>"]


def _one(**size) -> dict:
    return {"models": {"m": {"latest": "1b", "sizes": {"1b": {"repo": "a/b", "files": {"Q4_K_M": "m-Q4_K_M.gguf"},
                                                            **size}}}}}


@pytest.mark.parametrize("data, error", [
    ({"models": {}, "modles": {}}, "catalog: unknown key 'modles'"),
    ({"schema": 2, "models": {}}, "catalog: schema 2 is not 1"),
    ({"models": {"m": {"latest": "2b", "sizes": {"1b": {"repo": "a/b", "files": {"Q8_0": "m-Q8_0.gguf"}}}}}},
     "m: 'latest' must name one of its sizes"),
    (_one(default_qunat="Q8_0"), "m:1b: unknown key 'default_qunat'"),
    (_one(default_quant="Q8_0"), "m:1b: no file for its default quantization"),
    (_one(repo="ab"), "m:1b: bad repo 'ab'"),
    (_one(files={"Q4_K_M": "m-Q4_K_M.bin"}), "m:1b: Q4_K_M is not a .gguf"),
    (_one(aliases="x"), "m:1b: 'aliases' must be a list of tags"),
    (_one(aliases=["bad tag"]), "m:1b: 'aliases' must be a list of tags"),
    (_one(params=["stop"]), "m:1b: 'params' must be an object"),
    (_one(template=3), "m:1b: 'template' must be text"),
    (_one(variant="it q"), "m:1b: bad variant 'it q'"),
])
def test_validate_names_the_bad_part(data, error):
    with pytest.raises(CatalogError) as err:
        validate(data)
    assert str(err.value) == error


def test_two_sizes_answering_one_tag_is_an_error():
    data = _one()
    data["models"]["m"]["sizes"]["1b-q8_0"] = {"repo": "a/c", "files": {"Q8_0": "m-Q8_0.gguf"}, "default_quant": "Q8_0"}
    data["models"]["m"]["sizes"]["1b"]["files"]["Q8_0"] = "m-Q8_0.gguf"
    with pytest.raises(CatalogError, match="m: tag '1b-q8_0' names two entries"):
        Catalog(data)


# --- where the package finds it -------------------------------------------------------------
def test_builtin_is_the_checkouts_registry():
    assert builtin() == ROOT / "registry" / "catalog.json"
    assert not (ROOT / "ollamalike" / "registry" / "catalog.json").exists()
    validate(json.loads(builtin().read_text()))


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ollamalike").rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert set(conf["packages"]) == on_disk | {"ollamalike.registry"}, "add the package to pyproject.toml"
    assert conf["package-dir"] == {"ollamalike.registry": "registry"}


def test_wheel_carries_the_catalog_and_reads_it(tmp_path):
    """A wheel built from the tree holds registry/ as ollamalike/registry/, and the package installed
    from it (no checkout around) loads the catalog from there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "ollamalike", src / "ollamalike", ignore=ignore)
    shutil.copytree(ROOT / "registry", src / "registry", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w"), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "w").glob("ollamalike-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"ollamalike/registry/catalog.json", "ollamalike/registry/README.md", "ollamalike/registry/verify.py",
            "ollamalike/hub/catalog.py"} <= names
    assert not any(n.startswith("registry/") for n in names)
    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    code = ("from ollamalike.hub.catalog import Catalog, builtin; print(builtin()); "
            "print(Catalog.load().resolve('llama3.2', '1b').quant)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(target / "ollamalike" / "registry" / "catalog.json"), "Q8_0"]


# --- registry/verify.py -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    f = tmp_path_factory.mktemp("verify") / "w.gguf"
    f.write_bytes(b"GGUF" + bytes(60))
    h = FakeHub()
    h.add("acme/good-GGUF", "good-Q4_K_M.gguf", f)
    h.add("acme/good-GGUF", "good.Q8_0.gguf", f)
    yield h
    h.close()


def verify(hub: FakeHub, tmp_path, models: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema": 1, "models": models}))
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "registry" / "verify.py"), str(path)], env=env,
                          capture_output=True, text=True, timeout=120)


GOOD = {"latest": "1b", "sizes": {"1b": {"repo": "acme/good-GGUF", "files": {
    "Q4_K_M": "good-Q4_K_M.gguf", "Q8_0": "good.Q8_0.gguf"}}}}


def test_verify_reports_exactly_the_wrong_entries(hub, tmp_path):
    wrong = {"latest": "1b", "sizes": {
        "1b": {"repo": "acme/good-GGUF", "files": {"Q4_K_M": "good-Q4_K_M.gguf", "Q8_0": "good-Q8_0.gguf"}},
        "2b": {"repo": "acme/gone-GGUF", "files": {"Q4_K_M": "gone-Q4_K_M.gguf"}}}}
    out = verify(hub, tmp_path, {"good": GOOD, "wrong": wrong})
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [
        "wrong:1b: Q8_0 file 'good-Q8_0.gguf' not in 'acme/good-GGUF'; did you mean 'good.Q8_0.gguf'?",
        "wrong:2b: repository 'acme/gone-GGUF' not found"]
    assert f"4 files checked against {hub.url}: 2 missing" in out.stderr  # HF_ENDPOINT was honoured


def test_verify_passes_a_good_catalog_and_rejects_a_bad_schema(hub, tmp_path):
    out = verify(hub, tmp_path, {"good": GOOD})
    assert (out.returncode, out.stdout) == (0, ""), out.stderr
    out = verify(hub, tmp_path, {"good": {**GOOD, "latest": "9b"}})
    assert out.returncode == 1 and out.stdout.endswith(": schema: good: 'latest' must name one of its sizes\n")


def test_verify_checks_the_builtin_catalog_by_default(tmp_path):
    """With no argument the built-in catalog is checked: a Hub holding all of its files passes."""
    f = tmp_path / "w.gguf"
    f.write_bytes(b"GGUF" + bytes(60))
    h = FakeHub()
    try:
        n = 0
        for m in Catalog.load().data["models"].values():
            for s in m["sizes"].values():
                for files in [*s["files"].values(), *([s["projector"]] if s.get("projector") else [])]:
                    for name in files if isinstance(files, list) else [files]:
                        h.add(s["repo"], name, f)
                        n += 1
        env = {**os.environ, "HF_ENDPOINT": h.url, "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, str(ROOT / "registry" / "verify.py")], env=env,
                             capture_output=True, text=True, timeout=120)
        assert (out.returncode, out.stdout) == (0, ""), out.stdout + out.stderr
        assert f"catalog.json: {n} files checked against {h.url}: 0 missing" in out.stderr
    finally:
        h.close()
