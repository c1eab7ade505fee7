"""`ollamalike run`: one-shot generation, and the interactive chat REPL."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from ollamalike import options
from ollamalike.cli.daemon import run_with_client
from ollamalike.cli.pull import show_or_pull
from ollamalike.client import Client
from ollamalike.durations import format_go_duration, parse_duration
from ollamalike.errors import BadRequest, OllamaError

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
"""
SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
"""


def _keep_alive(value: str | None) -> Any:
    if value is None:
        return None
    try:
        parse_duration(value)
    except ValueError:
        raise BadRequest(f"invalid duration {value!r}") from None
    return value


def print_stats(final: dict[str, Any]) -> None:
    def dur(ns: int) -> str:
        return format_go_duration(ns / 1e9)

    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns else "0.00 tokens/s"
    pc, pd = final.get("prompt_eval_count", 0), final.get("prompt_eval_duration", 0)
    ec, ed = final.get("eval_count", 0), final.get("eval_duration", 0)
    lines = [("total duration:", dur(final.get("total_duration", 0))),
             ("load duration:", dur(final.get("load_duration", 0))),
             ("prompt eval count:", f"{pc} token(s)"), ("prompt eval duration:", dur(pd)),
             ("prompt eval rate:", rate(pc, pd)), ("eval count:", f"{ec} token(s)"),
             ("eval duration:", dur(ed)), ("eval rate:", rate(ec, ed))]
    for label, value in lines:
        print(f"{label:<22}{value}", file=sys.stderr)


async def one_shot(client: Client, model: str, prompt: str, keepalive: str | None, verbose: bool) -> None:
    await show_or_pull(client, model)
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    if (ka := _keep_alive(keepalive)) is not None:
        body["keep_alive"] = ka
    final: dict[str, Any] = {}
    async for part in client.generate(body):
        sys.stdout.write(part.get("response", ""))
        sys.stdout.flush()
        if part.get("done"):
            final = part
    sys.stdout.write("\n")
    if verbose:
        print_stats(final)


class Session:
    def __init__(self, model: str, keepalive: str | None, verbose: bool):
        self.model = model
        self.keep_alive = _keep_alive(keepalive)
        self.verbose = verbose
        self.messages: list[dict[str, Any]] = []
        self.system: str | None = None
        self.options: dict[str, Any] = {}

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.options:
            body["options"] = self.options
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    def history(self) -> list[dict[str, Any]]:
        sys_msg = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msg + self.messages


async def _load(client: Client, s: Session) -> None:
    await show_or_pull(client, s.model)
    async for _ in client.chat(s.body([])):
        pass


async def _reply(client: Client, s: Session, text: str) -> None:
    s.messages.append({"role": "user", "content": text})
    parts: list[str] = []
    final: dict[str, Any] = {}
    try:
        async for part in client.chat(s.body(s.history())):
            piece = part.get("message", {}).get("content", "")
            parts.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
            if part.get("done"):
                final = part
    finally:  # a reply stopped with Ctrl+C still counts as said
        s.messages.append({"role": "assistant", "content": "".join(parts)})
        sys.stdout.write("\n\n")
    if s.verbose and final:
        print_stats(final)


async def _show(client: Client, s: Session, what: str) -> None:
    info = await client.show(s.model)
    if what == "info":
        from ollamalike.cli.show import show
        await show(client, s.model, None)
    elif what == "parameters":
        print("Model defined parameters:\n" + (info.get("parameters") or "No parameters were specified for this model."))
        if s.options:
            print("\nUser defined parameters:")
            for k, v in s.options.items():
                print(f"{k:<30} {v}")
    elif what in ("license", "modelfile", "system", "template"):
        print(info.get(what) or f"No {what} was specified for this model.")
    else:
        print("Usage: /show info|license|modelfile|parameters|system|template")


async def _save(client: Client, s: Session, name: str) -> None:
    body: dict[str, Any] = {"model": name, "from": s.model, "messages": s.messages}
    if s.system:
        body["system"] = s.system
    if s.options:
        body["parameters"] = s.options
    async for _ in client.create(body):
        pass
    print(f"Created new model '{name}'")


def _read_message(first: str) -> str:
    """Handle `\"\"\"` multi-line input."""
    if not first.startswith('"""'):
        return first
    rest = first[3:]
    if rest.endswith('"""') and len(rest) >= 3:
        return rest[:-3]
    lines = [rest] if rest else []
    while True:
        line = input("... ")
        if line.endswith('"""'):
            lines.append(line[:-3])
            return "\n".join(lines)
        lines.append(line)


def _command(s: Session, line: str) -> tuple[str, Any] | None:
    """Apply a slash command; return an action for the caller to run against the daemon."""
    words = line.split()
    cmd = words[0].lower()
    if cmd in ("/bye", "/exit"):
        raise EOFError
    if cmd in ("/?", "/help"):
        print(SET_HELP if len(words) > 1 and words[1] == "set" else HELP)
    elif cmd == "/clear":
        s.messages.clear()
        print("Cleared session context")
    elif cmd == "/set" and len(words) >= 2:
        what = words[1].lower()
        if what == "verbose":
            s.verbose = True
            print("Set 'verbose' mode.")
        elif what == "quiet":
            s.verbose = False
            print("Set 'quiet' mode.")
        elif what == "system":
            text = line.split(None, 2)[2] if len(words) > 2 else ""
            s.system = _read_message(text).strip('"') if text.startswith('"""') else text
            print("Set system message.")
        elif what == "parameter" and len(words) >= 4:
            name, values = words[2], words[3:]
            try:
                if name == "stop":
                    s.options["stop"] = values
                else:
                    s.options[name] = options.parse_parameter(name, " ".join(values))
                print(f"Set parameter '{name}' to '{', '.join(values)}'")
            except BadRequest as exc:
                print(f'Couldn\'t set parameter: "{exc.message}"')
        else:
            print(SET_HELP)
    elif cmd == "/show":
        return ("show", words[1].lower() if len(words) > 1 else "")
    elif cmd == "/load" and len(words) == 2:
        return ("load", words[1])
    elif cmd == "/save" and len(words) == 2:
        return ("save", words[1])
    else:
        print(f"Unknown command '{words[0]}'. Type /? for help")
    return None


def repl(model: str, keepalive: str | None, verbose: bool) -> None:
    """The interactive chat. Ctrl+C stops a reply; Ctrl+D or /bye exits."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    s = Session(model, keepalive, verbose)
    run_with_client(_load, s)
    while True:
        try:
            line = input(">>> ")
            if not line.strip():
                continue
            if line.startswith("/"):
                action = _command(s, line)
                if action is None:
                    continue
                kind, arg = action
                if kind == "show":
                    run_with_client(_show, s, arg)
                elif kind == "save":
                    run_with_client(_save, s, arg)
                elif kind == "load":
                    print(f"Loading model '{arg}'")
                    new = Session(arg, keepalive, s.verbose)
                    run_with_client(_load, new)
                    s = new
                continue
            text = _read_message(line)
            try:
                run_with_client(_reply, s, text)
            except KeyboardInterrupt:
                print()
        except KeyboardInterrupt:
            print("\nUse Ctrl + d or /bye to exit.")
        except EOFError:
            print()
            return
        except OllamaError as exc:
            print(f"Error: {exc.message}")
        except (asyncio.CancelledError, json.JSONDecodeError):
            print()
