"""Two models generating at once on one machine, vs. each alone.

One daemon, two models loaded side by side (two runner processes): SmolLM2-135M and Gemma 3 270M by
default. Each round measures model A alone, model B alone, then both at once: one single-stream
request each, `--tokens` greedy tokens. Reported per setup (each a fresh daemon):

  alone A, alone B   decode tok/s of the request (eval_count / eval_duration)
  together A, B      the same, the two requests running at the same time
  pair aggregate     both requests' tokens / the wall time until both are done
  ratio              pair aggregate / the mean of the two alone (the target is >= 0.9)

Setups: `shared` (the default: the daemon's runners share the cores while more than one is
decoding), `all-cores` (NUM_THREADS set to every core, which is what each runner did before the
sharing; a user-set NUM_THREADS is honoured as is), `all-cores-passive` (the same with
OMP_WAIT_POLICY=passive: llama.cpp's OpenMP threads sleep at barriers instead of spinning),
`shared-passive` (both).
Writes bench/results/two-models-<label>.md and .json.

    .venv/bin/python bench/two_models.py --label cpu-2core
    .venv/bin/python bench/two_models.py --setups shared --rounds 5 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ROOT, Server, free_port, machine  # noqa: E402

PROMPT = "Once upon a time, in a kingdom by the sea, there lived"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


SETUPS = {
    "shared": {},
    "all-cores": {"OLLAMALIKE_NUM_THREADS": str(cores())},
    "all-cores-passive": {"OLLAMALIKE_NUM_THREADS": str(cores()), "OMP_WAIT_POLICY": "passive"},
    "shared-passive": {"OMP_WAIT_POLICY": "passive"},
}


async def create(s: aiohttp.ClientSession, url: str, name: str, gguf: Path) -> None:
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    with open(gguf, "rb") as f:
        async with s.post(f"{url}/api/blobs/{digest}", data=f) as r:
            assert r.status in (200, 201), await r.text()
    async with s.post(url + "/api/create", json={"model": name, "files": {gguf.name: digest},
                                                 "stream": False}) as r:
        assert r.status == 200, await r.text()


async def generate(s: aiohttp.ClientSession, url: str, model: str, tokens: int) -> dict:
    body = {"model": model, "prompt": PROMPT, "raw": True, "stream": True, "keep_alive": -1,
            "options": {"temperature": 0, "num_predict": tokens, "seed": 1}}
    final: dict = {}
    async with s.post(url + "/api/generate", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if line.strip():
                ev = json.loads(line)
                assert "error" not in ev, ev
                if ev.get("done"):
                    final = ev
    final["tok_s"] = final["eval_count"] / (final["eval_duration"] / 1e9)
    return final


async def one_setup(name: str, env: dict, models: dict[str, Path], rounds: int, tokens: int) -> dict:
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"ollamalike-two-models-{os.getpid()}-{name}"
    port = free_port()
    server = Server([sys.executable, "-P", "-m", "ollamalike", "serve"], port=port, env={
        "OLLAMALIKE_HOST": f"127.0.0.1:{port}", "OLLAMALIKE_MODELS": str(home / "models"),
        "OLLAMALIKE_NOAUTOSTART": "1", "OLLAMALIKE_MAX_LOADED_MODELS": "2", "PYTHONPATH": str(ROOT), **env},
        ready="/api/version")
    a, b = list(models)
    rows: dict[str, list[float]] = {k: [] for k in ("alone_a", "alone_b", "together_a", "together_b",
                                                     "pair", "mean_alone", "ratio")}
    counts = []
    load = [os.getloadavg()[0]]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
            url = server.url
            for model, gguf in models.items():
                await create(s, url, model, gguf)
                await generate(s, url, model, 4)  # load, and keep loaded (keep_alive -1)
            for _ in range(rounds):
                ra = await generate(s, url, a, tokens)
                await asyncio.sleep(0.5)
                rb = await generate(s, url, b, tokens)
                await asyncio.sleep(0.5)
                t0 = time.perf_counter()
                ta, tb = await asyncio.gather(generate(s, url, a, tokens), generate(s, url, b, tokens))
                wall = time.perf_counter() - t0
                await asyncio.sleep(0.5)
                mean_alone = (ra["tok_s"] + rb["tok_s"]) / 2
                pair = (ta["eval_count"] + tb["eval_count"]) / wall
                for k, v in (("alone_a", ra["tok_s"]), ("alone_b", rb["tok_s"]), ("together_a", ta["tok_s"]),
                             ("together_b", tb["tok_s"]), ("pair", pair), ("mean_alone", mean_alone),
                             ("ratio", pair / mean_alone)):
                    rows[k].append(v)
                counts.append([ra["eval_count"], rb["eval_count"], ta["eval_count"], tb["eval_count"]])
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    load.append(os.getloadavg()[0])
    return {"setup": name, "env": env, "rounds": rows, "eval_counts": counts, "loadavg": load}


def summarise(runs: list[dict]) -> dict:
    """One setup's rounds from every repeat, with median, min and max."""
    rows = {k: [v for r in runs for v in r["rounds"][k]] for k in runs[0]["rounds"]}
    return {"setup": runs[0]["setup"], "env": runs[0]["env"], "rounds": rows,
            "eval_counts": [c for r in runs for c in r["eval_counts"]],
            "loadavg_1min": [x for r in runs for x in r["loadavg"]],
            "median": {k: statistics.median(v) for k, v in rows.items()},
            "min": {k: min(v) for k, v in rows.items()}, "max": {k: max(v) for k, v in rows.items()}}


