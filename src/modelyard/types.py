"""The one internal request/response shape.

Every provider adapter translates from these to its wire format and back, inside its own
module.  They follow OpenAI's Chat Completions vocabulary (roles, finish reasons, tool calls),
because that is the API modelyard serves; they are plain dataclasses, cheap to build on the hot
path.  Pydantic is used only at the edges (config).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]
#: OpenAI finish reasons. Adapters map their provider's stop reasons onto these.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class ContentPart:
    """One part of a multi-part message: text, or an image (URL or ``data:`` URI)."""

    type: Literal["text", "image"]
    text: str = ""
    image_url: str = ""
    detail: str | None = None
    #: Anthropic's prompt-caching marker on this block (``{"type": "ephemeral", "ttl": ...}``),
    #: passed on to Anthropic upstreams and ignored by the others
    cache_control: dict[str, Any] | None = None

    @property
    def media_type(self) -> str | None:
        """The media type of a ``data:`` URI image (``image/png``), else None."""
        if self.image_url.startswith("data:"):
            return self.image_url[5:].split(";", 1)[0].split(",", 1)[0] or None
        return None

    @property
    def base64_data(self) -> str | None:
        """The base64 payload of a ``data:...;base64,`` image, else None."""
        if self.image_url.startswith("data:") and ";base64," in self.image_url:
            return self.image_url.split(";base64,", 1)[1]
        return None


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON document, as OpenAI sends it
    #: Anthropic's prompt-caching marker on the ``tool_use`` block
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class Message:
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    #: an answer's reasoning text (reasoning_content, Anthropic thinking, Gemini thoughts, Ollama thinking)
    reasoning: str | None = None
    #: the provider-signed reasoning blocks of an assistant turn, verbatim (Anthropic ``thinking``
    #: with its ``signature`` and ``redacted_thinking``): replayed unchanged to Anthropic upstreams,
    #: which verify them; other providers read :attr:`reasoning` only
    reasoning_blocks: list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The text of the message, with multi-part text parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if p.type == "text")


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    #: Anthropic's prompt-caching marker on the tool definition
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


#: ``"auto" | "none" | "required"`` or a forced function name.
ToolChoice = Literal["auto", "none", "required"] | str


@dataclass(slots=True)
class ForcedTool:
    name: str


@dataclass(slots=True)
class ChatRequest:
    """A chat completion request, independent of any wire format.

    ``model`` is what the client asked for (a route, a model, or ``provider:upstream``);
    the upstream model name is passed to the adapter separately.  ``extra`` holds request
    fields modelyard does not know: OpenAI-compatible adapters pass them through unchanged.
    """

    model: str
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    #: which key the client used for max_tokens; OpenAI-compatible upstreams get the same one
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    n: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ForcedTool | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: modelyard's own per-request options (body field ``modelyard`` / ``X-Modelyard-*`` headers)
    options: dict[str, Any] = field(default_factory=dict)

    def asks_for_reasoning(self) -> bool:
        """True when the request turns reasoning on in any provider's vocabulary: Anthropic
        ``thinking`` (enabled or adaptive), OpenAI ``reasoning_effort`` other than ``none``,
        OpenRouter's ``reasoning`` object, Gemini's ``thinking_config`` with a non-zero budget."""
        extra = self.extra
        if not extra:  # the common case: no vendor field at all
            return False
        thinking = extra.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            return True
        effort = extra.get("reasoning_effort")
        if isinstance(effort, str) and effort != "none":
            return True
        reasoning = extra.get("reasoning")
        if isinstance(reasoning, dict) and reasoning.get("enabled", True) and reasoning.get("effort") != "none":
            return True
        config = extra.get("thinking_config") or extra.get("thinkingConfig")
        return isinstance(config, dict) and config.get("thinkingBudget", config.get("thinking_budget", -1)) != 0


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    #: input tokens served from the provider's prompt cache (billed at the cached rate)
    cached_tokens: int = 0
    #: input tokens written to the provider's prompt cache (Anthropic cache_creation_input_tokens)
    cache_write_tokens: int = 0
    #: the part of ``cache_write_tokens`` written with a 1 h lifetime (Anthropic bills it at 2x input)
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    #: True when counted by modelyard rather than reported by the provider
    estimated: bool = False


@dataclass(slots=True)
class Choice:
    index: int
    message: Message
    finish_reason: FinishReason | None
    logprobs: Any = None


@dataclass(slots=True)
class ChatResponse:
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class ChoiceDelta:
    index: int = 0
    role: Role | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    logprobs: Any = None
    refusal: str | None = None
    #: streamed reasoning text (out as ``reasoning_content``)
    reasoning: str | None = None
    #: the signature that closes the reasoning block streamed so far (Anthropic ``signature_delta``)
    reasoning_signature: str | None = None
    #: an encrypted reasoning block (Anthropic ``redacted_thinking`` ``data``), whole
    redacted_reasoning: str | None = None

    def only_text(self) -> bool:
        """True when this delta is nothing but answer text for choice 0 (what streams are mostly
        made of: such deltas may be merged, and are framed from prebuilt bytes)."""
        return bool(
            self.content
            and not self.index
            and self.role is None
            and self.tool_calls is None
            and self.finish_reason is None
            and self.logprobs is None
            and self.refusal is None
            and self.reasoning is None
            and self.reasoning_signature is None
            and self.redacted_reasoning is None
        )

    def has_output(self) -> bool:
        """True when this delta carries something the client will see as an answer (the first
        token is the first content, reasoning or tool-call delta: contracts "First token")."""
        return bool(
            self.content
            or self.tool_calls
            or self.refusal
            or self.reasoning
            or self.redacted_reasoning
            or self.finish_reason
        )


class ReasoningParts:
    """One answer's streamed reasoning put back together: its text, and its signed blocks (a
    thinking block closes with its signature; a redacted block comes whole)."""

    __slots__ = ("blocks", "pending", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.pending: list[str] = []  # text of the thinking block not yet closed by a signature
        self.blocks: list[dict[str, Any]] = []

    def feed(self, d: ChoiceDelta) -> None:
        if d.reasoning:
            self.texts.append(d.reasoning)
            self.pending.append(d.reasoning)
        if d.reasoning_signature is not None:
            self.blocks.append(
                {"type": "thinking", "thinking": "".join(self.pending), "signature": d.reasoning_signature}
            )
            self.pending = []
        if d.redacted_reasoning:
            self.blocks.append({"type": "redacted_thinking", "data": d.redacted_reasoning})


class ChatChunk:
    """One streamed chunk. A chunk with no choices and a ``usage`` is the final usage report.

    A *pass-through* chunk (:meth:`passthrough`) stands for one or more consecutive plain chunks of
    an OpenAI-format upstream, kept as their JSON bytes in ``raw`` and not decoded into this shape
    on the way: the provider read from them what the gateway needs (the content text, whether the
    choice finished), and ``id``, ``created``, ``choices`` (one delta: the merged ones) and
    ``system_fingerprint`` are built only if something reads them.  ``more`` says that the next
    chunk had already arrived when this one was made (the front end writes such chunks together).
    """

    __slots__ = (
        "_choices",
        "_created",
        "_decode",
        "_fingerprint",
        "_id",
        "finished",
        "model",
        "more",
        "raw",
        "text",
        "usage",
    )

    def __init__(
        self,
        id: str,
        created: int,
        model: str,
        choices: list[ChoiceDelta],
        usage: Usage | None = None,
        system_fingerprint: str | None = None,
    ) -> None:
        self._id = id
        self._created = created
        self.model = model
        self._choices: list[ChoiceDelta] | None = choices
        self.usage = usage
        self._fingerprint = system_fingerprint
        self.raw: list[bytes] | None = None
        self.text: str | None = None
        self.finished = False
        self.more = False
        self._decode: Callable[[list[bytes], str], ChatChunk] | None = None

    @classmethod
    def passthrough(
        cls,
        raw: list[bytes],
        model: str,
        decode: Callable[[list[bytes], str], ChatChunk],
        *,
        text: str | None,
        finished: bool,
    ) -> ChatChunk:
        """Plain chunks of one choice (index 0) without usage, kept as the upstream's bytes.
        ``text``: their content (None: none); ``decode`` makes the full chunk from ``raw`` when
        something reads it (rarely: a continuation, a cache, another API's front end)."""
        chunk = cls.__new__(cls)
        chunk._id = ""
        chunk._created = 0
        chunk.model = model
        chunk._choices = None
        chunk.usage = None
        chunk._fingerprint = None
        chunk.raw = raw
        chunk.text = text
        chunk.finished = finished
        chunk.more = False
        chunk._decode = decode
        return chunk

    def _load(self) -> list[ChoiceDelta]:
        assert self._decode is not None and self.raw is not None
        full = self._decode(self.raw, self.model)
        self._id, self._created, self._fingerprint = full.id, full.created, full.system_fingerprint
        self.model = full.model
        self._choices = full.choices
        return full.choices

    @property
    def choices(self) -> list[ChoiceDelta]:
        choices = self._choices
        return self._load() if choices is None else choices

    @choices.setter
    def choices(self, value: list[ChoiceDelta]) -> None:
        self._choices = value

    @property
    def id(self) -> str:
        if self._choices is None:
            self._load()
        return self._id

    @property
    def created(self) -> int:
        if self._choices is None:
            self._load()
        return self._created

    @property
    def system_fingerprint(self) -> str | None:
        if self._choices is None:
            self._load()
        return self._fingerprint

    def has_output(self) -> bool:
        """Whether a choice carries output (contracts "First token"), without decoding a
        pass-through chunk."""
        if self._choices is None:
            return bool(self.text) or self.finished
        return any(c.has_output() for c in self._choices)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatChunk):
            return NotImplemented
        return (self.id, self.created, self.model, self.choices, self.usage, self.system_fingerprint) == (
            other.id,
            other.created,
            other.model,
            other.choices,
            other.usage,
            other.system_fingerprint,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ChatChunk(id={self.id!r}, created={self.created!r}, model={self.model!r}, choices={self.choices!r}, "
            f"usage={self.usage!r}, system_fingerprint={self.system_fingerprint!r})"
        )


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    input: list[str] | list[list[int]]
    dimensions: int | None = None
    user: str | None = None
    #: what the client wants back: "float" or "base64" (the OpenAI SDK asks for base64)
    encoding_format: Literal["float", "base64"] = "float"
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EmbeddingResponse:
    model: str
    data: list[list[float]]
    usage: Usage


@dataclass(slots=True)
class UpstreamModel:
    """A model as listed by a provider's own model-listing endpoint."""

    id: str
    owned_by: str = ""
    context_window: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class HealthResult:
    ok: bool
    latency_ms: float
    detail: str = ""
    #: a chat probe's upstream model (None: the check asked no model, e.g. a model listing)
    probe_model: str | None = None
    #: what the chat probe's answer used (a probe is billed like any call)
    usage: Usage | None = None
