"""The Anthropic Messages API we serve (``POST /v1/messages``), in and out of the internal shape.

A Messages request becomes one :class:`~modelyard.types.ChatRequest`, so it takes the same
pipeline as chat completions, to any provider.  Going in:

* ``system`` (a string or text blocks) becomes a system message;
* ``text`` and ``image`` blocks become content parts (base64 sources as ``data:`` URIs);
* an assistant's ``tool_use`` blocks become tool calls;
* a user's ``tool_result`` blocks become tool messages, each matched to a ``tool_use`` of an
  earlier turn (400 when there is none);
* signed ``thinking`` and ``redacted_thinking`` blocks of earlier turns are kept verbatim
  (``Message.reasoning_blocks``) and replayed unchanged to Anthropic upstreams, which verify
  their signatures; other providers see none of them.  A thinking block with an empty
  signature (what this API emits for reasoning from a non-Anthropic model) is dropped;
* ``cache_control`` markers (top level, system, text, image, tool_use, tool_result blocks and
  tools) are validated and passed on to Anthropic upstreams, whose cache reads and writes are
  priced (``usage.cache_read_input_tokens`` / ``cache_creation_input_tokens``); ``thinking`` is
  validated and passed on too;
* ``output_config``: its ``effort`` (low ... max) is passed on to Anthropic upstreams (others
  ignore it); its ``format`` (a ``json_schema`` structured output) becomes the request's
  ``response_format``, which every provider serves (Anthropic ones by a forced tool).

Any other block type is a 400 naming it.  Coming out, the answer is a ``message`` with
``thinking``, ``text`` and ``tool_use`` blocks, or the event sequence ``message_start`` ...
``message_stop`` of a stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.errors import InvalidRequestError
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ContentPart,
    FinishReason,
    ForcedTool,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    Usage,
)
from modelyard.wire.openai import _bad, _int, _model, _num, _options, cache_control_of, signed_reasoning

__all__ = [
    "ANTHROPIC_VERSION",
    "MessagesStream",
    "encode_message",
    "parse_messages_request",
    "stop_reason",
]

#: the one version of the Messages API (the anthropic-version header)
ANTHROPIC_VERSION = "2023-06-01"

_KNOWN = {
    "model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p", "top_k",
    "stream", "tools", "tool_choice", "metadata", "thinking", "modelyard", "service_tier", "cache_control",
    "output_config",
}  # fmt: skip

#: ``output_config.effort`` values, lowest first (``xhigh``: Claude Opus 4.7 and later)
_EFFORTS = ("low", "medium", "high", "xhigh", "max")


def _output_config(value: Any) -> tuple[str | None, ResponseFormat | None]:
    """``output_config``: its ``effort`` (passed on to Anthropic models) and its ``format`` (the
    structured-output JSON schema, served as ``response_format`` by every provider)."""
    if value is None:
        return None, None
    if not isinstance(value, dict) or set(value) - {"effort", "format"}:
        raise _bad("output_config", "expected an object with 'effort' and/or 'format'")
    effort = value.get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise _bad("output_config.effort", f"expected one of {', '.join(_EFFORTS)}")
    fmt = value.get("format")
    if fmt is None:
        return effort, None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _bad("output_config.format", "expected {type: 'json_schema', schema: {...}}")
    return effort, ResponseFormat(type="json_schema", schema=fmt["schema"])


def _thinking(value: Any, max_tokens: int) -> dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("disabled", "adaptive") and set(value) == {"type"}:
        return {"type": kind}
    if kind != "enabled" or set(value) - {"type", "budget_tokens"}:
        raise _bad("thinking", "expected {type: 'enabled', budget_tokens}, {type: 'adaptive'} or {type: 'disabled'}")
    budget = value.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise _bad("thinking.budget_tokens", "an integer of at least 1024 is required when thinking is enabled")
    if budget >= max_tokens:
        raise _bad("thinking.budget_tokens", "must be less than max_tokens")
    return {"type": "enabled", "budget_tokens": budget}


def _blocks(content: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad(path, "expected a string or an array of content blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad(f"{path}[{i}]", "expected a content block object with a 'type'")
    return content


def _image(block: dict[str, Any], path: str) -> ContentPart:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _bad(f"{path}.source", "a base64 image needs media_type and data")
        return ContentPart(type="image", image_url=f"data:{media};base64,{data}")
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return ContentPart(type="image", image_url=source["url"])
    raise _bad(f"{path}.source", "expected a base64 or url image source")


def _result_text(content: Any, path: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, block in enumerate(_blocks(content, path)):
        if block["type"] != "text":
            raise InvalidRequestError(
                f"a tool_result may hold text blocks here, not {block['type']!r}",
                param=f"{path}[{i}].type",
                code="unsupported_content_block",
            )
        parts.append(str(block.get("text") or ""))
    return "".join(parts)


def _messages(raw: Any, system: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("'messages' must be a non-empty array of {role, content} objects", param="messages")
    out: list[Message] = []
    if system is not None:
        if isinstance(system, str):
            out.append(Message(role="system", content=system))
        else:
            blocks = _blocks(system, "system")
            for i, b in enumerate(blocks):
                if b["type"] != "text" or not isinstance(b.get("text"), str):
                    raise _bad(f"system[{i}]", "expected a text block")
            marks = [cache_control_of(b, f"system[{i}]") for i, b in enumerate(blocks)]
            if any(marks):
                marked = [
                    ContentPart(type="text", text=b["text"], cache_control=c)
                    for b, c in zip(blocks, marks, strict=True)
                ]
                out.append(Message(role="system", content=marked))
            else:
                out.append(Message(role="system", content="\n\n".join(b["text"] for b in blocks)))
    calls_seen: set[str] = set()
    for i, m in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise _bad(f"{path}.role", "expected 'user' or 'assistant'")
        role = m["role"]
        parts: list[ContentPart] = []
        calls: list[ToolCall] = []
        results: list[Message] = []
        signed: list[dict[str, Any]] = []
        for j, block in enumerate(_blocks(m.get("content"), f"{path}.content")):
            where = f"{path}.content[{j}]"
            kind = block["type"]
            mark = cache_control_of(block, where)
            if kind == "text":
                parts.append(ContentPart(type="text", text=str(block.get("text") or ""), cache_control=mark))
            elif kind == "image" and role == "user":
                image = _image(block, where)
                image.cache_control = mark
                parts.append(image)
            elif kind == "tool_use" and role == "assistant":
                call_id, name = block.get("id"), block.get("name")
                if not isinstance(call_id, str) or not isinstance(name, str):
                    raise _bad(where, "a tool_use block needs an id and a name")
                arguments = orjson.dumps(block.get("input") or {}).decode()
                calls.append(ToolCall(id=call_id, name=name, arguments=arguments, cache_control=mark))
                calls_seen.add(call_id)
            elif kind == "tool_result" and role == "user":
                ref = block.get("tool_use_id")
                if ref not in calls_seen:
                    raise InvalidRequestError(
                        f"tool_result for {ref!r} has no matching tool_use in an earlier assistant turn",
                        param=f"{where}.tool_use_id",
                        code="invalid_value",
                    )
                text = _result_text(block.get("content"), f"{where}.content")
                if block.get("is_error"):
                    text = f"Error: {text}"
                content: str | list[ContentPart] = (
                    text if mark is None else [ContentPart(type="text", text=text, cache_control=mark)]
                )
                results.append(Message(role="tool", content=content, tool_call_id=str(ref)))
            elif kind in ("thinking", "redacted_thinking") and role == "assistant":
                kept = signed_reasoning(block, where)
                if kept is not None:
                    signed.append(kept)
            else:
                raise InvalidRequestError(
                    f"content block type {kind!r} is not supported in a {role} message "
                    "(text, image, tool_use, tool_result, thinking)",
                    param=f"{where}.type",
                    code="unsupported_content_block",
                )
        out.extend(results)
        if parts or calls or signed or not results:
            only_text = all(p.type == "text" and p.cache_control is None for p in parts)
            joined: str | list[ContentPart] | None = "".join(p.text for p in parts) if only_text else parts
            reasoning = "".join(b.get("thinking", "") for b in signed) or None
            out.append(
                Message(
                    role=role,
                    content=joined if parts or not calls else None,
                    tool_calls=calls or None,
                    reasoning=reasoning,
                    reasoning_blocks=signed or None,
                )
            )
    return out


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _bad("tools", "expected an array of tools")
    tools = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise _bad(f"tools[{i}]", "expected {name, description, input_schema}")
        if t.get("type") not in (None, "custom"):
            raise InvalidRequestError(
                f"server tool {t.get('type')!r} is not supported through the gateway; define it as a custom tool",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )
        schema = t.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise _bad(f"tools[{i}].input_schema", "expected a JSON schema object")
        mark = cache_control_of(t, f"tools[{i}]")
        tools.append(Tool(name=t["name"], description=t.get("description"), parameters=schema, cache_control=mark))
    return tools or None


def _tool_choice(raw: Any) -> Any:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("tool_choice", "expected {type: auto | any | tool | none}")
    kind = raw.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(raw.get("name"), str):
        return ForcedTool(raw["name"])
    raise _bad("tool_choice", "expected {type: auto | any | tool (with name) | none}")


def parse_messages_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    model = _model(body)
    max_tokens = _int(body, "max_tokens", 1)
    if max_tokens is None:
        raise InvalidRequestError("max_tokens is required", param="max_tokens", code="missing_required_parameter")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise _bad("stop_sequences", "expected an array of strings")
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidRequestError(f"unknown parameter {unknown[0]!r}", param=unknown[0])
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "expected a boolean")
    extra: dict[str, Any] = {}
    if body.get("top_k") is not None:
        extra["top_k"] = _int(body, "top_k", 0)
    thinking = _thinking(body.get("thinking"), max_tokens)
    if thinking is not None:
        extra["thinking"] = thinking
    mark = cache_control_of(body, "body")
    if mark is not None:
        extra["cache_control"] = mark
    tier = body.get("service_tier")
    if tier is not None:
        if tier not in ("auto", "standard_only"):
            raise _bad("service_tier", "expected 'auto' or 'standard_only'")
        extra["service_tier"] = tier
    effort, response_format = _output_config(body.get("output_config"))
    if effort is not None:
        extra["output_config"] = {"effort": effort}
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages"), body.get("system")),
        stream=bool(stream),
        include_usage=True,
        temperature=_num(body, "temperature", 0, 1),
        top_p=_num(body, "top_p", 0, 1),
        max_tokens=max_tokens,
        stop=list(stop) if stop else None,
        user=user if isinstance(user, str) else None,
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        response_format=response_format,
        extra=extra,
        options=_options(body),
    )


# -- internal shapes -> Messages JSON -------------------------------------------------------

_STOP: dict[str | None, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    None: "end_turn",
}


def stop_reason(finish: FinishReason | None) -> str:
    return _STOP.get(finish, "end_turn")


def _usage(u: Usage | None, cost_usd: float | None) -> dict[str, Any]:
    u = u or Usage()
    out: dict[str, Any] = {
        "input_tokens": max(0, u.prompt_tokens - u.cached_tokens - u.cache_write_tokens),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_tokens - u.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
    }
    if cost_usd is not None:
        out["cost_usd"] = cost_usd
    return out


def message_id(request_id: str) -> str:
    return f"msg_{request_id.removeprefix('req_')[:24]}"


def _input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


def encode_message(resp: ChatResponse, model: str, request_id: str, cost_usd: float) -> bytes:
    choice = resp.choices[0] if resp.choices else None
    content: list[dict[str, Any]] = []
    if choice is not None:
        m = choice.message
        if m.reasoning_blocks:
            content += m.reasoning_blocks
        elif m.reasoning:  # reasoning from a model that does not sign it
            content.append({"type": "thinking", "thinking": m.reasoning, "signature": ""})
        text = m.text()
        if text or not m.tool_calls:
            content.append({"type": "text", "text": text})
        for call in m.tool_calls or ():
            content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call.arguments)})
    body = {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.finish_reason if choice else None),
        "stop_sequence": None,
        "usage": _usage(resp.usage, cost_usd),
    }
    return orjson.dumps(body)


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class MessagesStream:
    """Chat chunks in, the Messages event sequence out (one per stream; pure, no I/O)."""

    def __init__(self, model: str, request_id: str) -> None:
        self.model = model
        self.id = message_id(request_id)
        self.index = -1
        self.kind: str | None = None  # the open block: "thinking" | "redacted" | "text" | "tool_use"
        self.tool_ids: dict[int, str] = {}
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event("message_start", {"message": message}) + event("ping", {})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.kind = kind
        return out + event("content_block_start", {"index": self.index, "content_block": block})

    def _close(self, signature: str = "") -> bytes:
        if self.kind is None:
            return b""
        out = b""
        if self.kind == "thinking":  # a signature delta closes a thinking block
            delta = {"type": "signature_delta", "signature": signature}
            out += event("content_block_delta", {"index": self.index, "delta": delta})
        self.kind = None
        return out + event("content_block_stop", {"index": self.index})

    def feed(self, chunk: ChatChunk) -> bytes:
        out = b""
        if chunk.usage is not None:
            self.usage = chunk.usage
        for d in chunk.choices:
            if d.index != 0:
                continue
            if d.reasoning:
                if self.kind != "thinking":
                    out += self._open("thinking", {"type": "thinking", "thinking": ""})
                out += event(
                    "content_block_delta",
                    {"index": self.index, "delta": {"type": "thinking_delta", "thinking": d.reasoning}},
                )
            if d.reasoning_signature is not None and self.kind == "thinking":
                out += self._close(d.reasoning_signature)
            if d.redacted_reasoning:
                out += self._open("redacted", {"type": "redacted_thinking", "data": d.redacted_reasoning})
                out += self._close()
            if d.content:
                if self.kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += event(
                    "content_block_delta", {"index": self.index, "delta": {"type": "text_delta", "text": d.content}}
                )
            for call in d.tool_calls or ():
                if call.id and self.tool_ids.get(call.index) != call.id:
                    self.tool_ids[call.index] = call.id
                    block = {"type": "tool_use", "id": call.id, "name": call.name or "", "input": {}}
                    out += self._open("tool_use", block)
                if call.arguments:
                    delta = {"type": "input_json_delta", "partial_json": call.arguments}
                    out += event("content_block_delta", {"index": self.index, "delta": delta})
            if d.finish_reason is not None:
                self.finish = d.finish_reason
        return out

    def end(self, cost_usd: float | None) -> bytes:
        out = self._close()
        if self.index < 0:  # an empty answer still has one (empty) text block
            out += event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            out += event("content_block_stop", {"index": 0})
        usage = _usage(self.usage, cost_usd)
        delta = {"stop_reason": stop_reason(self.finish), "stop_sequence": None}
        return out + event("message_delta", {"delta": delta, "usage": usage}) + event("message_stop", {})