def report(results: list[dict], models: dict[str, Path], args, cmd: str) -> str:
    a, b = list(models)
    lines = [f"# Two models generating at once: {a} + {b}", "",
             f"Machine: {machine()}  ", f"Date: {time.strftime('%Y-%m-%d %H:%M')}  ",
             f"One single-stream request per model, {args.tokens} greedy tokens; {args.rounds} rounds per daemon "
             f"start, {args.repeats} starts per setup, setups alternating (median, min - max). "
             f"Command: `{cmd}`", "",
             f"| setup | {a} alone | {b} alone | {a} together | {b} together | pair aggregate | "
             f"mean alone | pair / mean alone |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        def cell(k, fmt="{:.1f}"):
            return f"{fmt.format(r['median'][k])} ({fmt.format(r['min'][k])} - {fmt.format(r['max'][k])})"
        lines.append(f"| {r['setup']} | {cell('alone_a')} | {cell('alone_b')} | {cell('together_a')} | "
                     f"{cell('together_b')} | {cell('pair')} | {cell('mean_alone')} | {cell('ratio', '{:.2f}')} |")
    lines += ["", "tok/s. `alone`/`together`: the request's own decode rate (eval_count / eval_duration); "
              "`pair aggregate`: both requests' tokens over the wall time until both finished.",
              "Setups: `shared` = ollamalike's default (busy runners split the cores); `all-cores` = "
              "NUM_THREADS = every core for each runner (the behaviour before the sharing); "
              "`all-cores-passive` = the same with OMP_WAIT_POLICY=passive (OpenMP threads sleep at "
              "barriers instead of spinning); `shared-passive` = both.",
              "1-minute load average during each setup (other work on this machine): " + "; ".join(
                  f"{r['setup']} {min(r['loadavg_1min']):.1f} - {max(r['loadavg_1min']):.1f}" for r in results)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="all-cores,shared,all-cores-passive,shared-passive")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per daemon start")
    ap.add_argument("--repeats", type=int, default=3, help="times each setup's daemon is started, alternating")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--label", default="")
    ap.add_argument("--models", default="smollm2,gemma3", help="two keys of scripts/fetch_models.py")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed bench still stops its daemon
    sys.path.insert(0, str(ROOT / "scripts"))
    from fetch_models import fetch

    models = {key: fetch(key) for key in args.models.split(",")}
    assert len(models) == 2, "two different models"
    runs: dict[str, list[dict]] = {name: [] for name in args.setups.split(",")}
    for _ in range(args.repeats):  # setups alternate: this machine's load drifts
        for name in runs:
            r = asyncio.run(one_setup(name, SETUPS[name], models, args.rounds, args.tokens))
            print(json.dumps({"setup": name, "rounds": r["rounds"], "loadavg": r["loadavg"]}), flush=True)
            runs[name].append(r)
    results = [summarise(v) for v in runs.values()]
    cmd = "bench/two_models.py " + " ".join(sys.argv[1:])
    text = report(results, models, args, cmd)
    print(text)
    if args.label:
        out = ROOT / "bench" / "results" / f"two-models-{args.label}"
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "command": cmd,
                                                        "tokens": args.tokens, "results": results}, indent=1))


if __name__ == "__main__":
    main()
