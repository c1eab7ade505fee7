"""The runner processes, for real: sampling penalties, the runner's key, dying with the daemon, never
running the user's Python files, and sharing the CPU with the daemon's other runners."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Daemon, free_port

pytestmark = pytest.mark.real

MODEL = "smollm2:135m"
REPEATING = "List: apple, apple, apple, apple,"  # greedy SmolLM2 goes on "apple, apple, ..." for ever


def post(url: str, body: dict, headers: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                                  **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def generate(daemon, prompt: str, model: str = MODEL, **options) -> str:
    status, body = post(daemon.url + "/api/generate", {
        "model": model, "prompt": prompt, "raw": True, "stream": False,
        "options": {"temperature": 0, "num_predict": 32, "seed": 1, **options}})
    assert status == 200, body
    return body["response"]


def runner_metrics(daemon) -> dict[str, dict[str, float]]:
    """model -> metric -> value, from the daemon's /metrics (which carries every runner's own)."""
    text = urllib.request.urlopen(daemon.url + "/metrics", timeout=10).read().decode()
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if "{model=" in name:
            metric, _, label = name.partition("{model=")
            out.setdefault(label.strip('"}').removesuffix(":latest"), {})[metric] = float(value)
    return out


def listening_port(pid: int) -> int:
    """The TCP port a process listens on, from /proc (its socket inodes matched in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[9] in inodes:  # LISTEN
            return int(f[1].split(":")[1], 16)
    raise AssertionError(f"process {pid} listens on no TCP port")


# --- penalties (issue 9, item 1) -------------------------------------------------------------------

def test_repeat_penalty_stops_greedy_repetition(daemon):
    plain = generate(daemon, REPEATING)
    assert plain.count("apple") >= 10, plain  # the premise: greedy repeats
    for opts in ({"repeat_penalty": 1.1}, {"repeat_penalty": 2.0}, {"presence_penalty": 2.0},
                 {"frequency_penalty": 2.0}):
        out = generate(daemon, REPEATING, **opts)
        assert out.count("apple") <= plain.count("apple") // 2, (opts, out)


def test_repeat_last_n_zero_turns_penalties_off(daemon):
    plain = generate(daemon, REPEATING)
    assert generate(daemon, REPEATING, repeat_penalty=2.0, repeat_last_n=0) == plain
    # -1 is the whole context: the prompt's apples alone are penalised
    assert generate(daemon, REPEATING, repeat_penalty=2.0, repeat_last_n=-1).count("apple") < 5


def test_openai_presence_and_frequency_penalties(daemon):
    def complete(**extra):
        status, body = post(daemon.url + "/v1/completions", {
            "model": MODEL, "prompt": REPEATING, "max_tokens": 32, "temperature": 0, "seed": 1, **extra})
        assert status == 200, body
        return body["choices"][0]["text"]
    plain = complete()
    assert complete(presence_penalty=2.0) != plain
    assert complete(frequency_penalty=2.0) != plain


def test_modelfile_repeat_penalty_parameter(daemon, smollm2_gguf, tmp_path):
    daemon.create("smol-penalised", smollm2_gguf, tmp_path, "PARAMETER repeat_penalty 1.5\n")
    plain = generate(daemon, REPEATING)
    out = generate(daemon, REPEATING, model="smol-penalised")
    assert out.count("apple") <= plain.count("apple") // 2, out


# --- the runner's key (item 11) --------------------------------------------------------------------

def test_runner_answers_only_requests_with_its_key(daemon):
    generate(daemon, "Hi", num_predict=1)
    pid = daemon.runner_pids()[0]
    url = f"http://127.0.0.1:{listening_port(pid)}"
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    key = next(x for x in environ if x.startswith(b"OLLAMALIKE_RUNNER_SECRET=")).split(b"=", 1)[1].decode()
    assert len(key) >= 32
    assert key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()  # argv is world-readable
    for path in ("/health", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(urllib.request.Request(url + path, headers=headers), timeout=10)
            assert e.value.code == 401, (path, headers)
    for path in ("/completion", "/tokenize", "/embedding", "/detokenize"):
        status, body = post(url + path, {"prompt": "Hi", "content": "Hi", "tokens": [1]})
        assert status == 401 and "unauthorized" in body["error"], (path, status, body)
    with urllib.request.urlopen(urllib.request.Request(url + "/health", headers={
            "Authorization": f"Bearer {key}"}), timeout=10) as r:
        assert r.status == 200
    assert generate(daemon, "Hi", num_predict=1) is not None  # the daemon itself still gets in


# --- runners die with their daemon (item 11) -------------------------------------------------------

def test_runners_die_when_their_daemon_is_killed(tmp_path, smollm2_gguf):
    d = Daemon(tmp_path)
    try:
        d.create("smol", smollm2_gguf, tmp_path)
        generate(d, "Hi", model="smol", num_predict=1)
        pids = d.runner_pids()
        assert len(pids) == 1
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and d.runner_pids():
            time.sleep(0.1)
        assert d.runner_pids() == [], "the runner outlived its SIGKILLed daemon"
    finally:
        d.proc.kill()
        d.log.close()
        for pid in d.runner_pids():  # never leave one behind, whatever happened above
            os.kill(pid, signal.SIGKILL)


# --- the user's Python files never run (item 10) ---------------------------------------------------

def _booby_trap(directory: Path) -> Path:
    """Modules the daemon and the runner import, shadowed in `directory`: each writes a marker."""
    marker = directory / "EXECUTED"
    for name in ("attr", "typing_extensions", "aiohttp", "numpy"):
        (directory / f"{name}.py").write_text(
            f"import os\nopen({str(marker)!r}, 'a').write(f'{name} in {{os.getpid()}}\\n')\n")
    return marker


def test_python_files_in_the_working_directory_never_run_on_model_load(tmp_path, smollm2_gguf):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = _booby_trap(cwd)
    d = Daemon(tmp_path, cwd=cwd)
    try:
        d.create("smol", smollm2_gguf, tmp_path)
        assert generate(d, "Hi", model="smol", num_predict=2)
        assert d.runner_pids()
    finally:
        d.stop()
    assert not marker.exists(), marker.read_text()


def test_autostarted_daemon_never_runs_python_files_of_the_working_directory(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = _booby_trap(cwd)
    port = free_port()
    models = tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMALIKE_", "OLLAMA_"))}
    env.update(OLLAMALIKE_HOST=f"127.0.0.1:{port}", OLLAMALIKE_MODELS=str(models), HOME=str(tmp_path),
               XDG_DATA_HOME=str(tmp_path / "data"))
    import subprocess

    try:
        # the CLI itself as its console script runs it: without the working directory on sys.path
        out = subprocess.run([sys.executable, "-P", "-m", "ollamalike", "list"], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=120)
        assert "starting one in the background" in out.stderr
        assert out.returncode == 0, out.stderr
    finally:
        for p in Path("/proc").iterdir():  # the autostarted daemon: serving our models dir
            if p.name.isdigit():
                try:
                    if str(models).encode() in (p / "environ").read_bytes() and \
                            b"serve" in (p / "cmdline").read_bytes():
                        os.kill(int(p.name), signal.SIGTERM)
                except OSError:
                    pass
    assert not marker.exists(), marker.read_text()


# --- runners share the CPU (item 2) ----------------------------------------------------------------

def _twin(gguf: Path, tmp: Path) -> Path:
    """The same weights under another digest (one letter of general.name changed): a second model
    that gets a runner of its own."""
    data = bytearray(gguf.read_bytes())
    i = data.find(b"Smollm2 135M", 0, 1 << 20)
    assert i > 0
    data[i] = ord("T")
    out = tmp / "twin.gguf"
    out.write_bytes(bytes(data))
    return out


def test_two_busy_runners_share_the_cores_and_one_alone_keeps_them(tmp_path, smollm2_gguf):
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("sharing the cores needs at least two")
    d = Daemon(tmp_path)
    try:
        d.create("a", smollm2_gguf, tmp_path)
        d.create("b", _twin(smollm2_gguf, tmp_path), tmp_path)
        for m in ("a", "b"):
            generate(d, "Hi", model=m, num_predict=1)
        assert len(d.runner_pids()) == 2
        time.sleep(1)
        before = runner_metrics(d)
        generate(d, REPEATING, model="a", num_predict=16)  # alone: every core, no sharing
        alone = runner_metrics(d)
        assert alone["a"]["ollamalike_runner_threads"] == cores
        assert alone["a"]["ollamalike_runner_cpu_shared_steps_total"] == \
            before["a"]["ollamalike_runner_cpu_shared_steps_total"]

        outs: dict[str, str] = {}
        threads = [threading.Thread(target=lambda m=m: outs.__setitem__(m, generate(d, REPEATING, model=m,
                                                                                     num_predict=48)))
                   for m in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert set(outs) == {"a", "b"}
        after = runner_metrics(d)
        for m in ("a", "b"):  # both decoded on half the cores while the other was decoding
            assert after[m]["ollamalike_runner_cpu_shared_steps_total"] > \
                alone[m]["ollamalike_runner_cpu_shared_steps_total"], (m, after[m])
        # and the output is the same greedy text whatever the thread count
        assert outs["a"] == generate(d, REPEATING, model="a", num_predict=48)
    finally:
        d.stop()
