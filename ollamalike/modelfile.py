'''Parse and render Modelfiles (``ollama.md`` section 5).

A Modelfile is a list of ``INSTRUCTION arguments`` lines.  Instructions are
case-insensitive; lines whose first non-blank character is ``#`` are comments;
blank lines are ignored.  A value may be bare (the rest of the line, trimmed),
``"quoted"`` on one line, or ``"""triple quoted"""`` (which may span lines and
is kept verbatim).  Parameter values stay raw strings here; typing them is the
caller's job.
'''

from __future__ import annotations

from dataclasses import dataclass, field

from ollamalike.errors import BadRequest

INSTRUCTIONS = ("from", "license", "template", "system", "adapter", "parameter", "message", "requires", "draft")
ROLES = ("system", "user", "assistant")
_TRIPLE = '"""'
_BAD_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", '
    '"parameter", "message", or "requires"'
)


@dataclass
class Modelfile:
    """The instructions of a parsed Modelfile, in file order within each kind."""

    from_: str
    parameters: list[tuple[str, str]] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    requires: str | None = None
    draft: str | None = None  # the draft model for speculative decoding (a model name, as Ollama's DRAFT)
    froms: list[str] = field(default_factory=list)  # every FROM line when there are several upstream servers
    more_from: list[str] = field(default_factory=list)  # further FROM lines of weights: a vision projector GGUF

    @property
    def upstreams(self) -> list[str]:
        """The `openai+http(s)://...` FROM lines (a model served by OpenAI-compatible upstreams)."""
        return [f for f in (self.froms or [self.from_]) if is_upstream(f)]

    def to_text(self) -> str:
        """Render an equivalent Modelfile; ``parse_modelfile`` of it gives back ``self``."""
        lines = [f"FROM {_render(f)}" for f in (self.froms or [self.from_])]
        lines += [f"FROM {_render(x)}" for x in self.more_from]
        lines += [f"ADAPTER {_render(a)}" for a in self.adapters]
        if self.template is not None:
            lines.append(f"TEMPLATE {_triple(self.template)}")
        if self.system is not None:
            lines.append(f"SYSTEM {_triple(self.system)}")
        lines += [f"PARAMETER {name} {_render(value)}" for name, value in self.parameters]
        lines += [f"LICENSE {_triple(text)}" for text in self.licenses]
        lines += [f"MESSAGE {m['role']} {_render(m['content'])}" for m in self.messages]
        if self.requires:
            lines.append(f"REQUIRES {_render(self.requires)}")
        if self.draft:
            lines.append(f"DRAFT {_render(self.draft)}")
        return "\n".join(lines) + "\n"


def _triple(value: str) -> str:
    """Wrap ``value`` in triple quotes."""
    if _TRIPLE in value:
        raise BadRequest('modelfile value cannot contain """')
    return f"{_TRIPLE}{value}{_TRIPLE}"


def _render(value: str) -> str:
    """Render a value bare when that parses back unchanged, else triple quoted."""
    if value and value.strip() == value and "\n" not in value and not value.startswith('"'):
        return value
    return _triple(value)


def _split_word(text: str) -> tuple[str, str]:
    """Split ``text`` at its first run of whitespace into (word, rest); rest keeps trailing blanks."""
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def _read_value(rest: str, lines: list[str], i: int, what: str) -> tuple[str, int]:
    """Read a value that starts with ``rest`` on line ``i``.

    Returns the value and the index of the next unread line.  Triple-quoted
    values continue until the first later line holding ``\"\"\"``; on that line
    the last ``\"\"\"`` closes the value and only whitespace may follow it.
    """
    rest = rest.lstrip()
    if rest.startswith(_TRIPLE):
        body = rest[3:]
        if _TRIPLE in body:
            end = body.rfind(_TRIPLE)
            if body[end + 3:].strip():
                raise BadRequest(f"unexpected text after closing quotes in {what}")
            return body[:end], i + 1
        chunks = [body]
        j = i + 1
        while j < len(lines):
            line = lines[j]
            if _TRIPLE in line:
                end = line.rfind(_TRIPLE)
                if line[end + 3:].strip():
                    raise BadRequest(f"unexpected text after closing quotes in {what}")
                chunks.append(line[:end])
                return "\n".join(chunks), j + 1
            chunks.append(line)
            j += 1
        raise BadRequest(f'unterminated """ in {what}')
    rest = rest.rstrip()
    if len(rest) >= 2 and rest.startswith('"') and rest.endswith('"'):
        return rest[1:-1], i + 1
    if rest.startswith('"'):
        raise BadRequest(f'unterminated " in {what}')
    return rest, i + 1


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile ``text`` into a :class:`Modelfile`.

    Raises ``BadRequest`` for a missing FROM line, an unknown instruction, an
    instruction without its value, a bad MESSAGE role or unterminated quotes.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    result = Modelfile(from_="")
    seen_from = False
    i = 0
    while i < len(lines):
        line = lines[i].lstrip()
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        word, rest = _split_word(line)
        command = word.lower()
        if command not in INSTRUCTIONS:
            raise BadRequest(_BAD_COMMAND)
        if command == "parameter":
            name, rest = _split_word(rest)
            if not name:
                raise BadRequest("parameter is missing a name and a value")
            if not rest.strip():
                raise BadRequest(f"parameter '{name}' is missing a value")
            value, i = _read_value(rest, lines, i, f"parameter '{name}'")
            result.parameters.append((name, value))
            continue
        if command == "message":
            role, rest = _split_word(rest)
            if role.lower() not in ROLES:
                raise BadRequest('message role must be one of "system", "user", or "assistant"')
            if not rest.strip():
                raise BadRequest(f"message '{role.lower()}' is missing its content")
            value, i = _read_value(rest, lines, i, "message")
            result.messages.append({"role": role.lower(), "content": value})
            continue
        if not rest.strip():
            raise BadRequest(f"{command} is missing a value")
        value, i = _read_value(rest, lines, i, command)
        if command == "from" and seen_from:
            result.more_from.append(value)
        elif command == "from":
            result.from_, seen_from = value, True
        elif command == "adapter":
            result.adapters.append(value)
        elif command == "template":
            result.template = value
        elif command == "system":
            result.system = value
        elif command == "requires":
            result.requires = value
        elif command == "draft":
            result.draft = value
        else:
            result.licenses.append(value)
    if not seen_from:
        raise BadRequest("no FROM line")
    every = [result.from_, *result.more_from]
    ups = [f for f in every if is_upstream(f)]
    if ups and len(ups) != len(every):
        raise BadRequest("a Modelfile's FROM lines are either all upstream servers (FROM openai+http://HOST/v1 MODEL) "
                         "or a model or weights (a second FROM of weights: the vision projector)")
    if ups:  # several upstream servers balance one model
        result.froms, result.more_from = (every if len(every) > 1 else []), []
    return result


def is_upstream(ref: str) -> bool:
    """Whether a FROM value names an OpenAI-compatible upstream server rather than weights or a model."""
    return ref.strip().lower().startswith(("openai+http://", "openai+https://"))
