"""Where the throughput goes between the raw batch API and a full benchmark round, at one level.

Four measurements side by side, repeated `--repeats` times in alternation (this machine drifts, so
each row's spread is shown):

  raw         llama.cpp's batch API, N sequences prefilled together, no server (bench/raw_reference.py)
  engine      ollamalike's engine in this process, N requests submitted at once, no HTTP
  daemon      the real daemon, N streaming /api/generate requests sent at once (one round)
  rounds      the real daemon, N clients each sending `--requests` requests one after another
              (the request pattern of bench/throughput.py)

Writes bench/results/breakdown-<label>.md.

    .venv/bin/python bench/breakdown.py --label cpu-2core
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as tp  # noqa: E402

from ollamalike.runner.engine import Engine, Request  # noqa: E402
from ollamalike.runner.llama import LlamaModel, LoadParams  # noqa: E402


def raw(gguf: Path, n: int, tokens: int, threads: int, ctx: int) -> float:
    out = subprocess.run([sys.executable, str(tp.ROOT / "bench" / "raw_reference.py"), "--model", str(gguf),
                          "--levels", str(n), "--tokens", str(tokens), "--threads", str(threads),
                          "--ctx", str(ctx), "--prompts", json.dumps(tp.PROMPTS)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])["tok_s"]


def engine(gguf: Path, n: int, tokens: int, threads: int, ctx: int) -> float:
    model = LlamaModel(LoadParams(path=str(gguf), n_ctx=ctx * n, n_seq_max=n, n_threads=threads))
    eng = Engine(model, n)
    eng.start()
    try:
        finished, counts = threading.Semaphore(0), []

        def request(i: int) -> Request:
            def emit(ev):
                if ev.get("done") or "error" in ev:
                    counts.append(ev.get("eval_count", 0))
                    finished.release()
            return Request(tokens=model.tokenize(tp.PROMPTS[i % len(tp.PROMPTS)]), emit=emit, num_ctx=ctx,
                           options={"temperature": 0, "num_predict": tokens})
        reqs = [request(i) for i in range(n)]
        t0 = time.perf_counter()
        for r in reqs:
            eng.submit(r)
        for _ in reqs:
            finished.acquire()
        return sum(counts) / (time.perf_counter() - t0)
    finally:
        eng.close()
        model.close()


async def daemon_once(url: str, n: int, tokens: int) -> float:
    async with aiohttp.ClientSession() as s:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(tp.stream_ollamalike(s, url, tp.PROMPTS[i % len(tp.PROMPTS)], tokens)
                                      for i in range(n)))
        return sum(count for _, count in done) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model)")
    ap.add_argument("--level", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests per client in the `rounds` row")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--out", default=str(tp.ROOT / "bench" / "results"))
    ap.add_argument("--label", default="machine")
    args = ap.parse_args()
    gguf = Path(args.model or tp.smollm2_path())
    n = args.level
    port = tp.free_port()
    srv = tp.Server([sys.executable, "-m", "ollamalike", "serve"], port=port, env={
        "OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_MODELS": tempfile.mkdtemp(prefix="bench-breakdown-"),
        "OLLAMALIKE_KEEP_ALIVE": "-1", "OLLAMALIKE_NUM_PARALLEL": str(n),
        "OLLAMALIKE_CONTEXT_LENGTH": str(args.ctx), "OLLAMALIKE_NUM_THREADS": str(args.threads)})
    rows: dict[str, list[float]] = {"raw": [], "engine": [], "daemon": [], "rounds": []}
    try:
        asyncio.run(tp.ollamalike_setup(srv.url, gguf))
        for i in range(args.repeats):
            # the daemon's runner stays loaded between rows: run it idle while the others measure
            rows["raw"].append(raw(gguf, n, args.tokens, args.threads, args.ctx))
            rows["engine"].append(engine(gguf, n, args.tokens, args.threads, args.ctx))
            rows["daemon"].append(asyncio.run(daemon_once(srv.url, n, args.tokens)))
            level = asyncio.run(tp.sweep_level(tp.stream_ollamalike, srv.url, n, args.requests, args.tokens))
            rows["rounds"].append(level["tok_s"])
            print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()), flush=True)
    finally:
        srv.stop()
    ref = statistics.median(rows["raw"])
    lines = [f"# Throughput breakdown at {n} sequences: {gguf.name}", "",
             f"Machine: {tp.machine()}  ", f"Date: {time.strftime('%Y-%m-%d %H:%M')}  ",
             f"Greedy, {args.tokens} tokens each, {args.repeats} alternating repeats. Command: "
             f"`bench/breakdown.py --label {args.label}`", "",
             "| measurement | tok/s (median) | min - max | median / raw |", "|---|---|---|---|"]
    for name, vals in rows.items():
        lines.append(f"| {name} | {statistics.median(vals):.1f} | {min(vals):.1f} - {max(vals):.1f} | "
                     f"{statistics.median(vals) / ref:.2f} |")
    lines += ["", *__doc__.split("\n\n")[1:3]]
    out = Path(args.out) / f"breakdown-{args.label}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
