"""How long the engine takes to place a burst of waiting requests in its slots, before any decode.

Every request of a burst that arrives together (clients whose previous answers ended in the same
step) waits for the whole admission round, so its cost is added to each one's first-token time. The
engine runs over a fake model (no llama.cpp: placement is pure Python), with a KV stream per slot (the
default for small models, where the placement rules do the most) and with one unified cache; the
slots hold what the case says, a burst of as many requests as slots arrives, and one admission round
is timed. Cases:
- chat turns: each slot holds a conversation (a shared 400-token system prompt and 200 tokens of its
  own); each request is one of them going on with a 30-token message;
- shared system prompt: the slots as above; the requests are new 30-token questions under the same
  system prompt;
- new prompts: the slots as above; the requests are 31 tokens sharing nothing with them;
- bench sweep: bench/throughput.py's burst at its level: 8 short prompts, each slot holding one of
  them and 64 tokens of answer.

Each `--rev` (a git revision or a source tree, as bench/ab.py) is timed in a process of its own;
the revisions take turns `--repeats` times and the medians are reported.
Writes bench/results/admission-<label>.md.

    .venv/bin/python bench/admission.py --rev 6c88874 --rev HEAD --label cpu-2core
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("chat turns", "shared system prompt", "new prompts", "bench sweep")


def _burst(case: str, n: int, unified: bool) -> float:
    """Seconds one admission round takes to place a burst of `n` requests in `n` slots of the
    engine on sys.path (the tree `worker` put first)."""
    from ollamalike.runner.engine import Engine, Request

    class Sampler:
        def free(self) -> None:
            pass

    class Model:  # just what admission touches
        n_seq_max, n_batch, n_vocab, can_shift, ctx, threads = 64, 512, 49152, True, None, 1
        n_ctx = seq_ctx = 8192
        kv_unified = unified

        def sampler(self, *args):
            return Sampler()

        def seq_rm(self, *args):
            pass

        def copy_prefix(self, *args):
            return True

    rnd = random.Random(n)

    def words(k: int) -> list[int]:
        return [rnd.randrange(49152) for _ in range(k)]
    engine = Engine(Model(), n)
    system = words(400)
    if case == "bench sweep":
        prompts = [words(rnd.randrange(8, 14)) for _ in range(8)]
        answers = [words(64) for _ in range(8)]
        held = [prompts[i % 8] + answers[i % 8] for i in range(n)]
        burst = [list(prompts[i % 8]) for i in rnd.sample(range(n), n)]
    else:
        held = [system + words(200) for _ in range(n)]
        burst = {"chat turns": [h + words(30) for h in held],
                 "shared system prompt": [system + words(30) for _ in range(n)],
                 "new prompts": [words(31) for _ in range(n)]}[case]
    for slot, tokens in zip(engine.slots, held):
        slot.cached = list(tokens)
    for tokens in burst:
        engine.waiting.append(Request(tokens=tokens, emit=lambda ev: None, num_ctx=4096))
    t0 = time.perf_counter()
    engine._admit()
    took = time.perf_counter() - t0
    assert len(engine.active) == n
    return took


def worker(tree: str, levels: list[int]) -> None:
    sys.path.insert(0, tree)
    out = {f"{case}|{unified}|{n}": _burst(case, n, unified)
           for case in CASES for unified in (False, True) for n in levels}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", action="append", default=[], help="git revision or source tree (repeat)")
    ap.add_argument("--levels", default="8,16,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--label", default="machine")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if args.worker:
        return worker(args.worker, levels)
    if not args.rev:
        ap.error("give at least one --rev")
    sys.path.insert(0, str(ROOT / "bench"))
    from ab import remove_worktrees, source_tree
    from throughput import machine
    worktrees: list[Path] = []
    try:
        trees = {rev: source_tree(rev, worktrees) for rev in args.rev}
        runs: dict[str, list[dict[str, float]]] = {rev: [] for rev in args.rev}
        for _ in range(args.repeats):
            for rev, tree in trees.items():
                done = subprocess.run([sys.executable, __file__, "--worker", str(tree), "--levels", args.levels],
                                      check=True, capture_output=True, text=True)
                runs[rev].append(json.loads(done.stdout))
    finally:
        remove_worktrees(worktrees)
    lines = [f"# Admission of a burst: {machine()}", "",
             f"One admission round placing as many waiting requests as there are slots (fake model, no decode); "
             f"median of {args.repeats} turns, ms. Cases: see bench/admission.py.", "",
             "| case | cache | requests | " + " | ".join(f"`{rev}` ms" for rev in args.rev) + " |",
             "|---|---|---|" + "---|" * len(args.rev)]
    for case in CASES:
        for unified in (False, True):
            for n in levels:
                key = f"{case}|{unified}|{n}"
                cells = [f"{statistics.median(r[key] for r in runs[rev]) * 1000:.1f}" for rev in args.rev]
                lines.append(f"| {case} | {'unified' if unified else 'a stream per slot'} | {n} | "
                             + " | ".join(cells) + " |")
    out = Path(args.out) / f"admission-{args.label}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
