"""Anthropic Messages API wire format (``POST {base}/v1/messages``).

Translation choices, where the OpenAI vocabulary has no exact Anthropic counterpart:

* ``system`` / ``developer`` messages, wherever they appear, become the top-level ``system``
  (one string, or several text blocks when there were several such messages).
* Consecutive messages of the same Anthropic role are merged into one message with several
  content blocks; ``tool`` messages become ``tool_result`` blocks of a user message, placed
  before any other block of that message (the API requires tool results to come first).
  Empty and whitespace-only text parts are dropped (the API rejects them), and trailing
  whitespace is stripped from a final assistant message (a prefill may not end with it).
* ``max_tokens`` is required by Anthropic: the request's value, else ``DEFAULT_MAX_TOKENS``.
* ``temperature`` is clamped to Anthropic's range [0, 1] (OpenAI accepts up to 2).
* ``n`` > 1 is rejected (one answer per call); ``seed``, penalties and ``logprobs`` have no
  Anthropic equivalent and are ignored.  From ``extra`` only Anthropic's own ``top_k``, ``thinking``,
  ``output_config``, ``service_tier`` and top-level ``cache_control`` (automatic prompt caching)
  are passed on.
* ``response_format`` (``json_object`` / ``json_schema``): the base Messages API has no JSON
  mode that every model supports (``output_config.format`` structured outputs exist only on
  recent models), so JSON mode is done with a tool, which works on every model: a system
  instruction plus a synthetic tool (``json_response``) whose ``input_schema`` is the schema,
  forced with ``tool_choice`` (``{"type": "any"}`` when the client offered tools of its own, so
  the model may still call those; a client's forced tool call takes precedence over JSON mode).
  The tool's input is turned back into the text ``content``
  and the call is not reported as a tool call.  Tool inputs must be JSON objects, so a schema
  whose top level is not an object is wrapped as ``{"value": <schema>}`` and unwrapped again.
* Finish reasons: ``end_turn`` / ``stop_sequence`` / ``pause_turn`` -> ``stop``, ``max_tokens``
  / ``model_context_window_exceeded`` -> ``length``, ``tool_use`` -> ``tool_calls``, ``refusal``
  -> ``content_filter``.
* Usage: Anthropic's ``input_tokens`` excludes cached tokens, OpenAI's ``prompt_tokens``
  includes them, so ``prompt_tokens = input + cache_read + cache_creation``;
  ``cached_tokens = cache_read_input_tokens``, ``cache_write_tokens =
  cache_creation_input_tokens``.
* Thinking blocks become ``reasoning`` text, and are also kept verbatim with their ``signature``
  (``reasoning_blocks``, streamed as ``reasoning_signature`` / ``redacted_reasoning`` deltas), so
  an assistant turn sent back replays them unchanged: Anthropic verifies the signatures, and
  requires them in a tool-use loop with thinking enabled.  OpenAI's ``reasoning_effort`` turns
  thinking on for a model that can think (:func:`_reasoning_hint`): adaptive thinking with
  ``output_config.effort`` (low for minimal/low, medium, high, xhigh; ``max`` for xhigh on 4.6)
  on Claude 4.6 and later, a fixed budget on Claude 3.7 to 4.5 (1024 for minimal/low, 2048
  medium, 4096 high, 8192 xhigh); ``max_tokens`` grows by that budget when it would not exceed
  it.  ``thinking``, ``output_config`` and ``cache_control`` (top level, and on system, content,
  tool_use and tool blocks) are passed through.
* Server-tool blocks in answers are skipped (OpenAI's format cannot carry them).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelyard.config.schema import AnthropicProviderConfig
from modelyard.errors import (
    InvalidRequestError,
    UpstreamConnectionError,
    UpstreamStatusError,
)
from modelyard.providers._http import SSEEvent, iter_sse
from modelyard.providers.base import CallOptions, Provider, classify_error_message, translated_stream
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChoiceDelta,
    ContentPart,
    FinishReason,
    ForcedTool,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    UpstreamModel,
    Usage,
)

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicProvider",
    "EncodedRequest",
    "JsonTool",
    "StreamTranslator",
    "decode_response",
    "decode_stop",
    "decode_usage",
    "encode_messages",
    "encode_request",
    "error_status",
    "parse_error",
]

DEFAULT_API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
JSON_TOOL_NAME = "json_response"

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic error ``type`` -> the HTTP status it comes with (used for in-band stream errors)
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

#: request fields from ``ChatRequest.extra`` that are Anthropic's own and passed on unchanged
_EXTRA_PASSTHROUGH = ("top_k", "service_tier", "cache_control", "thinking", "output_config")

#: reasoning_effort -> thinking budget_tokens (models before adaptive thinking); also the answer
#: allowance kept on top of the thinking in ``max_tokens`` (both styles)
_EFFORT_BUDGET = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192}
#: reasoning_effort -> output_config.effort (adaptive thinking)
_EFFORT_LEVEL = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
#: models that think only with a fixed budget (``thinking.type: "enabled"``): Claude 3.7 to 4.5.
#: Every other model that can think (4.6 and later) takes adaptive thinking; the newest only that.
_BUDGET_THINKING = (
    "claude-3-7",
    "claude-sonnet-4-5",
    "claude-opus-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-opus-4-0",
    "claude-sonnet-4-0",
    "claude-opus-4-2025",
    "claude-sonnet-4-2025",
)
#: adaptive models that predate the ``xhigh`` effort (it becomes ``max`` for them)
_NO_XHIGH = ("claude-opus-4-6", "claude-sonnet-4-6")
#: models without thinking (and with the sampling parameters)
_NO_THINKING = ("claude-3-", "claude-2", "claude-instant")

_TOOL_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")


# -- internal -> Anthropic ---------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class JsonTool:
    """The synthetic tool that carries a JSON-mode answer."""

    name: str
    #: the schema's top level was not an object: the answer is ``input["value"]``
    wrapped: bool = False

    def answer(self, tool_input: Any) -> str:
        value = tool_input.get("value") if self.wrapped and isinstance(tool_input, dict) else tool_input
        return orjson.dumps(value).decode()


@dataclass(slots=True)
class EncodedRequest:
    body: dict[str, Any]
    json_tool: JsonTool | None = None


def _bad(message: str, param: str = "messages") -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _cached(block: dict[str, Any], cache_control: dict[str, Any] | None) -> dict[str, Any]:
    if cache_control is not None:
        block["cache_control"] = cache_control
    return block


def encode_image(part: ContentPart) -> dict[str, Any]:
    url = part.image_url
    if url.startswith("data:"):
        data, media_type = part.base64_data, part.media_type
        if not data or not media_type:
            raise _bad("image data URIs must be base64-encoded: data:<media type>;base64,<data>")
        block = {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    elif url.startswith(("http://", "https://")):
        block = {"type": "image", "source": {"type": "url", "url": url}}
    else:
        raise _bad("image_url must be an http(s) URL or a base64 data: URI")
    return _cached(block, part.cache_control)


def _content_blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part.type == "image":
            blocks.append(encode_image(part))
        elif part.text.strip():
            blocks.append(_cached({"type": "text", "text": part.text}, part.cache_control))
    return blocks


def _tool_input(call: ToolCall) -> dict[str, Any]:
    if not call.arguments.strip():
        return {}
    try:
        value = orjson.loads(call.arguments)
    except orjson.JSONDecodeError:
        raise _bad(f"the arguments of tool call {call.id!r} are not valid JSON") from None
    if not isinstance(value, dict):
        raise _bad(f"the arguments of tool call {call.id!r} must be a JSON object")
    return value


def _tool_result(m: Message) -> dict[str, Any]:
    if not m.tool_call_id:
        raise _bad("a message with role 'tool' needs a tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
    if isinstance(m.content, str):
        if m.content:
            block["content"] = m.content
    elif m.content:
        parts = _content_blocks(m.content)
        if parts:
            block["content"] = parts
    return block


def encode_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system text blocks, Anthropic messages) for OpenAI-style ``messages``."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            if isinstance(m.content, list):
                system += [b for b in _content_blocks(m.content) if b["type"] == "text"]
            elif m.content and m.content.strip():
                system.append({"type": "text", "text": m.content})
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if m.role == "tool":
            blocks = [_tool_result(m)]
        else:
            # signed thinking blocks go back first and unchanged (the API verifies them)
            blocks = [dict(b) for b in m.reasoning_blocks or ()] if m.role == "assistant" else []
            blocks += _content_blocks(m.content)
            if m.role == "assistant" and m.tool_calls:
                blocks += [
                    _cached({"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c)}, c.cache_control)
                    for c in m.tool_calls
                ]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":  # tool results first (stable: keeps their order)
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if turns and turns[-1]["role"] == "assistant":
        _strip_prefill(turns)
    for turn in turns:
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]:
            turn["content"] = blocks[0]["text"]
    return system, turns


def _strip_prefill(turns: list[dict[str, Any]]) -> None:
    """A final assistant message may not end with whitespace."""
    blocks = turns[-1]["content"]
    if blocks[-1]["type"] == "text":
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {**blocks[-1], "text": text}
        else:
            blocks.pop()
    if not blocks:
        turns.pop()


def encode_tool(t: Tool) -> dict[str, Any]:
    schema = dict(t.parameters) if t.parameters else {"type": "object", "properties": {}}
    schema.setdefault("type", "object")
    out: dict[str, Any] = {"name": t.name}
    if t.description is not None:
        out["description"] = t.description
    out["input_schema"] = schema
    return _cached(out, t.cache_control)


def encode_tool_choice(choice: str | ForcedTool | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, ForcedTool):
        out: dict[str, Any] = {"type": "tool", "name": choice.name}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "auto"}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _json_tool(rf: ResponseFormat, taken: set[str]) -> tuple[JsonTool, dict[str, Any]]:
    base = _TOOL_NAME_BAD.sub("_", rf.name or "")[:56] or JSON_TOOL_NAME
    name, n = base, 1
    while name in taken:  # never shadow one of the client's own tools
        n += 1
        name = f"{base}_{n}"
    wrapped = False
    if rf.type == "json_schema" and rf.schema:
        schema = dict(rf.schema)
        if schema.get("type") != "object" and not ("properties" in schema and "type" not in schema):
            defs: dict[str, Any] = {k: schema.pop(k) for k in ("$defs", "definitions") if k in schema}
            schema = {"type": "object", "properties": {"value": schema}, "required": ["value"], **defs}
            wrapped = True
        schema.setdefault("type", "object")
        description = "Give the final answer. The input is the answer, and must match this schema."
    else:
        schema = {"type": "object"}
        description = "Give the final answer. The input is the answer, as a JSON object."
    tool = {"name": name, "description": description, "input_schema": schema}
    return JsonTool(name, wrapped), tool


def encode_request(req: ChatRequest, model: str, *, stream: bool, reasoning: bool = True) -> EncodedRequest:
    """The Anthropic request body for ``req``, addressed to upstream ``model``; ``reasoning``: the
    model can think (else a ``reasoning_effort`` is dropped rather than sent as ``thinking``)."""
    if req.n is not None and req.n > 1:
        raise _bad("Anthropic models return one choice per request: 'n' must be 1", "n")
    system, messages = encode_messages(req.messages)
    body: dict[str, Any] = {key: req.extra[key] for key in _EXTRA_PASSTHROUGH if key in req.extra}
    body["model"] = model
    body["max_tokens"] = req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS
    body["messages"] = messages
    if req.temperature is not None:
        body["temperature"] = min(1.0, max(0.0, req.temperature))
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        stops = [s for s in req.stop if s]
        if stops:
            body["stop_sequences"] = stops
    if req.user:
        body["metadata"] = {"user_id": req.user}
    tools = [encode_tool(t) for t in req.tools or []]
    choice = encode_tool_choice(req.tool_choice, req.parallel_tool_calls) if tools else None
    json_tool: JsonTool | None = None
    rf = req.response_format
    if rf is not None and rf.type != "text" and not isinstance(req.tool_choice, ForcedTool):
        if choice is not None and choice["type"] == "none":
            tools, choice = [], None
        json_tool, tool_def = _json_tool(rf, {t["name"] for t in tools})
        if tools:
            choice = {"type": "any", **({k: v for k, v in (choice or {}).items() if k != "type"})}
        else:
            choice = {"type": "tool", "name": json_tool.name}
            if req.parallel_tool_calls is False:
                choice["disable_parallel_tool_use"] = True
        tools.append(tool_def)
        instruction = (
            f"Give your final answer by calling the `{json_tool.name}` tool: its input is the answer, as JSON"
            + (" that matches the tool's input schema" if rf.type == "json_schema" and rf.schema else "")
            + ". Do not write the answer as plain text."
        )
        system.append({"type": "text", "text": instruction})
    if tools:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    if len(system) == 1 and "cache_control" not in system[0]:
        body["system"] = system[0]["text"]
    elif system:
        body["system"] = system
    if reasoning:
        _reasoning_hint(body, req.extra.get("reasoning_effort"), model)
    _fit_effort(body, model)
    if sampling_removed(model):
        for key in ("temperature", "top_p", "top_k"):
            body.pop(key, None)
    if stream:
        body["stream"] = True
    return EncodedRequest(body, json_tool)


def thinking_style(model: str) -> str:
    """How ``model`` is asked to think: ``"budget"`` (``thinking.type: "enabled"`` with
    ``budget_tokens``: Claude 3.7 to 4.5) or ``"adaptive"`` (``thinking.type: "adaptive"`` with
    ``output_config.effort``: Claude 4.6 and later, the only way for the newest models)."""
    return "budget" if _claude_name(model).startswith(_BUDGET_THINKING) else "adaptive"


def sampling_removed(model: str) -> bool:
    """Whether ``model`` refuses ``temperature``, ``top_p`` and ``top_k`` (a 400 "`temperature` is
    deprecated for this model"): Claude Opus 4.7 and the adaptive-only models after it.  They are
    not sent to it (a route falling back from GPT-4o to Opus 4.7 would fail on them)."""
    name = _claude_name(model)
    return name.startswith("claude-") and not name.startswith(_BUDGET_THINKING + _NO_XHIGH + _NO_THINKING)


def _claude_name(model: str) -> str:
    """The model's name from ``claude`` on (Bedrock's ``anthropic.claude-...`` ids too)."""
    return model[model.find("claude") :] if "claude" in model else model


def _fit_effort(body: dict[str, Any], model: str) -> None:
    """``output_config.effort`` (the client's, or the reasoning hint's) as ``model`` takes it: dropped
    for a model before adaptive thinking (Sonnet 4.5 refuses it, and a fallback's request would
    fail), ``xhigh`` as ``max`` on Claude 4.6, which predates it."""
    config = body.get("output_config")
    if not isinstance(config, dict) or "effort" not in config:
        return
    if thinking_style(model) == "budget":
        config = {k: v for k, v in config.items() if k != "effort"}
    elif config["effort"] == "xhigh" and _claude_name(model).startswith(_NO_XHIGH):
        config = {**config, "effort": "max"}
    if config:
        body["output_config"] = config
    else:
        del body["output_config"]


def _reasoning_hint(body: dict[str, Any], effort: Any, model: str) -> None:
    """OpenAI's ``reasoning_effort`` as Anthropic thinking, where the request allows thinking.

    It is a hint: an explicit ``thinking`` wins, and it is dropped where the API refuses thinking
    (a forced tool call, which JSON mode is; a prefilled answer, which a continuation is).  Thinking
    takes the default sampling, so ``temperature`` and ``top_k`` are dropped and ``top_p`` is kept
    at 0.95 or more.  ``max_tokens`` grows by the effort's budget when it would not exceed it, so
    the answer keeps an allowance of its own."""
    if "thinking" in body or not isinstance(effort, str) or effort not in _EFFORT_BUDGET:
        return
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") in ("any", "tool"):
        return
    if body["messages"] and body["messages"][-1].get("role") == "assistant":
        return
    budget = _EFFORT_BUDGET[effort]
    if thinking_style(model) == "budget":
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    else:
        body["thinking"] = {"type": "adaptive"}
        config = body.get("output_config")
        if not isinstance(config, dict):
            body["output_config"] = {"effort": _EFFORT_LEVEL[effort]}
        elif "effort" not in config:
            body["output_config"] = {**config, "effort": _EFFORT_LEVEL[effort]}
    if body["max_tokens"] <= budget:
        body["max_tokens"] += budget
    body.pop("temperature", None)
    body.pop("top_k", None)
    if "top_p" in body and body["top_p"] < 0.95:
        body["top_p"] = 0.95


# -- Anthropic -> internal ---------------------------------------------------------------


def decode_stop(value: Any) -> FinishReason | None:
    if value is None:
        return None
    return _STOP.get(str(value), "stop")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def decode_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    fresh = _int(data.get("input_tokens"))
    read = _int(data.get("cache_read_input_tokens"))
    write = _int(data.get("cache_creation_input_tokens"))
    output = _int(data.get("output_tokens"))
    creation = data.get("cache_creation")  # the split of the writes by lifetime
    prompt = fresh + read + write
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=prompt + output,
        cached_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=_int(creation.get("ephemeral_1h_input_tokens")) if isinstance(creation, dict) else 0,
    )


def decode_response(data: Any, model: str, json_tool: JsonTool | None = None) -> ChatResponse:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise ValueError("response has no 'content' list")
    texts: list[str] = []
    thinking: list[str] = []
    signed: list[dict[str, Any]] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking") or ""))
            signed.append(block)
        elif kind == "redacted_thinking":
            signed.append(block)
        elif kind == "tool_use":
            tool_input = block.get("input")
            if json_tool is not None and block.get("name") == json_tool.name:
                texts.append(json_tool.answer(tool_input))
            else:
                calls.append(
                    ToolCall(
                        id=str(block.get("id") or ""),
                        name=str(block.get("name") or ""),
                        arguments=orjson.dumps(tool_input if tool_input is not None else {}).decode(),
                    )
                )
    finish = decode_stop(data.get("stop_reason"))
    if finish == "tool_calls" and not calls:  # only the JSON-mode tool was called
        finish = "stop"
    message = Message(
        role="assistant",
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        reasoning="".join(thinking) or None,
        reasoning_blocks=signed or None,
    )
    return ChatResponse(
        id=str(data.get("id") or ""),
        created=int(time.time()),
        model=str(data.get("model") or model),
        choices=[Choice(index=0, message=message, finish_reason=finish)],
        usage=decode_usage(data.get("usage")),
    )


def parse_error(body: Any) -> tuple[str, str | None]:
    """(message, Anthropic error type) from ``{"type": "error", "error": {"type", "message"}}``."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        etype = err.get("type")
        return str(err.get("message") or etype or body), str(etype) if etype else None
    if isinstance(err, str):
        return err, None
    return str(body)[:500], None


