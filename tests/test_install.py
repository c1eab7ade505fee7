"""install.sh's backend choice, with fake vendor tools on the PATH (nothing is built)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


def choose(tmp_path, tools: dict[str, str], *args: str) -> str:
    fake = Path(tempfile.mkdtemp(dir=tmp_path))
    for name, script in tools.items():
        (fake / name).write_text(f"#!/bin/sh\n{script}\n")
        (fake / name).chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", str(ROOT / "install.sh"), "--print-backend", *args], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(subprocess.run(["uname", "-s"], capture_output=True, text=True).stdout.strip() != "Linux",
                    reason="the detection of GPUs by their tools is Linux's; macOS picks Metal")
def test_backend_choice(tmp_path):
    assert choose(tmp_path, {}) == "backend: cpu (no GPU visible)"
    # a CUDA compiler without a GPU (this very machine) is not a reason to build for CUDA
    assert choose(tmp_path, {"nvcc": "exit 0", "nvidia-smi": "echo 'No devices were found'; exit 6"}) == \
        "backend: cpu (nvcc is installed but nvidia-smi sees no GPU)"
    gpu = {"nvcc": "exit 0", "nvidia-smi": "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'"}
    assert choose(tmp_path, gpu) == "backend: cuda (nvidia-smi sees: GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1))"
    assert choose(tmp_path, gpu, "--backend", "cpu") == "backend: cpu (chosen with --backend)"
    assert choose(tmp_path, {"hipcc": "exit 0", "rocm-smi": "exit 0"}).startswith("backend: rocm")
    bad = subprocess.run(["bash", str(ROOT / "install.sh"), "--backend", "tpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown backend 'tpu'" in bad.stderr


@pytest.mark.parametrize("script", ["install.sh", "build/build.sh", "bench/build_llama_server.sh"])
def test_scripts_parse(script):
    # bash reads a script as it runs it: an unclosed `if` near the end goes unseen by --print-backend
    out = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
