"""Pydantic wire models of the native API requests, declared once.

Unknown fields are ignored (clients send extras); `name` is accepted as an alias of `model`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ollamalike.durations import parse_duration
from ollamalike.errors import BadRequest


PRIORITY = ("admission order while requests wait for a slot (vLLM's extension): lower runs first, "
            "default 0, equal priorities first come first served")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @classmethod
    def _missing(cls, where: str) -> str | None:
        """The message for a required field left out (None: the generic 'invalid value')."""
        return "model is required" if where == "model" else None

    @classmethod
    def parse(cls, data: Any):
        """Validate a decoded JSON body; any problem is a 400 with a readable message."""
        if not isinstance(data, dict):
            raise BadRequest("invalid request body: expected a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if err["type"] == "missing" and (missing := cls._missing(where)):
                raise BadRequest(missing) from None
            raise BadRequest(f"invalid value for '{where}': {msg}") from None


class _ModelRequest(_Request):
    model: str = Field(description="model name, `[host/][namespace/]model[:tag]`")

    @model_validator(mode="before")
    @classmethod
    def _name_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model") and data.get("name"):
            data = {**data, "model": data["name"]}
        return data

    @field_validator("model")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model is required")
        return v.strip()


class _RunRequest(_ModelRequest):
    options: dict[str, Any] | None = Field(None, description="runner options, layered over the model's")
    keep_alive: float | None = Field(None, description="seconds to keep the model loaded (inf = forever)")
    stream: bool = Field(True, description="stream NDJSON chunks (default) or answer one JSON object")
    format: str | dict[str, Any] | None = Field(None, description='"json" or a JSON schema')
    think: bool | str | None = Field(None, description='true/false or "low"/"medium"/"high"/"max"')
    truncate: bool | None = Field(None, description="drop the oldest messages that do not fit num_ctx "
                                  "(default); false: 400 when the input does not fit")
    shift: bool | None = Field(None, description="at num_ctx, drop half of the context and go on (default); "
                               "false: stop with done_reason length")
    logprobs: bool | None = None
    top_logprobs: int | None = None
    priority: int = Field(0, description=PRIORITY)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, v: Any) -> Any:
        if v is None:
            return None
        try:
            return parse_duration(v)
        except ValueError:
            raise ValueError(f"time: invalid duration {v!r}") from None

    @field_validator("think", mode="before")
    @classmethod
    def _think(cls, v: Any) -> Any:
        if v is None or isinstance(v, bool) or v in ("high", "medium", "low", "max"):
            return v
        if isinstance(v, str):
            raise ValueError(f'invalid think value: "{v}" (must be "high", "medium", "low", "max", true, or false)')
        raise ValueError('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, dict):
            raise ValueError("options must be an object")
        return v

    @field_validator("stream", mode="before")
    @classmethod
    def _stream(cls, v: Any) -> Any:
        return True if v is None else v


class GenerateRequest(_RunRequest):
    prompt: str | None = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    function: ToolCallFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, v: Any) -> Any:
        return "" if v is None else v


class ChatRequest(_RunRequest):
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None


class CreateRequest(_ModelRequest):
    from_: str | None = Field(None, alias="from")
    upstreams: list[str] | None = Field(None, description="OpenAI-compatible servers serving the model, each "
                                        "`openai+http://HOST:PORT/v1 MODEL_ID [api_key=$ENV_NAME]` (extension)")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    quantize: str | None = None
    requires: str | None = Field(None, description="the lowest Ollama version the model works with (REQUIRES)")
    draft: str | dict[str, str] | None = Field(
        None, description="the draft model for speculative decoding (DRAFT; used by requests with draft_num_predict "
        "> 0), with the model's vocabulary: an installed model's name, or {filename: digest} of an uploaded GGUF")
    stream: bool = True


class PullRequest(_ModelRequest):
    insecure: bool = Field(False, description="accepted for compatibility; pulls always use the Hub's HTTPS")
    stream: bool = Field(True, description="stream the statuses (default) or answer the last one")


class ShowRequest(_ModelRequest):
    verbose: bool = False


class DeleteRequest(_ModelRequest):
    pass


class CopyRequest(_Request):
    source: str
    destination: str


class EmbedRequest(_ModelRequest):
    input: Any = None
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: dict[str, Any] | None = None
    keep_alive: float | None = None
    priority: int = Field(0, description=PRIORITY)

    _keep_alive = field_validator("keep_alive", mode="before")(_RunRequest._keep_alive.__func__)

    def inputs(self) -> list[str]:
        """`input` as a list of strings; anything else is `invalid input type`."""
        value = self.input
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return list(value)
        raise BadRequest("invalid input type")


class EmbeddingsRequest(_ModelRequest):
    prompt: str | None = ""
    options: dict[str, Any] | None = None
    keep_alive: float | None = None

    _keep_alive = field_validator("keep_alive", mode="before")(_RunRequest._keep_alive.__func__)


class TokenizeRequest(_ModelRequest):
    content: str | None = Field(None, description="the text to tokenize (`prompt` and `text` are accepted too)")
    prompt: str | None = None
    text: str | None = None
    add_special: bool = Field(True, description="add the model's special tokens (BOS) as a prompt gets them")
    keep_alive: float | None = None

    _keep_alive = field_validator("keep_alive", mode="before")(_RunRequest._keep_alive.__func__)

    def input_text(self) -> str:
        for value in (self.content, self.prompt, self.text):
            if value is not None:
                return value
        raise BadRequest("content is required")


class DetokenizeRequest(_ModelRequest):
    tokens: list[int] = Field(description="token ids of the model's vocabulary")
    keep_alive: float | None = None

    _keep_alive = field_validator("keep_alive", mode="before")(_RunRequest._keep_alive.__func__)
