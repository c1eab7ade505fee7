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


FAKE_PYTHON = r"""#!/bin/bash
# a virtual environment's python that builds nothing: it logs pip's calls and plays their effects
echo "$*" >> "$FAKE_LOG"
site="$(dirname "$0")/../lib/python3.99/site-packages"
if [ "$1" = "-c" ]; then
  case "$2" in *"import llama_cpp"*) [ -d "$site/llama_cpp" ]; exit $? ;; *) exec python3 "$@" ;; esac
fi
shift 2  # -m pip
case "$1" in
  wheel) while [ $# -gt 0 ]; do [ "$1" = -w ] && out="$2"; shift; done
         echo "$CMAKE_ARGS" > "$out/cmake-args"
         touch "$out/llama_cpp_python-0.3.36-cp399-cp399-linux_x86_64.whl" ;;
  install) for a in "$@"; do case "$a" in *.whl)
             mkdir -p "$site/llama_cpp/lib"
             if grep -q GGML_RPC=ON "$(dirname "$a")/cmake-args"; then touch "$site/llama_cpp/lib/libggml-rpc.so"; fi
             if grep -q GGML_CPU_ALL_VARIANTS=ON "$(dirname "$a")/cmake-args"; then
               touch "$site"/llama_cpp/lib/libggml-cpu-{x64,haswell,sapphirerapids}.so; fi ;;
           esac; done ;;
esac
"""


def _install(root: Path, cache: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = root / "calls.log"
    log.write_text("")
    out = subprocess.run(["bash", str(root / "install.sh"), "--no-model", "--backend", "cpu"], timeout=60,
                         capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(root), "XDG_CACHE_HOME": str(cache),
                              "FAKE_LOG": str(log), "OLLAMALIKE_BIN_DIR": str(root / "bin"), **env})
    assert out.returncode == 0, out.stdout + out.stderr
    return out, log.read_text().splitlines()


def test_llama_cpp_is_built_with_rpc_and_cpu_variants_keyed_by_its_flags_and_rebuilt_without_them(tmp_path):
    """pip caches the wheel it built from the sdist whatever CMAKE_ARGS were: install.sh builds
    into a folder named after the flags instead, reuses it, and rebuilds an install without RPC."""
    root, cache = tmp_path / "checkout", tmp_path / "cache"
    root.mkdir()
    for name in ("install.sh", "pyproject.toml"):
        (root / name).write_bytes((ROOT / name).read_bytes())
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "ollamalike").write_text("#!/bin/sh\nexit 0\n")
    for exe in ("python", "ollamalike"):
        (bin_dir / exe).chmod(0o755)
    stamp = subprocess.run(["cksum"], stdin=open(root / "pyproject.toml"), capture_output=True, text=True).stdout
    (root / ".venv" / ".ollamalike-installed").write_text(stamp)
    rpc_lib = root / ".venv/lib/python3.99/site-packages/llama_cpp/lib/libggml-rpc.so"
    # an llama-cpp-python of the right version but without RPC (what pip's cache used to hand back)
    rpc_lib.parent.mkdir(parents=True)
    out, calls = _install(root, cache)
    assert "installed without llama.cpp's RPC backend and the CPU variants: rebuilding it" in out.stdout
    (build,) = [c for c in calls if c.startswith("-m pip wheel")]
    assert "--no-cache-dir" in build and "--no-binary llama-cpp-python" in build
    (folder,) = (cache / "ollamalike" / "wheels").iterdir()
    assert folder.name.startswith("0.3.36-") and "-DGGML_RPC=ON" in (folder / "cmake-args").read_text()
    flags = (folder / "cmake-args").read_text().split()
    assert {"-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"} <= set(flags)
    assert any(c.startswith("-m pip install") and "--force-reinstall --no-deps" in c for c in calls)
    assert rpc_lib.exists()
    # every CPU variant is kept but the AMX one (it crashes where ggml would choose it)
    variants = sorted(p.name for p in rpc_lib.parent.glob("libggml-cpu-*.so"))
    assert variants == ["libggml-cpu-haswell.so", "libggml-cpu-x64.so"], variants
    # with RPC installed nothing is built
    out, calls = _install(root, cache)
    assert "is installed (backend: cpu, with RPC)" in out.stdout and not any("pip" in c for c in calls)
    # lost again (say, a pip install from its cache): the same flags reuse the kept wheel, no build
    rpc_lib.unlink()
    out, calls = _install(root, cache)
    assert "built earlier with these flags" in out.stdout and rpc_lib.exists()
    assert not any(c.startswith("-m pip wheel") for c in calls)
    # an older install with one CPU backend for the build machine is rebuilt with the variants
    for lib in rpc_lib.parent.glob("libggml-cpu-*.so"):
        lib.unlink()
    out, calls = _install(root, cache)
    assert "is installed without the CPU variants: rebuilding it" in out.stdout
    assert (rpc_lib.parent / "libggml-cpu-x64.so").exists()
    # other flags are another build in another folder, and RPC switched off is said to be missing
    rpc_lib.unlink()
    out, calls = _install(root, cache, CMAKE_ARGS="-DGGML_RPC=OFF")
    assert len(list((cache / "ollamalike" / "wheels").iterdir())) == 2
    assert "built without llama.cpp's RPC backend" in out.stderr and not rpc_lib.exists()


def test_version_names_the_backends_and_cpu_features():
    import sys

    out = subprocess.run([sys.executable, "-m", "ollamalike", "--version"], capture_output=True, text=True, timeout=60)
    first, second = out.stdout.splitlines()[:2]
    assert out.returncode == 0 and first.startswith("ollamalike version is "), out.stderr
    backends = second.split("backends: ", 1)[1].split(";")[0].split(", ")
    assert second.startswith("llama.cpp backends: ") and "CPU" in backends, second
    assert "RPC" in backends, "install.sh builds llama.cpp with GGML_RPC=ON: " + second
    assert "; CPU: " in second
