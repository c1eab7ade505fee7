"""The ceiling of this machine: llama.cpp's batch API driven directly, no server, no HTTP.

For each level N: prefill N prompts in one batch, then decode `--tokens` steps of N tokens each,
greedy. Prints one JSON object per level: {"level", "tokens", "seconds", "tok_s", "ttft_s", "itl_s"}.
The context is configured as ollamalike's runner configures it (one KV stream per sequence).
"""

from __future__ import annotations

import argparse
import json
import time

from ollamalike.runner.llama import LlamaModel, LoadParams


def run_level(path: str, n: int, tokens: int, prompts: list[str], threads: int, n_ctx: int, gpu_layers: int = 0) -> dict:
    model = LlamaModel(LoadParams(path=path, n_ctx=n_ctx * n, n_seq_max=n, n_threads=threads, n_gpu_layers=gpu_layers))
    try:
        samplers = [model.sampler({"temperature": 0}) for _ in range(n)]
        toks = [model.tokenize(prompts[i % len(prompts)]) for i in range(n)]
        t0 = time.perf_counter()
        # prefill every prompt but its last token, in n_batch chunks; then one batch of last tokens
        rows = [(tok, pos, seq, False) for seq, t in enumerate(toks) for pos, tok in enumerate(t[:-1])]
        for start in range(0, len(rows), model.n_batch):
            assert model.decode(rows[start:start + model.n_batch]) == 0
        assert model.decode([(t[-1], len(t) - 1, seq, True) for seq, t in enumerate(toks)]) == 0
        nxt = [samplers[seq].sample(model.ctx, seq) for seq in range(n)]
        ttft = time.perf_counter() - t0
        pos = [len(t) for t in toks]
        t1 = time.perf_counter()
        for _ in range(tokens - 1):
            assert model.decode([(nxt[s], pos[s], s, True) for s in range(n)]) == 0
            pos = [p + 1 for p in pos]
            nxt = [samplers[s].sample(model.ctx, s) for s in range(n)]
        decode_s = time.perf_counter() - t1
        for s in samplers:
            s.free()
        total = ttft + decode_s
        return {"level": n, "tokens": n * tokens, "seconds": total, "tok_s": n * tokens / total,
                "decode_tok_s": n * (tokens - 1) / decode_s, "ttft_s": ttft, "itl_s": decode_s / (tokens - 1)}
    finally:
        model.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--levels", default="1,2,4,8,16,32")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--prompts", default="[]")
    ap.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded to the GPU (999: all)")
    args = ap.parse_args()
    prompts = json.loads(args.prompts) or ["Once upon a time"]
    for n in (int(x) for x in args.levels.split(",")):
        print(json.dumps(run_level(args.model, n, args.tokens, prompts, args.threads, args.ctx,
                                        args.gpu_layers)), flush=True)


if __name__ == "__main__":
    main()
