"""`run`'s flags, the REPL's /set commands and history, `show -v`, `create -q` and `start`, against
the real daemon with SmolLM2 (greedy, few tokens). Terminal behaviour runs on a pty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from datetime import datetime, timezone

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.real

GREEDY = "smolg"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def greedy(daemon, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flags")
    mf = tmp / "Modelfile"
    mf.write_text("FROM smollm2:135m\nPARAMETER temperature 0\nPARAMETER num_predict 40\n")
    out = daemon.cli("create", GREEDY, "-f", str(mf))
    assert out.returncode == 0, out.stderr
    yield daemon
    for name in (GREEDY, "thinker", "quantized"):  # the session daemon's list is other tests' business
        daemon.cli("rm", name)


class Pty:
    """The CLI on a terminal of `cols` columns."""

    def __init__(self, args: list[str], env: dict[str, str], cols: int = 80):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(sys.executable, [sys.executable, "-m", "ollamalike", *args], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
        self.buf = b""

    def read_until(self, marker: str | None, timeout: float = 180) -> str:
        """Everything up to `marker` (or to the end of the output when None) since the last call."""
        start, deadline = len(self.buf), time.monotonic() + timeout
        while marker is None or marker.encode() not in self.buf[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {marker!r}: {self.buf[start:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            try:
                chunk = os.read(self.fd, 4096) if ready else b""
            except OSError:
                chunk = b""
            if ready and not chunk:
                break
            self.buf += chunk
        return self.buf[start:].decode(errors="replace")

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def close(self) -> int:
        try:
            _, status = os.waitpid(self.pid, 0)
            return os.waitstatus_to_exitcode(status)
        finally:
            os.close(self.fd)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def on_terminal(args: list[str], env: dict[str, str], cols: int = 80) -> str:
    t = Pty(args, env, cols)
    try:
        out = t.read_until(None)
        assert t.close() == 0, out
        return out.replace("\r\n", "\n")
    finally:
        t.kill()


def test_format_json_and_a_schema_file(greedy, tmp_path):
    out = greedy.cli("run", GREEDY, "--format", "json", 'Reply with the JSON {"ok": true}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] is True
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}))
    out = greedy.cli("run", GREEDY, "--format", str(schema), "Give a JSON object.")
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout)["a"], int)


def _hours_left(url: str) -> list[float]:
    left = []
    for m in json.load(urllib.request.urlopen(url + "/api/ps", timeout=10))["models"]:
        when = datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", m["expires_at"].replace("Z", "+00:00")))
        left.append((when - datetime.now(timezone.utc)).total_seconds() / 3600)
    return left


def test_keepalive_reaches_ps(greedy):
    # smolg shares its weights, hence its runner, with smollm2:135m (as in Ollama, runners are per
    # model file), so ps may list it under either name: look for the expiry instead
    assert not [h for h in _hours_left(greedy.url) if 0.9 < h <= 1.0]
    out = greedy.cli("run", GREEDY, "--keepalive", "1h", "Hi")
    assert out.returncode == 0, out.stderr
    assert [h for h in _hours_left(greedy.url) if 0.9 < h <= 1.0]
    assert greedy.cli("stop", GREEDY).returncode == 0


def test_verbose_prints_the_stats(greedy):
    out = greedy.cli("run", GREEDY, "--verbose", "Hi")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    labels = [line.split(":")[0] for line in out.stderr.splitlines()]
    assert labels[-5:] == ["prompt eval duration", "prompt eval rate", "eval count", "eval duration", "eval rate"]
    assert "total duration" in labels and "prompt eval count" in labels
    count = int(re.search(r"^eval count: +(\d+) token\(s\)$", out.stderr, re.M).group(1))
    assert 0 < count <= 40
    assert re.search(r"^eval rate: +\d+\.\d\d tokens/s$", out.stderr, re.M)
    assert re.search(r"^total duration: +[\d.]+(ms|s|m[\d.]+s)$", out.stderr, re.M)


def test_wordwrap_on_a_terminal_off_with_nowordwrap_and_piped(greedy):
    prompt = "Describe the sky in two sentences."
    piped = greedy.cli("run", GREEDY, prompt)
    assert piped.returncode == 0
    words = piped.stdout.split()
    assert len(piped.stdout.strip()) > 30
    wrapped = ANSI.sub("", on_terminal(["run", GREEDY, prompt], greedy.env, cols=24))
    assert wrapped.split() == words  # the same reply, only laid out differently
    assert all(len(line) <= 23 for line in wrapped.split("\n")), wrapped
    assert wrapped.count("\n") > piped.stdout.count("\n")
    plain = ANSI.sub("", on_terminal(["run", GREEDY, "--nowordwrap", prompt], greedy.env, cols=24))
    assert plain == piped.stdout  # byte for byte what a pipe gets


def test_thinking_dimmed_on_a_terminal_hidden_with_hidethinking(greedy, tmp_path):
    mf = tmp_path / "Modelfile"  # a thinking template (think tags around .Thinking, as Ollama reads it)
    mf.write_text('FROM smolg\nTEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n'  # that opens <think>:
                  '{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>\n'
                  '{{ end }}<|im_start|>assistant\n{{ if .Think }}<think>{{ end }}"""\n'  # the reply is thinking
                  'PARAMETER num_predict 8\n')
    assert greedy.cli("create", "thinker", "-f", str(mf)).returncode == 0
    shown = on_terminal(["run", "thinker", "Say hello."], greedy.env)
    assert shown.startswith("\x1b[38;5;245m\x1b[1mThinking...\n\x1b[0m\x1b[38;5;245m") and len(shown) > 40, shown
    piped = greedy.cli("run", "thinker", "Say hello.")
    assert piped.stdout.startswith("Thinking...\n") and "\x1b" not in piped.stdout
    assert ANSI.sub("", shown).split() == piped.stdout.split()
    hidden = greedy.cli("run", "thinker", "--hidethinking", "Say hello.")
    assert hidden.returncode == 0 and hidden.stdout.strip() == ""
    off = greedy.cli("run", "thinker", "--think=false", "Say hello.")
    assert off.returncode == 0 and "Thinking" not in off.stdout


