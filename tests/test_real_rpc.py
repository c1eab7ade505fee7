"""One model split across machines with llama.cpp's RPC backend, for real on loopback: two
`ollamalike rpc-worker` processes and a daemon with OLLAMALIKE_RPC_SERVERS (issue 14 part 1)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ollamalike.runner.rpc import RpcDown, probe
from tests.conftest import Daemon, free_port

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


def _has_rpc() -> bool:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    return any(lib.glob("*ggml-rpc*"))


needs_rpc = pytest.mark.skipif(not _has_rpc(), reason="the installed llama-cpp-python was built without "
                               "llama.cpp's RPC backend (no libggml-rpc); ./install.sh rebuilds it with GGML_RPC=ON")


class Worker:
    """`ollamalike rpc-worker` on a free loopback port, ready once it answers the wire probe."""

    def __init__(self, tmp: Path, *args: str):
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log_path = tmp / f"worker-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "ollamalike", "rpc-worker", "--port", str(self.port),
                                      "--threads", "1", *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.devices = probe(self.endpoint, timeout=2)
                return
            except RpcDown:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rpc worker did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def _generate(d: Daemon, **extra) -> requests.Response:
    return requests.post(d.url + "/api/generate", timeout=240, json={
        "model": "smol", "prompt": "Name three colours.", "stream": False,
        "options": {"temperature": 0, "seed": 1, "num_predict": 12}, **extra})


def _ps(d: Daemon) -> dict:
    return requests.get(d.url + "/api/ps", timeout=30).json()["models"][0]


@needs_rpc
def test_rpc_worker_offers_its_cpu_and_caps_memory(tmp_path):
    w = Worker(tmp_path, "--mem", "300")
    try:
        (dev,) = w.devices  # the CPU, with the memory it was told to offer
        assert dev.total == dev.free == 300 << 20
        out = subprocess.run([sys.executable, "-m", "ollamalike", "rpc-worker", "--port", str(w.port)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0  # the port is taken: it says so and ends instead of hanging
    finally:
        w.stop()


def test_rpc_worker_beyond_loopback_warns_about_no_authentication(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ollamalike", "rpc-worker", "--host", "0.0.0.0", "--port", str(port),
                             "--threads", "1"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = proc.stderr.readline()
        if _has_rpc():
            assert first.startswith(f"warning: rpc worker on 0.0.0.0:{port} has no authentication"), first
        else:
            assert "no RPC backend" in first + proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    out = subprocess.run([sys.executable, "-m", "ollamalike", "rpc-worker", "--host", "::1"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "llama.cpp's RPC server listens on IPv4 addresses only" in out.stderr


@needs_rpc
def test_model_split_over_two_workers_matches_the_local_load_and_survives_a_lost_worker(tmp_path, smollm2_gguf):
    a, b = Worker(tmp_path), Worker(tmp_path)
    d = Daemon(tmp_path, OLLAMALIKE_RPC_SERVERS=f"{a.endpoint},{b.endpoint}", OLLAMALIKE_NUM_PARALLEL="1")
    try:
        d.create("smol", smollm2_gguf, tmp_path)
        r = _generate(d)
        assert r.status_code == 200, r.text
        split_text = r.json()["response"]
        ps = _ps(d)
        names = [x["name"] for x in ps["devices"]]
        assert names == ["CPU", a.endpoint, b.endpoint], ps
        assert all(x["layers"] > 0 for x in ps["devices"]) and sum(x["layers"] for x in ps["devices"]) == 31
        assert sum(x["size"] for x in ps["devices"]) == ps["size"]
        out = d.cli("ps")
        assert f"% {a.endpoint}" in out.stdout and f"% {b.endpoint}" in out.stdout, out.stdout

        # a worker dies under a loaded model: the next request fails naming it...
        b.stop()
        r = _generate(d)
        error = r.json()["error"]
        assert r.status_code == 500 and error.startswith(f"rpc worker {b.endpoint} is down (connection refused); "), r.text
        assert "Remote RPC server crashed" in error  # the runner's own words, not a debugger's backtrace
        # ...and the one after loads without it, with the same greedy text
        r = _generate(d)
        assert r.status_code == 200, r.text
        assert r.json()["response"] == split_text
        assert [x["name"] for x in _ps(d)["devices"]] == ["CPU", a.endpoint]
        assert f"rpc worker {b.endpoint} is down (connection refused); loading without it" in d.log_path.read_text()

        # with no worker left, the model loads here alone: the reference text
        requests.post(d.url + "/api/generate", json={"model": "smol", "keep_alive": 0}, timeout=60)
        a.stop()
        r = _generate(d)
        assert r.status_code == 200, r.text
        assert r.json()["response"] == split_text
        assert "devices" not in _ps(d) and "100% CPU" in d.cli("ps").stdout
    finally:
        d.stop()
        a.stop()
        b.stop()


@needs_rpc
def test_a_worker_that_drops_mid_load_is_named_and_the_next_load_goes_without_it(tmp_path, smollm2_gguf):
    from tests.test_rpc import FakeWorker

    w = FakeWorker([(64 << 30, 64 << 30)])  # answers the daemon's probe, dies at the runner's first upload
    d = Daemon(tmp_path, OLLAMALIKE_RPC_SERVERS=w.endpoint)
    try:
        d.create("smol", smollm2_gguf, tmp_path)
        r = _generate(d)
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert error.startswith(f"rpc worker {w.endpoint} is down (connection refused); llama runner process "
                                "has terminated: "), error
        assert w.dead and d.runner_pids() == []
        r = _generate(d)
        assert r.status_code == 200 and "devices" not in _ps(d), r.text
    finally:
        d.stop()
        w.close()
