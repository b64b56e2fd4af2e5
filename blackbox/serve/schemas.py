"""Request bodies of ``bbx serve``: the OpenAI routes' fields plus the bbx extensions.

Unknown fields are accepted and ignored with a logged warning, as vLLM does (clients send
provider-specific fields). Known fields are validated strictly, as OpenAI does: wrong types
(``"2"`` for an integer, ``1`` for a boolean; an integer is a number), NaN or infinite
numbers, out-of-range values and strings that are not valid Unicode are 400s.
Fields OpenAI defines but bbx cannot honour are refused with a 400 (code
``unsupported_parameter``) rather than silently ignored: penalties, ``best_of`` other than
``n``, ``suffix``, message ``name``, and tool calling (``tools``, ``tool_choice``,
``functions``, ``function_call``), each unless its value is the no-op (``[]``, ``"none"``,
0). Chat's ``response_format`` asking for JSON is honoured on the local engine
(:mod:`blackbox.engine.constrain`) and refused elsewhere.

Each model's ``ALLOWED`` says what its fields may be, in the words a 400 uses ("max_tokens:
must be an integer >= 0, or null, got \"2\""; see :mod:`blackbox.serve.validation`); keys
are field paths with list indexes as ``*``, and a path without a rule takes its parent's.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
)
from pydantic_core import PydanticCustomError

from blackbox.backends.base import normalize_adapter
from blackbox.errors import BbxError

log = logging.getLogger("blackbox.serve")
MAX_ITEMS = 2048  # prompts / inputs per request
_warned: set[str] = set()


def _utf8(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string is not valid Unicode (lone surrogate)") from None
    return v


Text = Annotated[str, AfterValidator(_utf8)]
# Strict scalars: pydantic's default would turn "2" into 2 and "yes" into True where OpenAI
# answers 400. StrictFloat still takes integers (JSON's 1 is a number).
Int = StrictInt
Bool = StrictBool
Float = StrictFloat
Texts = Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]
TEXTS = f"a list of 1 to {MAX_ITEMS} strings"
TEXT_OR_TEXTS = f"a string or a list of 1 to {MAX_ITEMS} strings"
ADAPTER = ('an adapter name, or a mixture {"adapters": [names], "alpha": [numbers in [0, 1]], '
           '"beta": [numbers]}, or null')


def unsupported(why: str, instead: str) -> PydanticCustomError:
    """The validation error of a field bbx cannot honour (the 400's code names it)."""
    # the text goes in as context: a template would read the braces of '{"type": "text"}'
    return PydanticCustomError("unsupported_parameter", "{text}",
                               {"text": f"not supported by bbx serve ({why}): {instead}"})


class Body(BaseModel):
    """Base of every request body: lenient on unknown keys, strict on known ones."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    ALLOWED: ClassVar[dict[str, str]] = {"model": "a model id (a string), or null",
                                         "user": "a string, or null"}

    model: Text | None = None
    user: Text | None = None

    @classmethod
    def allowed(cls) -> dict[str, str]:
        """What each field may be, as the 400s say it (the base classes' rules included)."""
        out: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("ALLOWED", {}))
        return out

    def warn_extra(self, route: str) -> None:
        """Log (once per route and field) the unknown fields that were ignored."""
        for key in self.model_extra or {}:
            tag = f"{route}:{key}"
            if tag not in _warned and len(_warned) < 1000:
                _warned.add(tag)
                log.warning("%s: ignoring unknown field %r", route, key)


class Mixture(BaseModel):
    """A mixture of adapters: ``A* = Σβᵢ·sparse(Aᵢ, αᵢ)``, ``B* = Σβᵢ·Bᵢ``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    adapters: list[Text] = Field(min_length=1, max_length=256)
    alpha: list[Float] | None = None
    beta: list[Float] | None = None


class WithAdapter(Body):
    """Bodies that take the bbx ``adapter`` extension (a name or a mixture)."""

    ALLOWED: ClassVar[dict[str, str]] = {"adapter": ADAPTER}

    adapter: Text | Mixture | None = Field(
        None, description="bbx extension: an adapter name, or a mixture "
        "{adapters: [...], alpha: [...], beta: [...]} (alpha in [0, 1], default 1; beta "
        "finite, default 1)")

    @field_validator("adapter")
    @classmethod
    def _valid_adapter(cls, v: Any) -> Any:
        if v is None:
            return None
        raw = v if isinstance(v, str) else v.model_dump(exclude_none=True)
        try:
            return normalize_adapter(raw)
        except BbxError as e:
            raise ValueError(str(e)) from None


Stop = Text | Annotated[list[Text], Field(max_length=4)] | None
LogitBias = Annotated[dict[str, Annotated[Float, Field(ge=-100, le=100)]],
                      Field(max_length=300)] | None


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk holding the usage."""

    model_config = ConfigDict(extra="allow")

    include_usage: Bool = False


class Sampling(WithAdapter):
    """Generation fields shared by completions and chat."""

    ALLOWED: ClassVar[dict[str, str]] = {
        "temperature": "a number between 0 and 2",
        "top_p": "a number above 0 and at most 1",
        "n": "an integer between 1 and 16",
        "stream": "true or false",
        "stop": "a string, a list of at most 4 strings, or null",
        "seed": "a 64-bit integer, or null",
        "logit_bias": "an object of at most 300 token ids (strings of digits) to numbers "
                      "between -100 and 100, or null",
        "presence_penalty": "0 (penalties are not supported)",
        "frequency_penalty": "0 (penalties are not supported)",
        "stream_options": '{"include_usage": true or false}, or null',
    }

    temperature: Float = Field(1.0, ge=0, le=2)
    top_p: Float = Field(1.0, gt=0, le=1)
    n: Int = Field(1, ge=1, le=16)
    stream: Bool = False
    stop: Stop = None
    seed: Int | None = Field(None, ge=-(2**63), lt=2**64)
    logit_bias: LogitBias = None
    presence_penalty: Float = Field(0.0, ge=-2, le=2)
    frequency_penalty: Float = Field(0.0, ge=-2, le=2)
    stream_options: StreamOptions | None = None

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalties(cls, v: float) -> float:
        if v != 0:
            raise unsupported("no penalties", "leave it out or send 0")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key in v or {}:
            if not (key.isascii() and key.isdigit()) or len(key) > 9:
                raise ValueError("keys must be token ids (strings of digits, at most 9), "
                                 f"got {key!r}")
        return v


class CompletionRequest(Sampling):
    """``POST /v1/completions``."""

    ALLOWED: ClassVar[dict[str, str]] = {
        "prompt": TEXT_OR_TEXTS + " (token-id prompts are not supported)",
        "max_tokens": "an integer >= 0, or null",
        "logprobs": "an integer between 0 and 20, or null",
        "echo": "true or false",
        "best_of": "an integer between 1 and 16 (equal to n), or null",
        "suffix": "null or an empty string (insertion is not supported)",
    }

    prompt: Text | Texts
    max_tokens: Int | None = Field(16, ge=0)
    logprobs: Int | None = Field(None, ge=0, le=20)
    echo: Bool = False
    best_of: Int | None = Field(None, ge=1, le=16)
    suffix: Text | None = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise unsupported("no insertion", "leave it out or send null")
        return v


class ContentPart(BaseModel):
    """A text part of a chat message (images and audio are not supported)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: Text


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[ContentPart], Field(max_length=256)] | None = None
    name: Text | None = None

    @field_validator("name")
    @classmethod
    def _no_name(cls, v: str | None) -> str | None:
        if v is not None:  # the chat template gets each message's role and content only
            raise unsupported("participant names are not passed to the chat template",
                              "leave it out")
        return v

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(Sampling):
    """``POST /v1/chat/completions``."""

    ALLOWED: ClassVar[dict[str, str]] = {
        "messages": 'a list of 1 to 1024 messages {"role": ..., "content": ...}',
        "messages.*": 'a message {"role": ..., "content": ...}',
        "messages.*.role": 'one of "system", "developer", "user", "assistant", "tool"',
        "messages.*.content": 'a string, a list of at most 256 text parts {"type": "text", '
                              '"text": ...}, or null (images and audio are not supported)',
        "messages.*.name": "null (names are not supported)",
        "max_tokens": "an integer >= 0, or null",
        "max_completion_tokens": "an integer >= 0, or null",
        "logprobs": "true or false",
        "top_logprobs": "an integer between 0 and 20, or null",
        "response_format": '{"type": "text"}, {"type": "json_object"}, {"type": '
                           '"json_schema", "json_schema": {"name": ..., "schema": {...}}}, '
                           'or null',
        "tools": "an empty list, or null (tool calling is not supported)",
        "tool_choice": '"none", or null (tool calling is not supported)',
        "functions": "an empty list, or null (function calling is not supported)",
        "function_call": '"none", or null (function calling is not supported)',
    }

    messages: list[Message] = Field(min_length=1, max_length=1024)
    max_tokens: Int | None = Field(None, ge=0)
    max_completion_tokens: Int | None = Field(None, ge=0)
    logprobs: Bool = False
    top_logprobs: Int | None = Field(None, ge=0, le=20)
    # structured output and tool calling: refused below unless the value is the no-op
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None  # the deprecated spelling of tools
    function_call: Any = None  # ... and of tool_choice

    @field_validator("response_format")
    @classmethod
    def _structured_output(cls, v: Any) -> Any:
        # the shapes are OpenAI's; JSON is enforced while decoding (blackbox.engine.constrain).
        # A 400 here says what ALLOWED says, with the value sent.
        if v is None:
            return v
        ok = isinstance(v, dict) and v.get("type") in ("text", "json_object", "json_schema")
        if ok and v["type"] == "json_schema":
            spec = v.get("json_schema")
            ok = isinstance(spec, dict) and isinstance(spec.get("name"), str) \
                and isinstance(spec.get("schema", {}), dict)
        if not ok:
            raise PydanticCustomError("invalid_value", "not a response format")
        return v

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, v: Any) -> Any:
        if v not in (None, []):
            raise unsupported("no tool calling", "leave it out or send []")
        return v

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, v: Any) -> Any:
        if v not in (None, "none"):
            raise unsupported("no tool calling", 'leave it out or send "none"')
        return v


class EmbeddingRequest(WithAdapter):
    """``POST /v1/embeddings`` (MiniLM embeddings do not depend on the adapter)."""

    ALLOWED: ClassVar[dict[str, str]] = {
        "input": TEXT_OR_TEXTS + " (token-id inputs are not supported)",
        "encoding_format": '"float" or "base64"',
        "dimensions": "an integer >= 1 (the model's own width), or null",
    }

    input: Text | Texts
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Int | None = Field(None, ge=1)


class LabelLogprobsRequest(WithAdapter):
    """bbx extension ``POST /v1/label_logprobs``: exact log-probs of label words as the next
    text after each prompt (over the full vocabulary; multi-token words sum their tokens)."""

    ALLOWED: ClassVar[dict[str, str]] = {"prompts": TEXTS,
                                         "label_words": "a list of 1 to 256 strings"}

    prompts: Texts
    label_words: Annotated[list[Text], Field(min_length=1, max_length=256)]


class ScoreRequest(WithAdapter):
    """bbx extension ``POST /v1/score``: per (prompt, continuation), the continuation's
    token log-probs (prompt and continuation tokenized separately, as the local backend)."""

    ALLOWED: ClassVar[dict[str, str]] = {"prompts": TEXTS,
                                         "continuations": TEXTS + ", one per prompt"}

    prompts: Texts
    continuations: Texts


class HiddenRequest(WithAdapter):
    """bbx extension ``POST /v1/hidden_states``: the last layer's hidden state at each
    prompt's scoring position (the state that predicts the next token)."""

    ALLOWED: ClassVar[dict[str, str]] = {"input": TEXT_OR_TEXTS,
                                         "position": '"last" or "mask"'}

    input: Text | Texts
    position: Literal["last", "mask"] = "last"


class TokenizeRequest(Body):
    """``POST /tokenize`` (vLLM's route): the token ids of a prompt."""

    ALLOWED: ClassVar[dict[str, str]] = {"prompt": "a string",
                                         "add_special_tokens": "true or false"}

    prompt: Text
    add_special_tokens: Bool = True


class AdapterLoadRequest(Body):
    """bbx extension ``POST /v1/adapters``: load (or reload) an adapter by name."""

    ALLOWED: ClassVar[dict[str, str]] = {"name": "an adapter name of 1 to 128 characters",
                                         "path": "a folder on the server, or null"}

    name: Text = Field(min_length=1, max_length=128)
    path: Text | None = None


class AdapterMaterializeRequest(WithAdapter):
    """bbx extension ``POST /v1/adapters/materialize``: save a mixture as a new adapter."""

    ALLOWED: ClassVar[dict[str, str]] = {"name": "an adapter name of 1 to 128 characters"}

    name: Text = Field(min_length=1, max_length=128)
