"""The `ollamalike` command (typer). Talks to the daemon over HTTP only; one error boundary in main()."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from ollamalike import __version__, config
from ollamalike.cli import ui
from ollamalike.cli.daemon import run_with_client
from ollamalike.client import Client, ResponseError
from ollamalike.errors import OllamaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Large language model runner, Ollama-compatible.")


def _env_help() -> str:
    lines = ["\b", "Environment variables:"]
    lines += [f"  {env:<32} {help_}" for env, _, help_ in config.describe()]
    return "\n".join(lines)


# --- commands ---------------------------------------------------------------------------------
@app.command(epilog=_env_help())
def serve() -> None:
    """Start the ollamalike daemon (also as `start`)."""
    from ollamalike.server.app import serve as run_server

    run_server()


app.command("start", hidden=True, epilog=_env_help(), help="Start the ollamalike daemon (alias of serve).")(serve)


@app.command()
def create(
    model: str,
    file: Annotated[Path, typer.Option("--file", "-f", help="Modelfile path")] = Path("Modelfile"),
    quantize: Annotated[Optional[str], typer.Option("--quantize", "-q", help="quantize the model to this level (e.g. q4_K_M)")] = None,
) -> None:
    """Create a model from a Modelfile."""
    from ollamalike.cli.create import create as do_create

    run_with_client(do_create, model, file, quantize)


@app.command()
def show(
    model: str,
    license: Annotated[bool, typer.Option("--license", help="show the license")] = False,
    modelfile: Annotated[bool, typer.Option("--modelfile", help="show the Modelfile")] = False,
    parameters: Annotated[bool, typer.Option("--parameters", help="show the parameters")] = False,
    template: Annotated[bool, typer.Option("--template", help="show the template")] = False,
    system: Annotated[bool, typer.Option("--system", help="show the system message")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show all metadata and the tensors")] = False,
) -> None:
    """Show information for a model."""
    from ollamalike.cli.show import show as do_show

    flags = {"license": license, "modelfile": modelfile, "parameters": parameters, "template": template,
             "system": system}
    chosen = [k for k, v in flags.items() if v]
    if len(chosen) > 1:
        raise OllamaError("only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified")
    run_with_client(do_show, model, chosen[0] if chosen else None, verbose)


def _go_bool(name: str, value: str) -> bool:
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise OllamaError(f'invalid argument "{value}" for "--{name}" flag: use true or false')


@app.command()
def run(
    model: str,
    prompt: Annotated[Optional[list[str]], typer.Argument(help="prompt; omit for an interactive chat")] = None,
    keepalive: Annotated[Optional[str], typer.Option("--keepalive", help="how long to keep the model loaded, e.g. 5m")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="show timings for the response")] = False,
    format: Annotated[Optional[str], typer.Option("--format", help="response format: json, or a JSON schema (inline or a file)")] = None,
    think: Annotated[Optional[str], typer.Option("--think", help="thinking: --think (true), --think=false, or a level --think=high|medium|low")] = None,
    hidethinking: Annotated[bool, typer.Option("--hidethinking", help="hide the thinking (if the model thinks)")] = False,
    nowordwrap: Annotated[bool, typer.Option("--nowordwrap", help="don't wrap words to the next line (wrapping is only ever done on a terminal)")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="accepted for compatibility with ollama; changes nothing (see pull --help)")] = False,
    dimensions: Annotated[Optional[int], typer.Option("--dimensions", min=1, help="embedding models: truncate the vector to this many dimensions")] = None,
    truncate: Annotated[Optional[str], typer.Option("--truncate", help="embedding models: cut inputs longer than the context (default); --truncate=false errors instead")] = None,
) -> None:
    """Run a model: one-shot with a prompt or piped stdin, else an interactive chat."""
    from ollamalike.cli import chat

    opts = chat.RunOptions(model=model, keep_alive=chat.parse_keep_alive(keepalive), verbose=verbose,
                           format=chat.parse_format(format), hide_thinking=hidethinking, wordwrap=not nowordwrap,
                           dimensions=dimensions, insecure=insecure,
                           truncate=None if truncate is None else _go_bool("truncate", truncate))
    if think is not None:
        opts.think, opts.think_set = chat.parse_think(think), True
    text = " ".join(prompt or [])
    interactive = not text and sys.stdin.isatty() and sys.stdout.isatty()
    if not interactive and not sys.stdin.isatty():
        piped = sys.stdin.read()
        text = f"{piped} {text}" if piped and text else (piped or text)
    if interactive:
        from ollamalike.cli.repl import repl

        repl(opts)
    else:
        run_with_client(chat.one_shot, opts, text)


@app.command()
def pull(
    model: str,
    insecure: Annotated[bool, typer.Option("--insecure", help="accepted for compatibility with ollama; changes nothing: "
                                                          "pulls use the Hub's HTTPS or OLLAMALIKE_HF_MIRROR")] = False,
) -> None:
    """Pull a model: a catalog name (llama3.2:1b) or any Hugging Face GGUF repo (hf.co/<org>/<repo>[:quant])."""
    from ollamalike.cli.pull import pull as do_pull

    run_with_client(do_pull, model, insecure)


@app.command()
def stop(model: str) -> None:
    """Stop a running model."""
    async def go(client: Client) -> None:
        # as Ollama: unload by asking for keep_alive 0 (the runner may be listed under another name
        # that shares its weights); only a model that does not exist is an error
        try:
            async for _ in client.generate({"model": model, "keep_alive": 0}):
                pass
        except ResponseError as exc:
            if exc.status == 404 or "not found" in exc.message:
                raise OllamaError(f'couldn\'t find model "{model}" to stop') from None
            raise
    run_with_client(go)


@app.command("list")
def list_(prefix: Annotated[Optional[str], typer.Argument()] = None) -> None:
    """List models."""
    async def go(client: Client) -> None:
        models = await client.list()
        rows = [[m["name"], m["digest"][:12], ui.human_bytes(m["size"]), ui.ago(m["modified_at"])]
                for m in models if not prefix or m["name"].startswith(prefix)]
        ui.table(["NAME", "ID", "SIZE", "MODIFIED"], rows)
    run_with_client(go)


app.command("ls", hidden=True, help="List models.")(list_)


@app.command()
def ps(prefix: Annotated[Optional[str], typer.Argument()] = None) -> None:
    """List running models."""
    async def go(client: Client) -> None:
        rows = [[m["name"], m["digest"][:12], ui.human_bytes(m["size"]),
                 ui.processor(m["size"], m.get("size_vram", 0), m.get("devices")), str(m.get("context_length", "")),
                 ui.until(m["expires_at"])]
                for m in await client.ps() if not prefix or m["name"].startswith(prefix)]
        ui.table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows)
    run_with_client(go)


@app.command()
def cp(source: str, destination: str) -> None:
    """Copy a model."""
    async def go(client: Client) -> None:
        await client.copy(source, destination)
        print(f"copied '{source}' to '{destination}'")
    run_with_client(go)


@app.command()
def rm(models: list[str]) -> None:
    """Remove one or more models."""
    async def go(client: Client) -> None:
        for name in models:
            try:  # unload first, so the memory comes back
                async for _ in client.generate({"model": name, "keep_alive": 0}):
                    pass
            except OllamaError:
                pass
            await client.delete(name)
            print(f"deleted '{name}'")
    run_with_client(go)


@app.command(hidden=True)
def runner(
    model: Annotated[str, typer.Option("--model")],
    ctx: Annotated[int, typer.Option("--ctx")] = 4096,
    parallel: Annotated[int, typer.Option("--parallel")] = 1,
    batch: Annotated[int, typer.Option("--batch")] = 512,
    threads: Annotated[int, typer.Option("--threads")] = 0,
    gpu_layers: Annotated[int, typer.Option("--gpu-layers")] = 0,
    main_gpu: Annotated[int, typer.Option("--main-gpu")] = 0,
    tensor_split: Annotated[str, typer.Option("--tensor-split", help="layers per GPU, e.g. 3,1")] = "",
    port: Annotated[int, typer.Option("--port")] = 0,
    split: Annotated[Optional[list[str]], typer.Option("--split", help="further split GGUF files, in order")] = None,
    kv_unified: Annotated[bool, typer.Option("--kv-unified", help="one KV cache shared by all sequences")] = False,
    kv_size: Annotated[int, typer.Option("--kv-size", help="KV cells of the unified cache")] = 0,
    kv_type: Annotated[str, typer.Option("--kv-type", help="KV cache data type: f16, q8_0, q4_0")] = "f16",
    flash_attn: Annotated[int, typer.Option("--flash-attn", help="-1 auto, 0 off, 1 on")] = -1,
    no_mmap: Annotated[bool, typer.Option("--no-mmap", help="read the weights into memory instead of mapping")] = False,
    lora: Annotated[Optional[list[str]], typer.Option("--lora", help="a LoRA adapter GGUF, applied at scale 1")] = None,
    mmproj: Annotated[str, typer.Option("--mmproj", help="the vision projector GGUF")] = "",
    rpc: Annotated[str, typer.Option("--rpc", help="RPC workers host:port,... (devices after local GPUs)")] = "",
    draft: Annotated[str, typer.Option("--draft", help="a draft model GGUF (same vocabulary) for speculative decoding")] = "",
) -> None:
    """Internal: serve one model for the daemon."""
    from types import SimpleNamespace

    from ollamalike.runner.main import serve as run_runner

    run_runner(SimpleNamespace(model=model, ctx=ctx, parallel=parallel, batch=batch, threads=threads,
                               gpu_layers=gpu_layers, main_gpu=main_gpu, port=port, splits=split or [],
                               kv_unified=kv_unified, kv_size=kv_size, debug=config.debug(),
                               kv_type=kv_type, flash_attn=flash_attn, use_mmap=not no_mmap, loras=lora or [],
                               mmproj=mmproj, tensor_split=[float(x) for x in tensor_split.split(",") if x.strip()],
                               rpc=[x for x in rpc.split(",") if x.strip()], draft=draft))


@app.command("rpc-worker")
def rpc_worker(
    host: Annotated[str, typer.Option("--host", help="address to listen on; keep it on a private network")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 50052,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads (default: the usable cores)")] = 0,
    mem: Annotated[int, typer.Option("--mem", help="MiB of memory to offer (default: all of it)")] = 0,
) -> None:
    """Lend this machine's CPU to daemons elsewhere: llama.cpp's RPC server.

    \b
    A daemon started with OLLAMALIKE_RPC_SERVERS=this-host:50052 puts some of a model's layers here.
    Example:  ollamalike rpc-worker --host 10.0.0.5 --port 50052 --mem 8192
    """
    if not 0 < port < 65536:
        raise OllamaError(f"invalid port {port}, expected 1-65535")
    if mem < 0 or threads < 0:
        raise OllamaError("--mem and --threads must not be negative")
    import socket

    if ":" in host:
        raise OllamaError(f"invalid --host '{host}': llama.cpp's RPC server listens on IPv4 addresses only")
    try:
        address = socket.gethostbyname(host)  # the server takes an IPv4 address, not a name
    except OSError:
        raise OllamaError(f"invalid --host '{host}': cannot resolve it to an IPv4 address") from None
    endpoint = f"{address}:{port}"
    from ollamalike.runner import llama

    if not llama.rpc_supported():
        raise OllamaError("this llama.cpp has no RPC backend; rebuild it with ./install.sh (GGML_RPC=ON)")
    if not address.startswith("127."):
        print(f"warning: rpc worker on {endpoint} has no authentication: anyone who can reach this port can "
              "run computations and read or write its memory; keep it on a private network or behind a "
              "firewall that admits only your daemons", file=sys.stderr)
    print(f"rpc worker listening on {endpoint} ({threads or llama.physical_cores()} threads"
          + (f", {mem} MiB" if mem else "") + ")", file=sys.stderr, flush=True)
    try:
        llama.rpc_serve(endpoint, threads or llama.physical_cores(), mem << 20)
    except llama.LoadError as exc:
        raise OllamaError(str(exc)) from None


@app.command(hidden=True)
def quantize(
    source: Annotated[str, typer.Argument()],
    target: Annotated[str, typer.Argument()],
    ftype: Annotated[int, typer.Argument(help="llama.cpp's llama_ftype (general.file_type) to quantize to")],
    threads: Annotated[int, typer.Option("--threads")] = 0,
    allow_requantize: Annotated[bool, typer.Option("--allow-requantize")] = False,
    watch_stdin: Annotated[bool, typer.Option("--watch-stdin", help="exit when stdin closes")] = False,
) -> None:
    """Internal: quantize a GGUF for the daemon's create (a process of its own, as a runner)."""
    import os
    import threading

    from ollamalike.runner.llama import LoadError, quantize as run_quantize

    if watch_stdin:  # the daemon holds the pipe's other end: when it dies, even by SIGKILL, stop
        def watch() -> None:
            try:
                while os.read(0, 4096):  # unbuffered: a buffered read would hold a lock at exit
                    pass
            except OSError:
                pass
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()

    try:
        run_quantize(source, target, ftype, threads, allow_requantize)
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def _version_callback(value: bool) -> None:
    if value:
        print(f"ollamalike version is {__version__}")
        try:  # what this install runs on: the llama.cpp backends compiled in, the CPU features used
            from ollamalike.runner import llama
            print(f"llama.cpp {llama.build_info()}")
        except Exception as exc:  # noqa: BLE001 - the version line alone still answers
            print(f"llama.cpp: not loadable ({exc})")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", "-v", callback=_version_callback,
                                                 is_eager=True, help="show version information")] = False) -> None:
    pass


# flags that take an optional value: bare, they mean true (cobra's NoOptDefVal), and a following
# word stays the prompt (`run m --think why?`)
_OPTIONAL_VALUE = ("--think", "--truncate")


def _argv(args: list[str]) -> list[str]:
    out, rest = [], False
    for a in args:
        if not rest and a in _OPTIONAL_VALUE:
            a += "=true"
        rest = rest or a == "--"
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point: one error boundary, `Error: <message>` and exit 1; tracebacks only with DEBUG."""
    try:
        app(args=_argv(sys.argv[1:] if argv is None else argv), prog_name="ollamalike")
    except OllamaError as exc:
        if config.debug():
            traceback.print_exc()
        print(f"Error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if config.debug():
            traceback.print_exc()
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
