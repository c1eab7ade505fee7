"""The interactive chat of `ollamalike run`, as Ollama's REPL: `/set`, `/show`, `/load`, `/save`,
`/clear`, `/?`, `\"\"\"` multi-line input, and an input history kept across sessions."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ollamalike import config, options
from ollamalike.cli.chat import RunOptions, extract_images, infer_think, new_reply, stream_reply
from ollamalike.cli.daemon import run_with_client
from ollamalike.cli.display import Reply
from ollamalike.cli.pull import show_or_pull
from ollamalike.client import Client, ResponseError
from ollamalike.errors import BadRequest, OllamaError

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model (or an image file, for a vision model's next message)
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
"""
USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit ollamalike (/bye)
"""
USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""
USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters
"""


def _usage(text: str) -> None:
    print(text, file=sys.stderr)


class History:
    """The REPL's input history, kept in a file across sessions (Ollama keeps ~/.ollama/history):
    the last LIMIT lines. Disabled (OLLAMALIKE_NOHISTORY, /set nohistory) means nothing is added;
    what is there stays available."""

    LIMIT = 100

    def __init__(self, path: Path, enabled: bool, readline: Any = None):
        self.path = path
        self.enabled = enabled
        self.readline = readline
        try:
            self.lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()][-self.LIMIT:]
        except (OSError, UnicodeDecodeError):
            self.lines = []
        if readline is not None:
            readline.set_auto_history(False)
            readline.clear_history()
            for line in self.lines:
                readline.add_history(line)

    def add(self, line: str) -> None:
        if not self.enabled or not line.strip():
            return
        if self.readline is not None:
            self.readline.add_history(line)
        if "\n" in line:  # a pasted block stays in this session's history only
            return
        self.lines = (self.lines + [line])[-self.LIMIT:]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(self.lines) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only home must not end the chat
            print(f"warning: could not save the history to {self.path}: {exc.strerror}", file=sys.stderr)
            self.enabled = False


def default_history() -> History:
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline
        readline = None
    return History(config.user_data_dir() / "history", enabled=not config.nohistory(), readline=readline)


