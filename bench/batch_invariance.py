"""Do several rows of one sequence in one decode give the same logits as the same rows one by one?

Speculative decoding verifies a sequence's drafts as extra rows of its step; its output is plain
decoding's token for token only if each row's logits do not depend on how many rows of the sequence
share the decode. For each context length: two models prefill the same `--ctx` tokens, then one
decodes the next `--rows` tokens in one call and the other one at a time; reported is the largest
difference between their logits and whether any row's argmax differs. With the flash attention
setting given (`--flash-attn`: -1 auto, 0 off, 1 on). Writes bench/results/batch-invariance-<label>.md.

`--across streams|unified` asks the same of different sequences (concurrent requests): four
sequences each prefill `--ctx` tokens of their own; the first one's next token is decoded alone, then
again in one decode with the other three's next tokens; with a KV stream per sequence or one unified
cache. Writes bench/results/batch-invariance-<label>-across-<streams|unified>.md.

    .venv/bin/python bench/batch_invariance.py --label cpu-2core
    .venv/bin/python bench/batch_invariance.py --label cpu-2core --across streams
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from ollamalike.runner.llama import LlamaModel, LoadParams  # noqa: E402
from throughput import machine, smollm2_path  # noqa: E402


def _prefill(m: LlamaModel, toks: list[int], seq: int) -> None:
    """Decode `toks` into sequence `seq` from position 0, a batch at a time, no logits."""
    for start in range(0, len(toks), m.n_batch):
        part = toks[start:start + m.n_batch]
        assert m.decode([(t, start + i, seq, False) for i, t in enumerate(part)]) == 0


def compare(path: str, ctx: int, rows: int, threads: int, flash_attn: int) -> tuple[float, int]:
    """(largest logit difference, rows whose argmax differs) between one decode of `rows` rows and
    `rows` single-row decodes after the same `ctx`-token prefix."""
    def load() -> LlamaModel:
        return LlamaModel(LoadParams(path=path, n_ctx=4096, n_seq_max=1, n_threads=threads, flash_attn=flash_attn))
    together, alone = load(), load()
    text = "The quick brown fox jumps over the lazy dog, and then it runs back home. " * 400
    toks = together.tokenize(text)[:ctx + rows]
    for m in (together, alone):
        _prefill(m, toks[:ctx], 0)
    nxt = [(toks[ctx + j], ctx + j, 0, True) for j in range(rows)]
    assert together.decode(nxt) == 0
    batched = [together.logits(j) for j in range(rows)]
    worst, flips = 0.0, 0
    for j, row in enumerate(nxt):
        assert alone.decode([row]) == 0
        single = alone.logits(0)
        worst = max(worst, float(np.abs(batched[j] - single).max()))
        flips += int(batched[j].argmax() != single.argmax())
    together.close()
    alone.close()
    return worst, flips


def compare_across(path: str, ctx: int, others: int, threads: int, flash_attn: int, unified: bool) -> tuple[float, int]:
    """(largest logit difference, 1 if the argmax differs) between sequence 0's next-token row decoded
    alone and in one decode with `others` other sequences' next-token rows, each after `ctx` tokens."""
    n = others + 1
    m = LlamaModel(LoadParams(path=path, n_ctx=4096 * n, n_seq_max=n, n_threads=threads, flash_attn=flash_attn,
                              kv_unified=unified))
    texts = ["The quick brown fox jumps over the lazy dog, and then it runs back home. ",
             "Once upon a time there was a small village by the sea. "]
    seqs = [m.tokenize(texts[i % 2] * 400)[i:] for i in range(n)]
    for seq, toks in enumerate(seqs):
        _prefill(m, toks[:ctx], seq)
    assert m.decode([(seqs[0][ctx], ctx, 0, True)]) == 0
    alone = m.logits(0)
    m.seq_rm(0, ctx, -1)
    assert m.decode([(toks[ctx], ctx, seq, True) for seq, toks in enumerate(seqs)]) == 0
    batched = m.logits(0)
    m.close()
    return float(np.abs(batched - alone).max()), int(batched.argmax() != alone.argmax())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF path (default: the SmolLM2 test model)")
    ap.add_argument("--ctx", default="64,200,256,400,800", help="context lengths, comma-separated")
    ap.add_argument("--rows", type=int, default=9, help="rows decoded together (1 + a draft of 8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", type=int, default=-1)
    ap.add_argument("--label", default="cpu-2core")
    ap.add_argument("--across", choices=("streams", "unified"),
                    help="compare a sequence alone with it beside three others (this KV layout) instead")
    args = ap.parse_args()
    path = args.model or smollm2_path()
    if args.across:
        return across(args, path)
    lines = [f"# Batch invariance of one sequence's rows, {args.label}", "",
             f"{machine()}; {Path(path).name}; {args.threads} threads, flash attention {args.flash_attn}, "
             f"{args.rows} rows in one decode against the same rows one by one; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Command: `bench/batch_invariance.py "
             f"{' '.join(sys.argv[1:])}`", "",
             "| context tokens | largest logit difference | rows whose argmax differs |", "|---|---|---|"]
    for ctx in (int(x) for x in args.ctx.split(",")):
        worst, flips = compare(path, ctx, args.rows, args.threads, args.flash_attn)
        lines.append(f"| {ctx} | {worst:.3g} | {flips} of {args.rows} |")
        print(lines[-1], flush=True)
    out = ROOT / "bench" / "results" / f"batch-invariance-{args.label}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def across(args: argparse.Namespace, path: str) -> None:
    layout = "a KV stream per sequence" if args.across == "streams" else "one unified KV cache"
    lines = [f"# Batch invariance across sequences ({layout}), {args.label}", "",
             f"{machine()}; {Path(path).name}; {args.threads} threads, flash attention {args.flash_attn}; "
             f"a sequence's next-token row decoded alone against in one decode with 3 other sequences' rows, "
             f"each sequence after that many tokens of its own; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             f"Command: `bench/batch_invariance.py {' '.join(sys.argv[1:])}`", "",
             "| context tokens | largest logit difference | argmax differs |", "|---|---|---|"]
    for ctx in (int(x) for x in args.ctx.split(",")):
        worst, flip = compare_across(path, ctx, 3, args.threads, args.flash_attn, args.across == "unified")
        lines.append(f"| {ctx} | {worst:.3g} | {'yes' if flip else 'no'} |")
        print(lines[-1], flush=True)
    out = ROOT / "bench" / "results" / f"batch-invariance-{args.label}-across-{args.across}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
