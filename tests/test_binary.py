"""The single executable (build/build.sh) on its own: no Python on the PATH, no virtual environment.

The executable is built with build/build.sh (about a minute on 2 cores) when it is missing or older
than any file of the package; `--no-binary` leaves these tests out and the report header says so.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.binary, pytest.mark.timeout(900)]  # the first test may build the executable


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    name = f"ollamalike-{platform.system().lower()}-{platform.machine()}"
    built = ROOT / "dist" / name
    import llama_cpp  # its libraries are bundled too: a rebuilt llama-cpp-python makes the file stale

    sources = [p for p in (ROOT / "ollamalike").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    sources += list((Path(llama_cpp.__file__).parent / "lib").iterdir())
    if not built.is_file() or built.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        out = subprocess.run(["bash", str(ROOT / "build" / "build.sh")], capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0 and built.is_file(), out.stdout[-3000:] + out.stderr[-3000:]
    bindir = tmp_path_factory.mktemp("bin")
    shutil.copy2(built, bindir / "ollamalike")
    return bindir / "ollamalike"


@pytest.fixture(scope="module")
def env(binary, tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TMPDIR", "OLLAMALIKE_TEST_CACHE")}
    return {**keep, "PATH": str(binary.parent), "HOME": str(home), "OLLAMALIKE_MODELS": str(home / "models"),
            "OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_NOAUTOSTART": "1"}


def run(binary, env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=binary.parent)


def test_no_python_on_the_path(binary, env):
    assert shutil.which("python3", path=env["PATH"]) is None and shutil.which("python", path=env["PATH"]) is None
    out = run(binary, env, "--version")
    assert out.returncode == 0 and out.stdout.startswith("ollamalike version is "), out.stderr


def test_the_file_carries_every_cpu_variant_and_names_the_one_it_runs(binary, env):
    out = run(binary, env, "--version")
    assert out.returncode == 0, out.stderr
    assert re.search(r"CPU variant: \S+ \(libggml-cpu-\S+\.so\)", out.stdout), out.stdout


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc is Linux's C library")
def test_the_readme_says_which_glibc_the_file_needs(binary):
    """README states the oldest glibc the file runs on: the newest symbol version (objdump -T) that
    any library it carries asks for."""
    listed = ROOT / "build" / "build" / "ollamalike" / "binaries.txt"
    libs = listed.read_text().split()
    assert libs and any("libggml-cpu-" in p for p in libs), libs
    dump = subprocess.run(["objdump", "-T", *libs], capture_output=True, text=True, timeout=120).stdout
    needed = max((tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", dump)))
    version = ".".join(map(str, needed))
    assert f"glibc {version} or newer" in " ".join((ROOT / "README.md").read_text().split()), version


def test_serve_create_run_ps(binary, env, smollm2_gguf, tmp_path):
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen([str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=binary.parent)
    try:
        deadline = time.monotonic() + 60
        while run(binary, env, "list").returncode != 0:
            assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        mf = tmp_path / "Modelfile"
        mf.write_text(f"FROM {smollm2_gguf}\nPARAMETER temperature 0\nPARAMETER num_predict 12\n")
        out = run(binary, env, "create", "smol", "-f", str(mf))
        assert out.returncode == 0, out.stderr
        t0 = time.monotonic()
        out = run(binary, env, "run", "smol", "What is the capital of France?")
        assert out.returncode == 0 and out.stdout.strip(), out.stderr + (tmp_path / "serve.log").read_text()[-3000:]
        print(f"one-shot run through the binary: {time.monotonic() - t0:.1f} s: {out.stdout.strip()!r}")
        ps = run(binary, env, "ps")
        assert ps.returncode == 0 and "smol:latest" in ps.stdout and "100% CPU" in ps.stdout, ps.stdout
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()


def test_rpc_worker_runs_from_the_binary(binary, env):
    """The executable carries llama.cpp's RPC backend: `rpc-worker` serves, and answers the probe."""
    from ollamalike.runner.rpc import RpcDown, probe

    port = free_port()
    worker = subprocess.Popen([str(binary), "rpc-worker", "--port", str(port), "--threads", "1", "--mem", "64"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                              cwd=binary.parent)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                (dev,) = probe(f"127.0.0.1:{port}", timeout=2)
                break
            except RpcDown:
                assert worker.poll() is None and time.monotonic() < deadline, worker.stderr.read()
                time.sleep(0.3)
        assert dev.free == dev.total == 64 << 20
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(10)
