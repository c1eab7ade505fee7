"""llama.cpp RPC workers, fast: the address list, the wire probe against a fake worker speaking
ggml-rpc's protocol, the split decision over this machine and the workers, the runner's command
line and the `ps` PROCESSOR column. The real workers are in test_real_rpc.py."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from ollamalike.cli import ui
from ollamalike.errors import OllamaError
from ollamalike.runner.process import RunnerSpec, runner_command
from ollamalike.runner.rpc import RemoteDevice, RpcDown, parse_servers, probe
from ollamalike.server.devices import remote_devices
from ollamalike.server.offload import Gpu, Inventory, Planner, decide_rpc, estimate
from tests.test_offload import BIG_RAM, GiB, MiB, synthetic


class FakeWorker:
    """A loopback server answering HELLO, DEVICE_COUNT and GET_DEVICE_MEMORY like ggml-rpc v7
    (`major` other than 7 plays an incompatible build; `silent` one that never answers); any other
    command makes it drop the connection and stop listening: a worker dying in the middle of a load."""

    def __init__(self, mems: list[tuple[int, int]], major: int = 7, silent: bool = False):
        self.mems, self.major, self.silent = mems, major, silent
        self.dead = False  # set once it was asked real work: it closes and stops listening, as if killed
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.seen: list[int] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _recv(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError
            buf += chunk
        return buf

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.silent:
                    threading.Event().wait(5)
                    continue
                try:
                    while True:
                        cmd, size = struct.unpack("<BQ", self._recv(conn, 9))
                        data = self._recv(conn, size)
                        self.seen.append(cmd)
                        if cmd == 14:
                            out = bytes([self.major, 0, 0, 0]) + bytes(24)
                        elif cmd == 15:
                            out = struct.pack("<I", len(self.mems))
                        elif cmd == 11:
                            out = struct.pack("<QQ", *self.mems[struct.unpack("<I", data)[0]])
                        else:  # a load's first real command (alignment, buffers): die mid-load
                            self.dead = True
                            self.close()
                            return
                        conn.sendall(struct.pack("<Q", len(out)) + out)
                except (ConnectionError, OSError):
                    continue

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a bare close would not)
        except OSError:
            pass
        self.sock.close()


def test_parse_servers_normalises_and_names_a_bad_entry():
    assert parse_servers("") == ()
    assert parse_servers(" 10.0.0.5:50052 , gpu-box ,10.0.0.5:50052,[::1]:7000") == (
        "10.0.0.5:50052", "gpu-box:50052", "[::1]:7000")
    with pytest.raises(ValueError, match="invalid rpc worker address 'a:99999'"):
        parse_servers("a:99999")
    with pytest.raises(ValueError, match="invalid rpc worker address 'h:x'"):
        parse_servers("h:x")


def test_probe_reads_devices_and_memory_over_the_wire():
    w = FakeWorker([(3 * GiB, 4 * GiB), (1 * GiB, 2 * GiB)])
    try:
        devs = probe(w.endpoint)
        assert devs == [RemoteDevice(w.endpoint, 0, 3 * GiB, 4 * GiB), RemoteDevice(w.endpoint, 1, GiB, 2 * GiB)]
        assert w.seen == [14, 15, 11, 11]  # HELLO first, as the server requires
        assert devs[0].name == w.endpoint and devs[1].name == w.endpoint + "#1"
    finally:
        w.close()


def test_probe_says_why_a_worker_cannot_be_used():
    w = FakeWorker([(GiB, GiB)])
    port = w.endpoint
    w.close()
    with pytest.raises(RpcDown, match=rf"^rpc worker {port} is down \(connection refused\)$"):
        probe(port)
    old = FakeWorker([(GiB, GiB)], major=3)
    silent = FakeWorker([(GiB, GiB)], silent=True)
    try:
        with pytest.raises(RpcDown, match="speaks RPC protocol 3.0, this build speaks 7.x"):
            probe(old.endpoint)
        with pytest.raises(RpcDown, match="is not answering"):
            probe(silent.endpoint, timeout=0.3)
    finally:
        old.close()
        silent.close()


def test_remote_devices_skips_busy_and_down_workers():
    a, b = FakeWorker([(2 * GiB, 2 * GiB)]), FakeWorker([(GiB, GiB)])
    b.close()
    try:
        found, down = remote_devices((a.endpoint, b.endpoint, "127.0.0.1:1"), busy={"127.0.0.1:1"})
        assert [d.endpoint for d in found] == [a.endpoint]
        assert down == [f"rpc worker {b.endpoint} is down (connection refused)",
                        "rpc worker 127.0.0.1:1 is in use by another loaded model"]
    finally:
        a.close()


def _remote(port: int, free: int) -> RemoteDevice:
    return RemoteDevice(f"127.0.0.1:{port}", 0, free, free)


def test_layers_spread_over_this_cpu_and_the_workers_by_free_memory(tmp_path):
    est = estimate(synthetic(tmp_path, layers=11), 1024)
    inv = Inventory((), 8 * GiB, remotes=(_remote(1, 8 * GiB), _remote(2, 16 * GiB)))
    plan = decide_rpc(est, inv)
    # 12 layers (11 blocks + output) in proportion 8:8:16 (the CPU's share is its RAM less the
    # embeddings and a compute buffer, a little under 8 GiB)
    assert plan.num_gpu == 9 and plan.tensor_split == (3.0, 6.0)
    assert plan.rpc_servers == ("127.0.0.1:1", "127.0.0.1:2")
    assert [(d[0], d[1]) for d in plan.devices] == [("CPU", 3), ("127.0.0.1:1", 3), ("127.0.0.1:2", 6)]
    assert plan.size == sum(d[2] for d in plan.devices) and plan.size_vram == 0
    assert "9/12 layers on 2 device(s)" in plan.reason


def test_workers_take_shares_that_fit_and_an_empty_one_is_not_used(tmp_path):
    est = estimate(synthetic(tmp_path, layers=11), 1024)
    avg = (sum(est.layers) + 11 * est.kv_per_layer + est.output) // 12
    g = est.graph_partial
    inv = Inventory((), est.cpu_only + g + int(3.5 * avg),
                    remotes=(_remote(1, g + int(2.5 * avg)), _remote(2, g + int(7.5 * avg)), _remote(3, g)))
    plan = decide_rpc(est, inv)
    assert plan.tensor_split == (2.0, 7.0)  # the third worker holds nothing: not connected at all
    assert plan.rpc_servers == ("127.0.0.1:1", "127.0.0.1:2")
    assert [(d[0], d[1]) for d in plan.devices] == [("CPU", 3), ("127.0.0.1:1", 2), ("127.0.0.1:2", 7)]
    for (name, _, used), remote in zip(plan.devices[1:], inv.remotes):
        assert used <= remote.free


def test_num_gpu_puts_that_many_layers_on_the_workers(tmp_path):
    est = estimate(synthetic(tmp_path, layers=11), 1024)
    inv = Inventory((), 8 * GiB, remotes=(_remote(1, 4 * GiB), _remote(2, 4 * GiB)))
    plan = decide_rpc(est, inv, num_gpu=5)
    assert plan.num_gpu == 5 and sorted(plan.tensor_split) == [2.0, 3.0]


def test_with_a_local_gpu_the_cpu_takes_only_the_rest(tmp_path):
    est = estimate(synthetic(tmp_path, layers=11), 1024)
    gpu = Gpu(0, "g", "cuda", 80 * GiB, 40 * GiB)
    plan = decide_rpc(est, Inventory((gpu,), BIG_RAM, remotes=(_remote(1, 40 * GiB),)))
    assert plan.num_gpu == 12 and plan.tensor_split == (6.0, 6.0)  # GPU 0, then the worker
    assert plan.size_vram == plan.per_gpu[0] > 0 and plan.devices[0][:2] == ("CPU", 0)


def test_cpu_share_too_big_names_the_down_workers(tmp_path):
    est = estimate(synthetic(tmp_path, layers=11), 1024)
    inv = Inventory((), 10 * MiB, remotes=(_remote(1, 3 * MiB),), down=("rpc worker 127.0.0.1:2 is down (x)",))
    with pytest.raises(OllamaError, match=r"more system memory .* \(rpc worker 127.0.0.1:2 is down \(x\)\)"):
        decide_rpc(est, inv)


async def test_planner_asks_the_workers_and_falls_back_when_none_answers(smollm2_gguf):
    asked: list[set[str]] = []

    def remotes(busy):
        asked.append(busy)
        return ([_remote(1, 64 * GiB)], []) if len(asked) == 1 else ([], ["rpc worker 127.0.0.1:1 is down (x)"])
    planner = Planner(lambda: Inventory((), BIG_RAM), remotes=remotes)
    planner.busy = lambda: {"127.0.0.1:9"}
    spec = RunnerSpec(str(smollm2_gguf), 512, 1, num_gpu=-1)
    resolved, info = await planner(spec, {"name": "m"})
    assert asked == [{"127.0.0.1:9"}]
    assert resolved.rpc_servers == ("127.0.0.1:1",) and resolved.num_gpu > 0
    assert [d["name"] for d in info["devices"]] == ["CPU", "127.0.0.1:1"]
    resolved, info = await planner(spec, {"name": "m"})  # the worker is gone: a plain local load
    assert resolved.rpc_servers == () and resolved.num_gpu == 0 and "devices" not in info
    resolved, _ = await planner(RunnerSpec(str(smollm2_gguf), 512, 1, num_gpu=0), {})
    assert len(asked) == 2 and resolved.rpc_servers == ()  # num_gpu 0 keeps the model here, unasked
    small = Planner(lambda: Inventory((), 1 * MiB), remotes=remotes)  # all workers down and no room here
    with pytest.raises(OllamaError, match=r"more system memory .* \(rpc worker 127.0.0.1:1 is down \(x\)\)$"):
        await small(spec, {})


def test_runner_command_names_the_workers():
    cmd = runner_command(RunnerSpec("/m.gguf", 512, 1, num_gpu=9, tensor_split=(3.0, 6.0),
                                    rpc_servers=("127.0.0.1:1", "127.0.0.1:2")))
    assert cmd[cmd.index("--rpc") + 1] == "127.0.0.1:1,127.0.0.1:2"
    assert cmd[cmd.index("--tensor-split") + 1] == "3,6"
    assert "--rpc" not in runner_command(RunnerSpec("/m.gguf", 512, 1))


def test_ps_processor_column_lists_each_device():
    assert ui.processor(100, 0) == "100% CPU"
    devices = [{"name": "CPU", "layers": 3, "size": 34}, {"name": "10.0.0.5:50052", "layers": 3, "size": 33},
               {"name": "10.0.0.6:50052", "layers": 6, "size": 33}]
    assert ui.processor(100, 0, devices) == "34% CPU, 33% 10.0.0.5:50052, 33% 10.0.0.6:50052"


async def test_daemon_spreads_over_the_workers_and_leaves_out_a_lost_one(aiohttp_client, tmp_path, monkeypatch):
    from tests.test_offload import _daemon

    a, b = FakeWorker([(64 * GiB, 64 * GiB)]), FakeWorker([(64 * GiB, 64 * GiB)])
    monkeypatch.setenv("OLLAMALIKE_RPC_SERVERS", f"{a.endpoint},{b.endpoint}")
    try:
        client, factory = await _daemon(aiohttp_client, tmp_path, lambda: Inventory((), 64 * GiB))
        r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
        assert r.status == 200, await r.text()
        spec = factory.spawned[0].spec
        assert spec.rpc_servers == (a.endpoint, b.endpoint) and spec.num_gpu == sum(spec.tensor_split) > 0
        ps = (await (await client.get("/api/ps")).json())["models"][0]
        assert [d["name"] for d in ps["devices"]] == ["CPU", a.endpoint, b.endpoint]
        assert sum(d["size"] for d in ps["devices"]) == ps["size"]
        b.close()
        await client.post("/api/generate", json={"model": "tiny", "keep_alive": 0})
        r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
        assert r.status == 200 and factory.spawned[-1].spec.rpc_servers == (a.endpoint,)
    finally:
        a.close()
        b.close()


def test_a_bad_worker_address_stops_the_daemon_at_startup(tmp_path, monkeypatch):
    from ollamalike.server.app import create_app

    monkeypatch.setenv("OLLAMALIKE_RPC_SERVERS", "10.0.0.5:50052,10.0.0.6:port")
    with pytest.raises(OllamaError, match="OLLAMALIKE_RPC_SERVERS: invalid rpc worker address '10.0.0.6:port'"):
        create_app(tmp_path / "models")
