"""Real-model tests that need their own daemon: two models with eviction, the interactive REPL,
and the CLI starting a daemon in the background."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import ollama
import pytest

from tests.conftest import Daemon, free_port

pytestmark = pytest.mark.real


def test_two_models_and_eviction(tmp_path, smollm2_gguf, gemma3_gguf):
    d = Daemon(tmp_path, OLLAMALIKE_MAX_LOADED_MODELS="1")
    try:
        d.create("smol", smollm2_gguf, tmp_path)
        d.create("gemma3:270m", gemma3_gguf, tmp_path)
        c = ollama.Client(host=d.url)
        info = c.show("gemma3:270m")
        assert info.modelinfo["general.architecture"] == "gemma3" and info.details.quantization_level == "Q4_K_M"
        greedy = {"temperature": 0, "num_predict": 16}
        smol = c.chat(model="smol", messages=[{"role": "user", "content": "Say hello."}], options=greedy)
        assert [m.model for m in c.ps().models] == ["smol:latest"]
        gem = c.chat(model="gemma3:270m", messages=[{"role": "user", "content": "Say hello."}], options=greedy)
        assert gem.message.content.strip() and gem.done
        assert [m.model for m in c.ps().models] == ["gemma3:270m"]
        assert len(d.runner_pids()) == 1
        again = c.chat(model="smol", messages=[{"role": "user", "content": "Say hello."}], options=greedy)
        assert again.message.content == smol.message.content
    finally:
        d.stop()
    assert d.runner_pids() == []


def _read_until(fd: int, marker: str, timeout: float = 120) -> str:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {marker!r}; got {buf.decode(errors='replace')!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


def test_interactive_repl(daemon):
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "ollamalike", "run", "smollm2:135m"], daemon.env)
    try:
        _read_until(fd, ">>> ")
        os.write(fd, b"/set parameter temperature 0\r")
        assert "Set parameter 'temperature' to '0'" in _read_until(fd, ">>> ")
        os.write(fd, b"/set parameter num_predict 12\r")
        _read_until(fd, ">>> ")
        os.write(fd, b'"""Say\rhello"""\r')
        reply = _read_until(fd, ">>> ")
        assert len(reply.strip()) > 5
        os.write(fd, b"/show parameters\r")
        assert "User defined parameters:" in _read_until(fd, ">>> ")
        os.write(fd, b"/bogus\r")
        assert "Unknown command '/bogus'" in _read_until(fd, ">>> ")
        os.write(fd, b"/clear\r")
        assert "Cleared session context" in _read_until(fd, ">>> ")
        os.write(fd, b"/bye\r")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def _serve_pids(port: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                environ = (p / "environ").read_bytes()
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"serve" in cmd and f"OLLAMALIKE_HOST=127.0.0.1:{port}".encode() in environ:
                pids.append(int(p.name))
    return pids


def test_cli_starts_a_daemon_when_none_answers(tmp_path):
    port = free_port()
    env = {**os.environ, "OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_MODELS": str(tmp_path / "models"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("OLLAMALIKE_NOAUTOSTART", None)
    try:
        out = subprocess.run([sys.executable, "-m", "ollamalike", "list"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "starting one in the background" in out.stderr
        assert out.stdout.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
        assert _serve_pids(port)
        again = subprocess.run([sys.executable, "-m", "ollamalike", "list"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 0 and "background" not in again.stderr
    finally:
        for pid in _serve_pids(port):
            os.kill(pid, signal.SIGTERM)
    off = subprocess.run([sys.executable, "-m", "ollamalike", "list"], capture_output=True, text=True, timeout=60,
                         env={**env, "OLLAMALIKE_HOST": f"127.0.0.1:{free_port()}", "OLLAMALIKE_NOAUTOSTART": "1"})
    assert off.returncode == 1 and off.stderr.startswith("Error: could not connect to ollamalike server")


def test_unified_kv_setting_end_to_end(tmp_path, smollm2_gguf):
    d = Daemon(tmp_path, OLLAMALIKE_KV_UNIFIED="1", OLLAMALIKE_KV_SIZE="1024", OLLAMALIKE_NUM_PARALLEL="6")
    try:
        d.create("smol", smollm2_gguf, tmp_path)
        c = ollama.Client(host=d.url)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(6) as pool:
            outs = list(pool.map(lambda i: c.generate(model="smol", prompt=f"Story number {i}:",
                                                      options={"temperature": 0, "num_predict": 200}), range(6)))
        assert all(o.done and o.eval_count > 0 for o in outs)
        import urllib.request
        text = urllib.request.urlopen(d.url + "/metrics", timeout=10).read().decode()
        assert 'ollamalike_runner_kv_cells_total{model="smol:latest"} 1024' in text
        assert 'ollamalike_runner_slots{model="smol:latest"} 6' in text
    finally:
        d.stop()


def test_api_keys_cli_and_client(tmp_path, smollm2_gguf):
    """A team daemon with OLLAMALIKE_API_KEYS: the CLI sends OLLAMALIKE_API_KEY, the ollama client its
    headers; without a key both get a clear 401."""
    d = Daemon(tmp_path, OLLAMALIKE_API_KEYS="team-key, other")
    try:
        d.env["OLLAMALIKE_API_KEY"] = "team-key"
        d.create("smol", smollm2_gguf, tmp_path, "PARAMETER temperature 0\nPARAMETER num_predict 8\n")
        out = d.cli("run", "smol", "Say hi.")
        assert out.returncode == 0 and out.stdout.strip(), out.stderr
        d.env["OLLAMALIKE_API_KEY"] = ""
        out = d.cli("list")
        assert out.returncode == 1 and out.stderr.startswith("Error: unauthorized"), out.stderr
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=d.url).list()
        assert err.value.status_code == 401
        keyed = ollama.Client(host=d.url, headers={"Authorization": "Bearer other"})
        assert [m.model for m in keyed.list().models] == ["smol:latest"]
    finally:
        d.stop()


def _small_files():  # in the daemon's child: files may not grow past 8 MB, as on a nearly full disk
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))


def test_write_failure_loses_nothing(tmp_path, smollm2_gguf):
    """A blob that cannot be written (file size limit standing in for a full disk): create fails
    with a clear error, nothing half-written stays in the store, the daemon keeps serving."""
    d = Daemon(tmp_path, preexec_fn=_small_files)
    try:
        mf = tmp_path / "Modelfile"
        mf.write_text(f"FROM {smollm2_gguf}\n")
        out = d.cli("create", "smol", "-f", str(mf))
        assert out.returncode == 1 and out.stderr.startswith("Error: ") and "file too large" in out.stderr, out.stderr
        assert "writing a blob in" in out.stderr
        assert "Traceback" not in out.stderr
        blobs = d.models / "blobs"
        assert not blobs.exists() or list(blobs.iterdir()) == []
        assert d.proc.poll() is None and ollama.Client(host=d.url).list().models == []
    finally:
        d.stop()
