"""Everything the CLI prints that is more than a line: tables, sizes, times, spinners. The only
importer of rich."""

from __future__ import annotations

import math
import re
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TextIO

from rich.console import Console

err = Console(stderr=True, highlight=False)


def human_bytes(n: int) -> str:
    """Sizes as Ollama prints them (decimal units): `98 MB`, `1.3 GB`, `512 B`."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            value = n / size
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def _parse_time(text: str) -> datetime:
    """RFC 3339 with up to nanoseconds (Go's format) into an aware datetime."""
    text = re.sub(r"(\.\d{1,6})\d*", r"\1", text.replace("Z", "+00:00"))
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _span(seconds: float) -> str:
    units = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
             ("hour", 3600), ("minute", 60), ("second", 1))
    for name, size in units:
        if seconds >= size:
            n = int(seconds // size)
            if n == 1:
                return f"About a{'n' if name == 'hour' else ''} {name}"
            return f"{n} {name}s"
    return "Less than a second"


def ago(text: str) -> str:
    delta = (datetime.now(timezone.utc) - _parse_time(text)).total_seconds()
    span = _span(max(0.0, delta))
    return span + " ago"


def until(text: str) -> str:
    when = _parse_time(text)
    if when.year > datetime.now().year + 20:
        return "Forever"
    delta = (when - datetime.now(timezone.utc)).total_seconds()
    if delta <= 0:
        return "Stopping..."
    return _span(delta) + " from now"


def processor(size: int, size_vram: int, devices: list[dict] | None = None) -> str:
    """Ollama's `100% CPU`, `100% GPU`, `48%/52% CPU/GPU`; a model split over RPC workers lists
    each device's share: `34% CPU, 33% 10.0.0.5:50052, 33% 10.0.0.6:50052`."""
    if devices:
        total = sum(int(d.get("size", 0)) for d in devices) or 1
        return ", ".join(f"{round(int(d.get('size', 0)) * 100 / total)}% {d.get('name', '?')}" for d in devices)
    if size <= 0:
        return "Unknown"
    if size_vram <= 0:
        return "100% CPU"
    if size_vram >= size:
        return "100% GPU"
    gpu = round(size_vram * 100 / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def table(headers: list[str], rows: list[list[str]]) -> None:
    """A borderless table, columns padded by 4 spaces, as `ollama list` prints it."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    for r in [headers] + rows:
        line = "".join(str(c).ljust(w + 4) for c, w in zip(r, widths)).rstrip()
        print(line)


def section(title: str, rows: list[tuple[str, ...] | list[str]], out: TextIO | None = None) -> None:
    """One of `ollama show`'s tables: the title, then rows indented 4 and columns 4 apart."""
    out = out or sys.stdout
    print(f"  {title}", file=out)
    widths: list[int] = []
    for r in rows:
        for i, cell in enumerate(r):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    for r in rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        print(("    " + "    ".join(cells)).rstrip(), file=out)
    print(file=out)


@contextmanager
def spinner(text: str):
    if sys.stderr.isatty():
        with err.status(text):
            yield
    else:
        yield


def status(text: str) -> None:
    print(text, file=sys.stderr)


class PullProgress:
    """`ollamalike pull`'s display: one bar per layer (`pulling <12 hex>`) with size, speed and ETA;
    the other statuses as lines above the bars. Updates with nothing completed yet are skipped.
    Without a terminal, one line per status and per finished layer."""

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.finished: set[str] = set()
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=err)
        self.bars: dict[str, int] = {}

    def __enter__(self) -> "PullProgress":
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def update(self, part: dict) -> None:
        digest = part.get("digest")
        if not self.live:
            total = part.get("total") or 0
            if not digest:
                status(part.get("status", ""))
            elif total and part.get("completed") == total and digest not in self.finished:
                self.finished.add(digest)
                status(f"{part.get('status')}: 100% {human_bytes(total)}")
            return
        if not digest:
            self.progress.console.print(part.get("status", ""))
            return
        completed = part.get("completed") or 0
        if digest not in self.bars:
            if not completed and part.get("total"):
                return
            self.bars[digest] = self.progress.add_task(part.get("status", digest[:19]), total=part.get("total"))
        self.progress.update(self.bars[digest], completed=completed, total=part.get("total"))
