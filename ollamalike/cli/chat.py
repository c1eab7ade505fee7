"""`ollamalike run`: its options, one-shot generation, embeddings, and the streamed reply both the
one-shot and the interactive chat (cli/repl.py) print."""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollamalike.cli.display import Reply, embedding_json, print_stats
from ollamalike.cli.pull import show_or_pull
from ollamalike.client import Client
from ollamalike.durations import parse_duration
from ollamalike.errors import BadRequest, OllamaError

THINK_LEVELS = ("high", "medium", "low", "max")


@dataclass
class RunOptions:
    """What `run`'s flags (and the REPL's /set commands) ask for."""

    model: str
    keep_alive: str | None = None
    verbose: bool = False
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None
    think_set: bool = False  # the user chose; otherwise thinking models think (as Ollama infers)
    hide_thinking: bool = False
    wordwrap: bool = True  # only ever applied on a terminal
    dimensions: int | None = None
    truncate: bool | None = None
    insecure: bool = False

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The fields every generate/chat request of the session carries."""
        if self.format not in (None, ""):
            body["format"] = self.format
        if self.think is not None:
            body["think"] = self.think
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body


def parse_keep_alive(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_duration(value)
    except ValueError:
        raise BadRequest(f"invalid duration {value!r}") from None
    return value


def parse_format(value: str | None) -> str | dict[str, Any] | None:
    """`--format`: `json`, a JSON schema inline, or a file holding one."""
    if value is None or value == "":
        return None
    if value == "json":
        return "json"
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise BadRequest(f"invalid format {value!r}: use 'json', a JSON schema, or a file holding one")
        text = path.read_text(encoding="utf-8")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"invalid format {value!r}: the JSON schema does not parse: {exc}") from None
    if not isinstance(schema, dict):
        raise BadRequest(f"invalid format {value!r}: a JSON schema must be an object")
    return schema


def parse_think(value: str) -> bool | str:
    """`--think[=true|false|high|medium|low|max]` (a bare `--think` is true)."""
    v = value.strip().lower()
    if v in ("", "true"):
        return True
    if v == "false":
        return False
    if v in THINK_LEVELS:
        return v
    raise BadRequest(f'invalid value for --think: "{value}" (must be true, false, high, medium, low, or max)')


def infer_think(opts: RunOptions, capabilities: list[str]) -> None:
    """Unless the user chose, a model that can think does (Ollama's inferThinkingOption)."""
    if not opts.think_set:
        opts.think = True if "thinking" in capabilities else None


# Ollama's CLI: image paths in the text (./x.png, /x/y.jpg, ~/x.webp, C:\x.jpeg; "\ " escapes a space,
# as a drag-and-drop into a terminal writes it), read and sent as images to a vision model.
_IMAGE_PATH = re.compile(r"(?:[a-zA-Z]:)?(?:\./|/|\\|~/)(?:\\ |[^\s])+?\.(?i:jpg|jpeg|png|webp|gif|bmp)\b")


def extract_images(text: str, quiet: bool = False) -> tuple[str, list[str]]:
    """The text without the image files it names, and those images as base64; a path that is no
    file stays in the text. Says "Added image '...'" on stderr for each (unless `quiet`), as Ollama."""
    found: list[str] = []
    for m in _IMAGE_PATH.finditer(text):
        raw = m.group(0)
        path = Path(raw.replace("\\ ", " ")).expanduser()
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadRequest(f"couldn't read image '{path}': {exc.strerror}") from None
        found.append(base64.b64encode(data).decode())
        text = text.replace(raw, "", 1)
        if not quiet:
            print(f"Added image '{path}'", file=sys.stderr)
    return text.strip() if found else text, found


def new_reply(opts: RunOptions, terminal: bool) -> Reply:
    """Dimmed thinking and word wrap only on a terminal."""
    return Reply(sys.stdout, wrap=opts.wordwrap and terminal, color=terminal, hide_thinking=opts.hide_thinking)


async def stream_reply(client: Client, path: str, body: dict[str, Any], opts: RunOptions, reply: Reply, *,
                       trailer: str) -> dict[str, Any]:
    """Stream one /api/generate or /api/chat reply into `reply`; return the final part. What was
    said stays in `reply` (thinking_text, content_text) even when the stream is cut."""
    final: dict[str, Any] = {}
    stream = client.generate(body) if path == "generate" else client.chat(body)
    try:
        async for part in stream:
            if path == "generate":
                reply.add(part.get("thinking") or "", part.get("response") or "")
            else:
                msg = part.get("message") or {}
                reply.add(msg.get("thinking") or "", msg.get("content") or "")
            if part.get("done"):
                final = part
    finally:  # also after Ctrl+C: close the colour and the line
        reply.end(trailer)
    if opts.verbose and final:
        print_stats(final)
    return final


async def embed(client: Client, opts: RunOptions, text: str) -> None:
    if not text:
        raise BadRequest(f'embedding models require input text. Usage: ollamalike run {opts.model} "your text here"')
    body: dict[str, Any] = {"model": opts.model, "input": text}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if opts.truncate is not None:
        body["truncate"] = opts.truncate
    if opts.dimensions:
        body["dimensions"] = opts.dimensions
    out = await client.embed(body)
    if not out.get("embeddings"):
        raise OllamaError("no embeddings returned")
    print(embedding_json(out["embeddings"][0]))


async def one_shot(client: Client, opts: RunOptions, prompt: str) -> None:
    info = await show_or_pull(client, opts.model, opts.insecure)
    caps = info.get("capabilities") or []
    infer_think(opts, caps)
    if "embedding" in caps:
        await embed(client, opts, prompt)
        return
    if opts.dimensions or opts.truncate is not None:
        raise BadRequest(f"--dimensions and --truncate are for embedding models; '{opts.model}' is not one")
    body = opts.request({"model": opts.model, "prompt": prompt})
    if "vision" in caps:
        body["prompt"], images = extract_images(prompt)
        if images:
            body["images"] = images
    await stream_reply(client, "generate", body, opts, new_reply(opts, sys.stdout.isatty()),
                       trailer="\n\n" if prompt else "")