class Repl:
    """One interactive session. `read` is the line reader (input(), or a script in tests);
    `terminal` says whether replies go to a terminal (dimmed thinking, word wrap)."""

    def __init__(self, opts: RunOptions, *, read: Callable[[str], str] = input, history: History | None = None,
                 terminal: bool | None = None):
        self.opts = opts
        self.read = read
        self.history = history
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.messages: list[dict[str, Any]] = []  # this session's, system messages included (as Ollama)
        self.loaded: list[dict[str, Any]] = []  # the model's own MESSAGEs, which the daemon prepends
        self.system = ""
        self.options: dict[str, Any] = {}
        self.vision = False  # the model takes images: file paths in a message are attached
        self.pending: list[str] = []  # images `/load`ed for the next message (base64)

    # --- input ------------------------------------------------------------------------------
    def _line(self, prompt: str) -> str:
        line = self.read(prompt)
        if self.history is not None:
            self.history.add(line)
        return line

    def _multiline(self, first: str) -> str:
        """The rest of a `\"\"\"` block that `first` opened (without its quotes)."""
        if first.endswith('"""'):
            return first[:-3]
        lines = [first]
        while True:
            line = self._line("... ")
            if line.endswith('"""'):
                lines.append(line[:-3])
                return "\n".join(lines)
            lines.append(line)

    # --- talking to the daemon -------------------------------------------------------------
    async def _open(self, client: Client, name: str) -> None:
        """Show (pulling if needed), infer thinking, load the model, replay its saved messages."""
        info = await show_or_pull(client, name, self.opts.insecure)
        if "embedding" in (info.get("capabilities") or []):
            raise BadRequest(f'embedding models require input text. Usage: ollamalike run {name} "your text here"')
        self.opts.model = name
        self.loaded = list(info.get("messages") or [])
        self.vision = "vision" in (info.get("capabilities") or [])
        infer_think(self.opts, info.get("capabilities") or [])
        body: dict[str, Any] = {"model": name}
        if self.opts.keep_alive is not None:
            body["keep_alive"] = self.opts.keep_alive
        async for _ in client.generate(body):
            pass
        for msg in self.loaded:
            if msg.get("role") == "user":
                print(f">>> {msg.get('content', '')}")
            elif msg.get("role") == "assistant":
                reply = Reply(sys.stdout, wrap=self.opts.wordwrap and self.terminal)
                reply.add(content=msg.get("content") or "")
                reply.end("\n\n")

    async def _chat(self, client: Client) -> None:
        body = self.opts.request({"model": self.opts.model, "messages": list(self.messages)})
        if self.options:
            body["options"] = self.options
        reply = new_reply(self.opts, self.terminal)
        try:
            await stream_reply(client, "chat", body, self.opts, reply, trailer="\n\n")
        finally:  # a reply stopped with Ctrl+C still counts as said
            if reply.content_text or reply.thinking_text:
                msg: dict[str, Any] = {"role": "assistant", "content": reply.content_text}
                if reply.thinking_text:
                    msg["thinking"] = reply.thinking_text
                self.messages.append(msg)

    async def _show(self, client: Client, what: str) -> None:
        info = await client.show(self.opts.model)
        if what == "info":
            from ollamalike.cli.show import render
            render(info, False, sys.stderr)
        elif what == "license":
            print(info.get("license") or "No license was specified for this model.")
        elif what == "modelfile":
            print(info.get("modelfile") or "")
        elif what == "parameters":
            print("Model defined parameters:")
            if info.get("parameters"):
                for line in info["parameters"].split("\n"):
                    print(f"  {line}")
            else:
                print("  No additional parameters were specified for this model.")
            print()
            if self.options:
                print("User defined parameters:")
                for k, v in self.options.items():
                    print(f"  {k:<30} {_go_value(v)}")
                print()
        elif what == "system":
            text = self.system or info.get("system")
            print(text + "\n" if text else "No system message was specified for this model.")
        elif what == "template":
            print(info.get("template") or "No prompt template was specified for this model.")
        else:
            print(f"Unknown command '/show {what}'. Type /? for help")

    async def _save(self, client: Client, name: str) -> None:
        body: dict[str, Any] = {"model": name, "from": self.opts.model}
        if self.system:
            body["system"] = self.system
        if self.options:
            body["parameters"] = self.options
        if self.loaded or self.messages:
            body["messages"] = self.loaded + self.messages
        async for _ in client.create(body):
            pass
        print(f"Created new model '{name}'")

    async def _load(self, client: Client, name: str) -> None:
        print(f"Loading model '{name}'")
        try:
            await client.show(name)
        except ResponseError as exc:
            if exc.status == 404:
                print(f"Couldn't find model '{name}'")
                return
            raise
        self.messages = []
        await self._open(client, name)

    async def _warn_thinking(self, client: Client) -> None:
        info = await client.show(self.opts.model)
        if "thinking" not in (info.get("capabilities") or []):
            print(f'warning: model "{self.opts.model}" does not support thinking output', file=sys.stderr)

    # --- commands ---------------------------------------------------------------------------
    def _set(self, line: str, args: list[str]) -> None:
        if len(args) < 2:
            _usage(USAGE_SET)
            return
        what = args[1]
        o = self.opts
        if what == "history":
            if self.history is not None:
                self.history.enabled = True
        elif what == "nohistory":
            if self.history is not None:
                self.history.enabled = False
        elif what in ("wordwrap", "nowordwrap"):
            o.wordwrap = what == "wordwrap"
            print(f"Set '{what}' mode.")
        elif what in ("verbose", "quiet"):
            o.verbose = what == "verbose"
            print(f"Set '{what}' mode.")
        elif what in ("think", "nothink"):
            level = args[2] if what == "think" and len(args) > 2 else ""
            o.think, o.think_set = (level or True) if what == "think" else False, True
            run_with_client(self._warn_thinking)
            print(f"Set 'think' mode to '{level}'." if level else f"Set '{what}' mode.")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                print("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                o.format = "json"
                print("Set format to 'json' mode.")
        elif what == "noformat":
            o.format = None
            print("Disabled format.")
        elif what == "parameter":
            if len(args) < 4:
                _usage(USAGE_PARAMETERS)
                return
            name, values = args[2], args[3:]
            try:
                value = values if name == "stop" else options.parse_parameter(name, " ".join(values))
            except BadRequest as exc:
                print(f"Couldn't set parameter: {json.dumps(exc.message)}")
                return
            self.options[name] = value
            print(f"Set parameter '{name}' to '{', '.join(values)}'")
        elif what == "system":
            if len(args) < 3:
                _usage(USAGE_SET)
                return
            text = line.split(None, 2)[2]
            if text.startswith('"""'):
                text = self._multiline(text[3:])
            self.system = text
            msg = {"role": "system", "content": text}
            if self.messages and self.messages[-1]["role"] == "system":
                self.messages[-1] = msg
            else:
                self.messages.append(msg)
            print("Set system message.")
        else:
            print(f"Unknown command '/set {what}'. Type /? for help")

    def command(self, line: str) -> None:
        """Run one slash command; EOFError means /bye."""
        args = line.split()
        cmd = args[0]
        if cmd in ("/bye", "/exit"):
            raise EOFError
        if cmd in ("/?", "/help"):
            topic = args[1] if len(args) > 1 else ""
            if not topic:
                _usage(USAGE)
            elif topic in ("set", "/set"):
                _usage(USAGE_SET)
            elif topic in ("show", "/show"):
                _usage(USAGE_SHOW)
            elif topic in ("shortcut", "shortcuts"):
                _usage(USAGE_SHORTCUTS)
        elif cmd == "/set":
            self._set(line, args)
        elif cmd == "/show":
            if len(args) > 1:
                run_with_client(self._show, args[1])
            else:
                _usage(USAGE_SHOW)
        elif cmd == "/clear":
            self.messages = [{"role": "system", "content": self.system}] if self.system else []
            print("Cleared session context")
        elif cmd == "/load" and self.vision and len(args) >= 2 and extract_images(line[len("/load"):].strip(), quiet=True)[1]:
            self.pending += extract_images(line[len("/load"):].strip())[1]  # an image for the next message
        elif cmd in ("/load", "/save"):
            if len(args) != 2:
                print(f"Usage:\n  {cmd} <modelname>")
            else:
                run_with_client(self._load if cmd == "/load" else self._save, args[1])
        else:
            print(f"Unknown command '{cmd}'. Type /? for help")

    def say(self, text: str) -> None:
        msg: dict[str, Any] = {"role": "user", "content": text}
        if self.vision:
            msg["content"], images = extract_images(text)
            images, self.pending = self.pending + images, []
            if images:
                msg["images"] = images
        self.messages.append(msg)
        try:
            run_with_client(self._chat)
        except BaseException as exc:
            if self.messages and self.messages[-1]["role"] == "user":
                self.messages.pop()  # no reply: the question is not part of the conversation
            if not isinstance(exc, KeyboardInterrupt):  # Ctrl+C only stops the reply
                raise

    def run(self) -> None:
        """The loop. Ctrl+C stops a reply (or, at the prompt, says how to leave); Ctrl+D or /bye exits."""
        run_with_client(self._open, self.opts.model)
        while True:
            try:
                line = self._line(">>> ")
                if line.startswith('"""'):
                    self.say(self._multiline(line[3:]))
                elif line.startswith("/"):
                    self.command(line)
                elif line.strip():
                    self.say(line)
            except KeyboardInterrupt:
                print("\nUse Ctrl + d or /bye to exit.")
            except EOFError:
                print()
                return
            except OllamaError as exc:
                print(f"Error: {exc.message}")


def _go_value(v: Any) -> str:
    """A parameter value as Go's %v prints it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + " ".join(_go_value(x) for x in v) + "]"
    return str(v)


def repl(opts: RunOptions) -> None:
    Repl(opts, history=default_history()).run()
