"""How `run` prints a streamed reply: word wrap at the terminal width, thinking dimmed (as Ollama's
`Thinking...` / `...done thinking.` block), the `--verbose` stats, and embeddings as Ollama prints them."""

from __future__ import annotations

import math
import shutil
import struct
import sys
import unicodedata
from decimal import Decimal
from typing import Any, TextIO

GREY, BOLD, RESET = "\x1b[38;5;245m", "\x1b[1m", "\x1b[0m"


def char_width(ch: str) -> int:
    """Terminal cells of one character: 2 for East Asian wide, 0 for combining marks."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def terminal_width(out: TextIO) -> int:
    """COLUMNS when set, else the terminal's width, else 80."""
    return shutil.get_terminal_size((80, 24)).columns


class WordWrap:
    """Writes streamed text so that no line is longer than `width - 1` cells and no word is split,
    however the text is cut into pieces. The word in progress is held back until a space, a newline
    or `flush()` shows where it ends; a word longer than a whole line is cut at the line's end.
    Wide (CJK) characters are words of their own, as Ollama treats them."""

    def __init__(self, out: TextIO, width: int):
        self.out = out
        self.limit = max(width - 1, 1)
        self.col = 0
        self.word: list[str] = []
        self.word_w = 0

    def _place(self) -> None:
        if not self.word:
            return
        if self.col and self.col + self.word_w > self.limit:
            self.out.write("\n")
            self.col = 0
        self.out.write("".join(self.word))
        self.col += self.word_w
        self.word, self.word_w = [], 0

    def write(self, text: str) -> None:
        for ch in text:
            if ch in "\n\r":
                self._place()
                self.out.write(ch)
                self.col = 0
            elif ch in " \t":
                self._place()
                w = 8 - self.col % 8 if ch == "\t" else 1
                if self.col + w > self.limit:  # the space falls at the line's end: it becomes the break
                    self.out.write("\n")
                    self.col = 0
                else:
                    self.out.write(ch)
                    self.col += w
            else:
                w = char_width(ch)
                if w == 2:
                    self._place()
                    self.word, self.word_w = [ch], 2
                    self._place()
                    continue
                if self.word_w + w > self.limit:  # longer than a line: cut it here
                    self._place()
                self.word.append(ch)
                self.word_w += w

    def flush(self) -> None:
        """Flush the stream; the word in progress stays held until it is known to fit."""
        self.out.flush()

    def finish(self) -> None:
        self._place()
        self.out.flush()

    def raw(self, text: str) -> None:
        """Write text that is not wrapped (colours, the thinking banners); a trailing newline
        starts a fresh line."""
        self._place()
        self.out.write(text)
        if text.endswith("\n"):
            self.col = 0


class Plain:
    """The same interface without wrapping (piped output, --nowordwrap)."""

    def __init__(self, out: TextIO):
        self.out = out

    def write(self, text: str) -> None:
        self.out.write(text)

    def raw(self, text: str) -> None:
        self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    finish = flush


class Reply:
    """One streamed reply. Thinking goes between `Thinking...` and `...done thinking.`, dimmed on a
    terminal (Ollama's grey), and not at all with `hide_thinking`; content follows."""

    def __init__(self, out: TextIO | None = None, *, wrap: bool = False, color: bool = False,
                 hide_thinking: bool = False):
        self.out = out or sys.stdout
        self.w = WordWrap(self.out, terminal_width(self.out)) if wrap else Plain(self.out)
        self.color = color
        self.hide_thinking = hide_thinking
        self.in_thinking = False
        self.thinking_text = ""
        self.content_text = ""

    def _banner(self, text: str, after: str) -> str:
        return GREY + BOLD + text + RESET + after if self.color else text

    def add(self, thinking: str = "", content: str = "") -> None:
        if thinking:
            self.thinking_text += thinking
            if not self.hide_thinking:
                if not self.in_thinking:
                    self.w.raw(self._banner("Thinking...\n", GREY))
                    self.in_thinking = True
                self.w.write(thinking)
        if content:
            if self.in_thinking:
                self.w.raw("" if self.thinking_text.endswith("\n") else "\n")
                self.w.raw(self._banner("...done thinking.\n\n", ""))
                self.in_thinking = False
            self.content_text += content
            self.w.write(content)
        self.w.flush()

    def end(self, trailer: str) -> None:
        """Finish the reply with `trailer` (Ollama prints a blank line after a reply)."""
        if self.in_thinking and self.color:
            self.w.raw(RESET)
        self.w.raw(trailer)
        self.w.finish()


def go_duration(ns: int) -> str:
    """Nanoseconds as Go prints a time.Duration: `1.234567ms`, `2.5s`, `1m3.000000001s`."""
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(int(ns))

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}" if digits else str(whole)
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 10**6:
        return sign + frac(ns, 1000) + "µs"
    if ns < 10**9:
        return sign + frac(ns, 10**6) + "ms"
    h, rest = divmod(ns, 3600 * 10**9)
    m, rest = divmod(rest, 60 * 10**9)
    s = frac(rest, 10**9) + "s"
    return sign + (f"{h}h{m}m{s}" if h else f"{m}m{s}" if m else s)


def stats_lines(final: dict[str, Any]) -> list[str]:
    """Ollama's `--verbose` summary (api.Metrics.Summary): only the figures that are non-zero."""
    lines = []
    get = lambda k: int(final.get(k) or 0)  # noqa: E731
    if get("total_duration"):
        lines.append(f"total duration:       {go_duration(get('total_duration'))}")
    if get("load_duration"):
        lines.append(f"load duration:        {go_duration(get('load_duration'))}")
    pc, pd, ec, ed = get("prompt_eval_count"), get("prompt_eval_duration"), get("eval_count"), get("eval_duration")
    if pc:
        lines.append(f"prompt eval count:    {pc} token(s)")
    if pd:
        lines.append(f"prompt eval duration: {go_duration(pd)}")
        lines.append(f"prompt eval rate:     {pc / (pd / 1e9):.2f} tokens/s")
    if ec:
        lines.append(f"eval count:           {ec} token(s)")
    if ed:
        lines.append(f"eval duration:        {go_duration(ed)}")
        lines.append(f"eval rate:            {ec / (ed / 1e9):.2f} tokens/s")
    return lines


def print_stats(final: dict[str, Any]) -> None:
    for line in stats_lines(final):
        print(line, file=sys.stderr)


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def go_float32(x: float) -> str:
    """A float32 as Go's encoding/json writes it: the shortest digits that read back as the same
    float32, positional unless below 1e-6 or from 1e21 (then `1.5e-7`)."""
    if not math.isfinite(x):
        raise ValueError(f"unsupported value: {x}")
    f = _f32(x)
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    for p in range(1, 18):
        sci = f"{f:.{p - 1}e}"
        if _f32(float(sci)) == f:
            break
    if abs(f) < _f32(1e-6) or abs(f) >= _f32(1e21):  # compared as float32, as Go does
        if len(sci) >= 4 and sci[-4:-1] == "e-0":  # Go's json cleans up e-07 to e-7
            sci = sci[:-2] + sci[-1]
        return sci
    return format(Decimal(sci), "f")


def embedding_json(vector: list[float]) -> str:
    """`ollama run <embedding model>`'s output: the vector as one compact JSON array of float32."""
    return "[" + ",".join(go_float32(v) for v in vector) + "]"
