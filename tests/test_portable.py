"""One build for every x86-64 CPU (issue 16): llama.cpp's CPU backend comes in one library per CPU
generation and ggml picks the one the CPU can run. Proven by running the real runner under qemu-user
with older CPU models: qemu traps every instruction the model lacks (a build for this machine's CPU
dies there with SIGILL), so a runner that loads, generates and names the variant it chose is a real
proof. qemu-user comes from Debian's package (.ci/run installs it)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

VENV_LIB = Path(sys.prefix) / "lib"


def llama_lib() -> Path:
    (lib,) = VENV_LIB.glob("python*/site-packages/llama_cpp/lib")
    return lib


def variants() -> list[str]:
    return sorted(p.name for p in llama_lib().glob("libggml-cpu-*.so"))


needs_x86_linux = pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                                     reason="the qemu-x86_64 CPU models are x86-64 Linux's")


def test_llama_cpp_is_built_with_every_cpu_variant_but_amx():
    """install.sh builds GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS and keeps no AMX variant."""
    found = variants()
    assert found, f"no libggml-cpu-*.so in {llama_lib()}: run ./install.sh (it rebuilds with the CPU variants)"
    if platform.machine() == "x86_64":
        for name in ("x64", "sse42", "haswell", "skylakex"):
            assert f"libggml-cpu-{name}.so" in found, found
    assert "libggml-cpu-sapphirerapids.so" not in found, "the AMX variant crashes where chosen"
    assert not list(llama_lib().glob("libggml-cpu.so*")), "one CPU backend for the build machine is left over"


def test_version_names_the_cpu_variant_chosen_here():
    out = subprocess.run([sys.executable, "-m", "ollamalike", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    m = re.search(r"CPU variant: (\S+) \((libggml-cpu-\S+\.so)\)", out.stdout)
    assert m, out.stdout
    assert m.group(2) in variants() and m.group(1) == m.group(2)[len("libggml-cpu-"):-3]


def _qemu() -> str:
    exe = shutil.which("qemu-x86_64") or shutil.which("qemu-x86_64-static")
    if exe is None:
        pytest.skip("qemu-user is not installed (apt-get install qemu-user; .ci/run does this)")
    return exe


def _post(port: int, key: str, body: dict, timeout: float) -> list[dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


def run_runner(prefix: list[str], gguf: Path, prompt: str, num_predict: int, env: dict[str, str] | None = None,
               timeout: float = 240) -> tuple[str, dict, str]:
    """The venv's runner, started behind `prefix` (say `qemu-x86_64 -cpu CPU`), asked for
    `num_predict` greedy tokens after `prompt`: (its text, the final record, its log)."""
    key = "portable-test"
    env = {**os.environ, **(env or {}), "OLLAMALIKE_RUNNER_SECRET": key, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "ollamalike", "runner",
                             "--model", str(gguf), "--ctx", "64", "--threads", "1", "--batch", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        port = 0
        for line in proc.stdout:  # "listening on 127.0.0.1:PORT" once the model is loaded
            if line.startswith("listening on "):
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, f"the runner ({' '.join(prefix)}) exited {proc.wait()}:\n" + "".join(log)[-3000:]
        events = _post(port, key, {"prompt": prompt, "options": {"temperature": 0, "num_predict": num_predict}},
                       timeout=max(10.0, deadline - time.monotonic()))
        text = "".join(ev.get("content", "") for ev in events)
        return text, events[-1], "".join(log)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=10)


def run_runner_under(cpu: str, gguf: Path) -> tuple[str, dict, str]:
    """The venv's runner under `qemu-x86_64 -cpu CPU`, asked to complete a short greedy prompt."""
    return run_runner([_qemu(), "-cpu", cpu], gguf, "The capital of France is", 4)


def chosen(log: str) -> str:
    m = re.search(r"CPU variant: (\S+) \((libggml-cpu-\S+\.so)\)", log)
    assert m, "the runner does not log the CPU variant it chose:\n" + log[-3000:]
    return m.group(1)


def vector_registers(library: Path) -> dict[str, int]:
    """How many instructions of `library` name ymm (AVX) and zmm (AVX-512) registers."""
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return {"ymm": len(re.findall(r"%ymm\d", dis)), "zmm": len(re.findall(r"%zmm\d", dis))}