def error_status(error_type: str | None) -> int:
    """The HTTP status an Anthropic error type comes with (500 when unknown)."""
    return _ERROR_STATUS.get(error_type or "", 500)


def classify(message: str, error_type: str | None) -> str | None:
    """Our error code for an Anthropic error: context length and content filtering are recognised."""
    m = message.lower()
    if "exceed context limit" in m or "context window" in m:
        return "context_length_exceeded"
    if "content filtering policy" in m:
        return "content_policy_violation"
    return classify_error_message(message) or error_type


@dataclass(slots=True)
class _Block:
    kind: str  # "text" | "tool" | "json" | "thinking" | "other"
    tool_index: int = -1
    buffer: list[str] = field(default_factory=list)


class StreamTranslator:
    """Turns Anthropic stream events into OpenAI-style chunks, one event at a time.

    Pure (no I/O), so it is tested directly.  :meth:`feed` raises
    :class:`UpstreamStatusError` for an in-band ``error`` event, and ``KeyError`` /
    ``TypeError`` / ``ValueError`` / ``AttributeError`` for events it cannot make sense of.
    """

    def __init__(self, model: str, json_tool: JsonTool | None = None, *, provider: str = "") -> None:
        self.model = model
        self.json_tool = json_tool
        self.provider = provider
        self.id = ""
        self.created = int(time.time())
        self.stop_reason: str | None = None
        self.done = False
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}
        self._tools = 0
        self._finish_sent = False
        self._usage_sent = False

    @property
    def complete(self) -> bool:
        """True when the answer is whole: ``message_stop`` arrived, or at least a stop reason."""
        return self.done or self.stop_reason is not None

    def _chunk(self, delta: ChoiceDelta | None = None, usage: Usage | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id, created=self.created, model=self.model, choices=[delta] if delta else [], usage=usage
        )

    def more_text(self, data: dict[str, Any]) -> str | None:
        """The text of a ``text_delta`` event (the bulk of a stream); None for any other event
        (:meth:`feed` takes it).  :meth:`feed` makes such an event a :meth:`text_chunk`; a stream
        merges the texts of one read into one (``translated_stream``) without those chunks."""
        if data.get("type") != "content_block_delta":
            return None
        delta = data.get("delta")
        if type(delta) is not dict or delta.get("type") != "text_delta":
            return None
        block = self._blocks.get(data.get("index", -1))
        text = delta.get("text")
        if block is None or block.kind != "text" or type(text) is not str or not text:
            return None
        return text

    def text_chunk(self, text: str) -> ChatChunk:
        """The chunk of answer text ``text``."""
        return self._chunk(ChoiceDelta(content=text))

    def _finish(self) -> ChatChunk:
        self._finish_sent = True
        finish = decode_stop(self.stop_reason or "end_turn")
        if finish == "tool_calls" and self._tools == 0:
            finish = "stop"
        return self._chunk(ChoiceDelta(finish_reason=finish))

    def usage_chunk(self) -> list[ChatChunk]:
        """The final usage-only chunk (once)."""
        if self._usage_sent:
            return []
        self._usage_sent = True
        return [self._chunk(usage=decode_usage(self._usage) or Usage())]

    def feed(self, data: dict[str, Any]) -> list[ChatChunk]:
        kind = data["type"]
        if kind == "message_start":
            message = data["message"]
            self.id = str(message.get("id") or "")
            self.model = str(message.get("model") or self.model)
            self._usage.update(message.get("usage") or {})
            return [self._chunk(ChoiceDelta(role="assistant", content=""))]
        if kind == "content_block_start":
            return self._block_start(int(data["index"]), data["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(int(data["index"]), data["delta"])
        if kind == "content_block_stop":
            return self._block_stop(int(data["index"]))
        if kind == "message_delta":
            usage = data.get("usage") or {}
            # usage counts on message_delta are cumulative: they replace, and absent ones stay
            self._usage.update({k: v for k, v in usage.items() if v is not None})
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason is not None:
                self.stop_reason = str(reason)
                if not self._finish_sent:
                    return [self._finish()]
            return []
        if kind == "message_stop":
            self.done = True
            out = [] if self._finish_sent else [self._finish()]
            return out + self.usage_chunk()
        if kind == "error":
            raise self.in_band_error(data.get("error"))
        return []  # ping, and event types added to the API later

    def _block_start(self, index: int, block: dict[str, Any]) -> list[ChatChunk]:
        btype = block.get("type")
        if btype == "text":
            self._blocks[index] = _Block("text")
            text = block.get("text")
            return [self._chunk(ChoiceDelta(content=text))] if text else []
        if btype == "tool_use":
            if self.json_tool is not None and block.get("name") == self.json_tool.name:
                self._blocks[index] = _Block("json")
                return []
            self._blocks[index] = _Block("tool", tool_index=self._tools)
            self._tools += 1
            call = ToolCallDelta(index=self._tools - 1, id=str(block["id"]), name=str(block["name"]), arguments="")
            return [self._chunk(ChoiceDelta(tool_calls=[call]))]
        if btype == "thinking":
            self._blocks[index] = _Block("thinking")
            text = block.get("thinking")
            return [self._chunk(ChoiceDelta(reasoning=text))] if text else []
        if btype == "redacted_thinking":
            self._blocks[index] = _Block("other")
            return [self._chunk(ChoiceDelta(redacted_reasoning=str(block["data"])))]
        self._blocks[index] = _Block("other")
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[ChatChunk]:
        block = self._blocks.get(index) or _Block("other")
        dtype = delta.get("type")
        if dtype == "text_delta" and block.kind == "text":
            text = str(delta["text"])
            return [self._chunk(ChoiceDelta(content=text))] if text else []
        if dtype == "thinking_delta" and block.kind == "thinking":
            text = str(delta.get("thinking") or "")
            return [self._chunk(ChoiceDelta(reasoning=text))] if text else []
        if dtype == "signature_delta" and block.kind == "thinking":
            return [self._chunk(ChoiceDelta(reasoning_signature=str(delta["signature"])))]
        if dtype == "input_json_delta":
            fragment = str(delta["partial_json"])
            if not fragment:
                return []
            if block.kind == "tool":
                call = ToolCallDelta(index=block.tool_index, arguments=fragment)
                return [self._chunk(ChoiceDelta(tool_calls=[call]))]
            if block.kind == "json":
                assert self.json_tool is not None
                if self.json_tool.wrapped:
                    block.buffer.append(fragment)
                    return []
                return [self._chunk(ChoiceDelta(content=fragment))]
        return []  # citation deltas

    def _block_stop(self, index: int) -> list[ChatChunk]:
        block = self._blocks.get(index)
        if block is None or block.kind != "json" or self.json_tool is None or not self.json_tool.wrapped:
            return []
        raw = "".join(block.buffer)
        answer = self.json_tool.answer(orjson.loads(raw) if raw else {})
        return [self._chunk(ChoiceDelta(content=answer))]

    def in_band_error(self, err: Any) -> UpstreamStatusError:
        message, etype = parse_error({"error": err})
        return UpstreamStatusError(
            f"{self.provider} reported an error mid-stream for {self.model!r}: {message}",
            upstream_status=error_status(etype),
            provider=self.provider,
            model=self.model,
            code=classify(message, etype),
        )


# -- the adapter -------------------------------------------------------------------------


class AnthropicProvider(Provider):
    kind = "anthropic"
    default_base_url = "https://api.anthropic.com"
    #: a Messages API client's beta flags go to Anthropic upstreams only
    forwarded_headers = ("anthropic-beta",)
    config: AnthropicProviderConfig

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.config.api_version or DEFAULT_API_VERSION}
        if self.config.api_key is not None:
            headers["x-api-key"] = self.config.api_key.get_secret_value()
        return headers

    def parse_error_body(self, raw: bytes) -> tuple[str, str | None, str | None]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            text = raw.decode("utf-8", "replace").strip()
            return (text[:500] or "no error body"), classify_error_message(text), None
        message, etype = parse_error(body)
        return message, classify(message, etype), None

    async def chat(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> ChatResponse:
        encoded = encode_request(request, upstream_model, stream=False, reasoning=call.reasoning)
        data = await self.request_json(
            "POST", f"{self.base_url}/v1/messages", model=upstream_model, call=call, body=encoded.body
        )
        if isinstance(data, dict) and data.get("type") == "error":
            raise self._in_band(data.get("error"), upstream_model)
        try:
            return decode_response(data, upstream_model, encoded.json_tool)
        except (ValueError, TypeError, AttributeError) as exc:
            raise self.malformed(f"unexpected response shape from {upstream_model!r}: {exc}", upstream_model) from exc

    async def stream(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> AsyncIterator[ChatChunk]:
        encoded = encode_request(request, upstream_model, stream=True, reasoning=call.reasoning)
        translator = StreamTranslator(upstream_model, encoded.json_tool, provider=self.name)
        more_text = translator.more_text

        def feed(event: SSEEvent) -> list[ChatChunk] | str:
            data = orjson.loads(event.data)
            if not isinstance(data, dict):
                raise TypeError("event data is not an object")
            data.setdefault("type", event.event)
            return more_text(data) or translator.feed(data)

        async with self.request(
            "POST", f"{self.base_url}/v1/messages", model=upstream_model, call=call, body=encoded.body
        ) as resp:
            events = iter_sse(resp, provider=self.name, model=upstream_model)
            async for chunk in translated_stream(
                self, events, upstream_model, feed, translator.text_chunk, lambda: translator.done
            ):
                yield chunk
            if translator.done:
                return
        if not translator.complete:
            raise UpstreamConnectionError(
                f"{self.name}: stream from {upstream_model!r} ended before the answer was complete",
                provider=self.name,
                model=upstream_model,
            )
        for chunk in translator.usage_chunk():
            yield chunk

    def _in_band(self, err: Any, model: str) -> UpstreamStatusError:
        return StreamTranslator(model, provider=self.name).in_band_error(err)

    async def list_models(self) -> list[UpstreamModel]:
        models: list[UpstreamModel] = []
        params: dict[str, str] = {"limit": "1000"}
        for _ in range(100):  # pages; a bound against a server that never says has_more=false
            data = await self.request_json(
                "GET",
                f"{self.base_url}/v1/models",
                model="(list models)",
                call=CallOptions(timeout_s=15),
                params=params,
            )
            items = data.get("data") if isinstance(data, dict) else None
            models += [_model(m) for m in items or [] if isinstance(m, dict) and m.get("id")]
            if not (isinstance(data, dict) and data.get("has_more") and data.get("last_id")):
                break
            params = {"limit": "1000", "after_id": str(data["last_id"])}
        return models


def _model(m: Mapping[str, Any]) -> UpstreamModel:
    details = {k: m[k] for k in ("display_name", "created_at", "max_tokens") if m.get(k) is not None}
    window = m.get("max_input_tokens")
    return UpstreamModel(
        id=str(m["id"]),
        owned_by="anthropic",
        context_window=int(window) if isinstance(window, int) else None,
        details=details,
    )