def _repl(env: dict[str, str], lines: list[str]) -> str:
    t = Pty(["run", GREEDY], env)
    try:
        out = [t.read_until(">>> ")]
        for line in lines:
            t.send(line)
            out.append(t.read_until(">>> " if line != "/bye" else None))
        assert t.close() == 0
        return ANSI.sub("", "".join(out).replace("\r\n", "\n"))
    finally:
        t.kill()


def test_repl_set_commands_and_history(greedy, tmp_path):
    env = {**greedy.env, "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("OLLAMALIKE_NOHISTORY", None)
    out = _repl(env, ["/set format json", 'Reply with the JSON {"ok": true}', "/set noformat", "/set think",
                      "/set nothink", "/set nowordwrap", "/set nohistory", "my secret", "/set history",
                      "/? shortcuts", "/bye"])
    assert "Set format to 'json' mode." in out and "Disabled format." in out
    reply = out.split('Reply with the JSON {"ok": true}\n', 1)[1].split(">>> ", 1)[0]
    assert json.loads(reply)["ok"] is True
    assert f'warning: model "{GREEDY}" does not support thinking output' in out
    assert "Set 'nothink' mode." in out and "Set 'nowordwrap' mode." in out
    assert "Ctrl + a            Move to the beginning of the line (Home)" in out
    history = tmp_path / "data" / "ollamalike" / "history"
    kept = ["/set format json", 'Reply with the JSON {"ok": true}', "/set noformat", "/set think", "/set nothink",
            "/set nowordwrap", "/set nohistory", "/? shortcuts", "/bye"]
    assert history.read_text().splitlines() == kept
    _repl({**env, "OLLAMALIKE_NOHISTORY": "1"}, ["/set verbose", "/bye"])  # nothing added
    assert history.read_text().splitlines() == kept
    _repl(env, ["/bye"])  # kept across sessions
    assert history.read_text().splitlines() == kept + ["/bye"]


def test_show_verbose_lists_metadata_and_tensors(greedy):
    out = greedy.cli("show", "smollm2:135m", "-v")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "\n  Metadata\n" in text and "\n  Tensors\n" in text
    assert re.search(r"^    tokenizer\.ggml\.tokens +\[<\|endoftext\|> \.\.\.\+49151 more\]$", text, re.M)
    assert re.search(r"^    token_embd\.weight +Q\w+ +\[576 49152\]$", text, re.M)
    assert "Tensors" not in greedy.cli("show", "smollm2:135m").stdout


def test_create_quantize_is_never_claimed(greedy, tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM smollm2:135m\n")
    out = greedy.cli("create", "quantized", "-f", str(mf), "-q", "q8_0")
    # smollm2 is already Q4_1: Ollama refuses to quantize it; a daemon that ignores -q is caught by the CLI
    assert out.returncode == 1 and "quantiz" in out.stderr.lower(), out.stderr


def test_start_is_serve(tmp_path):
    port = free_port()
    env = {**os.environ, "OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_MODELS": str(tmp_path / "models")}
    proc = subprocess.Popen([sys.executable, "-m", "ollamalike", "start"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "start did not serve"
                time.sleep(0.2)
        assert body == b"Ollama is running"
    finally:
        proc.terminate()
        proc.wait(30)