@needs_x86_linux
@pytest.mark.timeout(600)
@pytest.mark.parametrize("cpu, variant, wide", [
    ("Nehalem", "sse42", set()),             # SSE4.2, no AVX: the build machine's kernels would SIGILL
    ("Haswell-noTSX", "haswell", {"ymm"}),   # AVX2 + FMA, no AVX-512
])
def test_runner_runs_on_an_older_cpu_with_the_variant_for_it(smollm2_gguf, cpu, variant, wide):
    text, final, log = run_runner_under(cpu, smollm2_gguf)
    assert chosen(log) == variant, log[-2000:]
    # the kernels really computed: greedy SmolLM2 answers as it does natively
    assert final.get("done") and final["eval_count"] == 4 and "Paris" in text, (text, final)
    # the variant holds no instruction wider than the CPU has (ymm is AVX; zmm is AVX-512)
    regs = vector_registers(llama_lib() / f"libggml-cpu-{variant}.so")
    assert {r for r, n in regs.items() if n} == wide, regs


@needs_x86_linux
def test_a_build_for_a_newer_cpu_is_what_qemu_traps(tmp_path):
    """The premise of the test above: the AVX-512 variant really uses zmm registers, so the objdump
    check can fail, and qemu really traps an instruction a CPU model lacks."""
    assert vector_registers(llama_lib() / "libggml-cpu-skylakex.so")["zmm"] > 0
    src = tmp_path / "avx2.c"
    src.write_text("#include <immintrin.h>\nint main(void){volatile __m256i a=_mm256_set1_epi32(1);"
                   "__m256i b=_mm256_add_epi32(a,a);return _mm256_extract_epi32(b,0)==2?0:1;}\n")
    exe = tmp_path / "avx2"
    subprocess.run(["cc", "-O1", "-mavx2", str(src), "-o", str(exe)], check=True, timeout=60)
    out = subprocess.run([_qemu(), "-cpu", "Nehalem", str(exe)], capture_output=True, timeout=60)
    assert out.returncode != 0 and b"Illegal instruction" in out.stderr, out


def fake_cuda_backend(lib_dir: Path, work: Path) -> Path:
    """A libggml-cuda.so as a CUDA build ships it, on a machine without the NVIDIA driver: it needs
    libcuda.so.1, which is not there, so it cannot load."""
    (work / "driver.c").write_text("int cuInit(unsigned int flags) { return flags; }\n")
    (work / "backend.c").write_text("int cuInit(unsigned int);\nint ggml_backend_score(void) { return cuInit(0) + 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(work / "libcuda.so"),
                    str(work / "driver.c")], check=True, timeout=60)
    out = lib_dir / "libggml-cuda.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(work / "backend.c"), f"-L{work}", "-lcuda"],
                   check=True, timeout=60)
    (work / "libcuda.so").unlink()  # the driver is not installed
    return out


@pytest.mark.timeout(300)
def test_a_gpu_backend_without_its_driver_falls_back_to_the_cpu_with_one_line(smollm2_gguf, tmp_path):
    """One install serves machines with and without a GPU: the GPU backend is a library loaded at
    start; where its driver is missing it does not load, the CPU runs, and the runner says so once."""
    import llama_cpp

    site = tmp_path / "site"
    shutil.copytree(Path(llama_cpp.__file__).parent, site / "llama_cpp", symlinks=True)
    fake_cuda_backend(site / "llama_cpp" / "lib", tmp_path)
    root = Path(__file__).resolve().parents[1]
    _, final, log = run_runner([], smollm2_gguf, "Hello", 2, env={"PYTHONPATH": f"{site}{os.pathsep}{root}"})
    assert final.get("done") and final["eval_count"] == 2, final
    lines = log.splitlines()
    # the warning names the library of the copy (only it has one): the copy was the one loaded
    warnings = [line for line in lines if "no GPU found" in line]
    assert len(warnings) == 1 and "libggml-cuda.so" in warnings[0] and "running on the CPU" in warnings[0], lines
    (backends,) = [line for line in lines if "llama.cpp backends: " in line]
    assert "CPU" in backends and "CUDA" not in backends and "GPUs:" not in backends, backends
