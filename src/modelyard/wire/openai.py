"""The OpenAI wire format as modelyard serves it: request bodies -> the internal shape (with 400s
that name the offending parameter), and internal shapes -> response JSON, stream chunks, embeddings.

Hand-written rather than a pydantic model: the request path is hot, and a body that is only
forwarded does not need a full object graph.  Fields modelyard does not know are kept in
``extra`` and passed through unchanged to OpenAI-compatible upstreams.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import Any, cast

import orjson

from modelyard.errors import InvalidRequestError
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResponse,
    ForcedTool,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    Usage,
)
from modelyard.validators import check_model_name

__all__ = [
    "DONE",
    "REASONING_EFFORTS",
    "ChunkEncoder",
    "Forwarder",
    "decode_body",
    "encode_chunk",
    "encode_embeddings",
    "encode_response",
    "encode_usage",
    "parse_chat_request",
    "parse_embedding_request",
    "sse_error",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
#: OpenAI's ``reasoning_effort`` values (chat) and ``reasoning.effort`` (Responses)
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_CHAT_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "seed",
        "user",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "modelyard",
    }
)


def decode_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequestError("the request body is empty: send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {message}", param=param, code="invalid_value")


#: orjson encodes at most this many nested arrays/objects (parsing allows 1024)
_ENCODE_DEPTH = 254
#: nesting allowed in a value that is sent on (pass-through fields, tool schemas); the rest of
#: orjson's limit is left for the upstream body that wraps the value
MAX_NESTING = 200
_WRAP = _ENCODE_DEPTH - MAX_NESTING


def _forwardable(value: Any, param: str) -> Any:
    """``value`` if it can be encoded again inside an upstream body, else a 400 naming ``param``.

    A body nested deeper than orjson can encode parses fine, then fails when the upstream request
    is built (a 500 after the route was chosen).  Encoding the value wrapped in ``_WRAP`` arrays
    checks its depth in C, without a walk in Python; only values that are forwarded are checked.
    """
    if not isinstance(value, dict | list) or not value:
        return value
    wrapped: Any = value
    for _ in range(_WRAP):
        wrapped = (wrapped,)
    try:
        orjson.dumps(wrapped)
    except TypeError:  # orjson.JSONEncodeError: "Recursion limit reached" (or a non-JSON value via the SDK)
        why = f"nested too deeply or not JSON (at most {MAX_NESTING} levels of arrays and objects)"
        raise _bad(param, why) from None
    return value


def _num(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(key, f"expected a number between {lo} and {hi}, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _bad(key, f"must be between {lo} and {hi}, got {v}")
    return float(v)


def _int(body: dict[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(key, f"expected an integer, got {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        raise _bad(key, f"must be between {lo} and {hi}" if hi is not None else f"must be at least {lo}")
    return v


def _bool(body: dict[str, Any], key: str) -> bool | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise _bad(key, f"expected a boolean, got {type(v).__name__}")
    return v


def _str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _bad(key, f"expected a string, got {type(v).__name__}")
    return v


def _model(body: dict[str, Any], *, optional: bool = False) -> str:
    """The body's ``model``; ``optional``: "" when it is missing (the gateway's default route serves it)."""
    model = body.get("model")
    if model is None and optional:
        return ""
    if model is None:
        raise InvalidRequestError(
            "you must provide a model parameter: a route, a model, or provider:model (see GET /v1/models)",
            param="model",
            code="missing_required_parameter",
        )
    if not isinstance(model, str) or not model.strip():
        raise _bad("model", "expected a non-empty string")
    return check_model_name(model, "model")


def _json_type(v: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}.get(type(v), "value")


_TTLS = ("5m", "1h")


def cache_control_of(block: dict[str, Any], path: str) -> dict[str, Any] | None:
    """A block's validated ``cache_control`` marker, or None."""
    value = block.get("cache_control")
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "ephemeral" or set(value) - {"type", "ttl"}:
        raise _bad(f"{path}.cache_control", "expected {type: 'ephemeral', ttl?: '5m' | '1h'}")
    if "ttl" in value and value["ttl"] not in _TTLS:
        raise _bad(f"{path}.cache_control.ttl", "expected '5m' or '1h'")
    return dict(value)


def signed_reasoning(block: dict[str, Any], path: str) -> dict[str, Any] | None:
    """A thinking / redacted_thinking block to replay verbatim, or None for an unsigned one."""
    if block["type"] == "redacted_thinking":
        if not isinstance(block.get("data"), str) or not block["data"]:
            raise _bad(f"{path}.data", "a redacted_thinking block needs its data")
        return {"type": "redacted_thinking", "data": block["data"]}
    text, signature = block.get("thinking"), block.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise _bad(path, "a thinking block needs thinking and signature strings")
    return {"type": "thinking", "thinking": text, "signature": signature} if signature else None


def _content(raw: Any, where: str, role: str) -> str | list[ContentPart] | None:
    if raw is None or isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise _bad(f"{where}.content", "expected a string or an array of content parts")
    parts: list[ContentPart] = []
    for j, part in enumerate(raw):
        p = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise _bad(p, "expected an object")
        ptype = part.get("type")
        if ptype == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(f"{p}.text", "expected a string")
            parts.append(ContentPart(type="text", text=text, cache_control=cache_control_of(part, p)))
        elif ptype == "image_url":
            if role != "user":
                raise _bad(p, f"image parts are only allowed in user messages, not {role}")
            img = part.get("image_url")
            url = img.get("url") if isinstance(img, dict) else img if isinstance(img, str) else None
            if not isinstance(url, str) or not url:
                raise _bad(f"{p}.image_url.url", "expected an image URL or a data: URI")
            detail = img.get("detail") if isinstance(img, dict) else None
            mark = cache_control_of(part, p)
            parts.append(ContentPart(type="image", image_url=url, detail=detail, cache_control=mark))
        elif ptype == "refusal" and role == "assistant":
            parts.append(ContentPart(type="text", text=str(part.get("refusal") or "")))
        else:
            raise _bad(f"{p}.type", f"unsupported content part type {ptype!r} (supported: text, image_url)")
    return parts


def _message(raw: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _bad(where, "expected an object with 'role' and 'content'")
    role = raw.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        shown = repr(role) if isinstance(role, str | None) else f"a JSON {_json_type(role)}"
        raise _bad(f"{where}.role", f"expected one of {', '.join(sorted(_ROLES))}, got {shown[:80]}")
    content = _content(raw.get("content"), where, role)
    tool_calls: list[ToolCall] | None = None
    raw_calls = raw.get("tool_calls")
    if raw_calls is not None:
        if role != "assistant" or not isinstance(raw_calls, list):
            raise _bad(f"{where}.tool_calls", "tool_calls must be an array on an assistant message")
        tool_calls = []
        for k, c in enumerate(raw_calls):
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad(f"{where}.tool_calls[{k}].function.name", "expected a string")
            args = fn.get("arguments", "")
            if not isinstance(args, str):
                args = orjson.dumps(_forwardable(args, f"{where}.tool_calls[{k}].function.arguments")).decode()
            tool_calls.append(ToolCall(id=str(c.get("id") or f"call_{i}_{k}"), name=fn["name"], arguments=args))
    tool_call_id = raw.get("tool_call_id")
    if role == "tool":
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise _bad(f"{where}.tool_call_id", "a tool message needs the id of the tool call it answers")
    elif content is None and not tool_calls:
        raise _bad(f"{where}.content", "a message needs content")
    name = raw.get("name")
    return Message(
        role=cast(Role, role),
        content=content,
        name=name if isinstance(name, str) else None,
        tool_calls=tool_calls or None,
        tool_call_id=tool_call_id if role == "tool" else None,
        reasoning_blocks=_thinking_blocks(raw.get("thinking_blocks"), where) if role == "assistant" else None,
    )


def _thinking_blocks(raw: Any, where: str) -> list[dict[str, Any]] | None:
    """An assistant message's signed reasoning blocks (``thinking_blocks``, as LiteLLM names them)."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _bad(f"{where}.thinking_blocks", "expected an array of thinking / redacted_thinking blocks")
    kept = []
    for k, block in enumerate(raw):
        path = f"{where}.thinking_blocks[{k}]"
        if not isinstance(block, dict) or block.get("type") not in ("thinking", "redacted_thinking"):
            raise _bad(path, "expected a thinking or redacted_thinking block")
        signed = signed_reasoning(block, path)
        if signed is not None:
            kept.append(signed)
    return kept or None


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _bad("tools", "expected an array of tools")
    tools = []
    for i, t in enumerate(raw):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
            raise _bad(f"tools[{i}]", "expected {type: 'function', function: {name, parameters}}")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"tools[{i}].function.name", "expected a non-empty string")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _bad(f"tools[{i}].function.parameters", "expected a JSON Schema object")
        _forwardable(params, f"tools[{i}].function.parameters")
        desc = fn.get("description")
        strict = fn.get("strict")
        tools.append(
            Tool(
                name=name,
                description=desc if isinstance(desc, str) else None,
                parameters=params,
                strict=strict if isinstance(strict, bool) else None,
            )
        )
    return tools


def _tool_choice(raw: Any) -> Any:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict):
        fn = raw.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return ForcedTool(fn["name"])
    raise _bad("tool_choice", "expected 'auto', 'none', 'required' or {type: 'function', function: {name}}")


def _response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("response_format", "expected an object such as {type: 'json_object'}")
    rtype = raw.get("type")
    if rtype in ("text", "json_object"):
        return ResponseFormat(type=rtype)
    if rtype == "json_schema":
        js = raw.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
            raise _bad("response_format.json_schema", "expected {name, schema: {...}}")
        strict = js.get("strict")
        _forwardable(js.get("schema"), "response_format.json_schema.schema")
        return ResponseFormat(
            type="json_schema",
            schema=js.get("schema") or {},
            name=js.get("name") if isinstance(js.get("name"), str) else None,
            strict=strict if isinstance(strict, bool) else None,
        )
    raise _bad("response_format.type", f"expected 'text', 'json_object' or 'json_schema', got {rtype!r}")


def _stop(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw) and len(raw) <= 16:
        return list(raw)
    raise _bad("stop", "expected a string or an array of up to 16 strings")


def _options(body: dict[str, Any]) -> dict[str, Any]:
    opts = body.get("modelyard")
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise _bad("modelyard", "expected an object of modelyard options")
    return opts


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    model = _model(body, optional=True)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "'messages' must be a non-empty array of {role, content} objects",
            param="messages",
            code="invalid_value" if messages is not None else "missing_required_parameter",
        )
    stream = _bool(body, "stream") or False
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        # translated for Anthropic, Gemini and Ollama models, where an unknown one would be dropped
        raise _bad("reasoning_effort", f"expected one of {', '.join(REASONING_EFFORTS)}")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise _bad("stream_options", "expected an object")
    max_tokens = _int(body, "max_completion_tokens", 1)
    field = "max_completion_tokens"
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1)
        field = "max_tokens"
    temperature = _num(body, "temperature", 0, 2)
    top_p = _num(body, "top_p", 0, 1)
    presence = _num(body, "presence_penalty", -2, 2)
    frequency = _num(body, "frequency_penalty", -2, 2)
    return ChatRequest(
        model=model,
        messages=[_message(m, i) for i, m in enumerate(messages)],
        stream=stream,
        include_usage=bool(stream_options and stream_options.get("include_usage")),
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        max_tokens_field=field,  # type: ignore[arg-type]
        n=_int(body, "n", 1, 128),
        stop=_stop(body.get("stop")),
        seed=_int(body, "seed", -(2**63)),
        user=_str(body, "user"),
        presence_penalty=presence,
        frequency_penalty=frequency,
        logprobs=_bool(body, "logprobs"),
        top_logprobs=_int(body, "top_logprobs", 0, 20),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=_bool(body, "parallel_tool_calls"),
        response_format=_response_format(body.get("response_format")),
        extra={k: _forwardable(v, k) for k, v in body.items() if k not in _CHAT_KNOWN},
        options=_options(body),
    )


def parse_embedding_request(body: dict[str, Any]) -> EmbeddingRequest:
    model = _model(body)
    raw = body.get("input")
    inputs: list[str] | list[list[int]]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        inputs = [list(raw)]
    elif (
        isinstance(raw, list)
        and raw
        and all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in raw)
    ):
        inputs = [list(x) for x in raw]
    else:
        raise InvalidRequestError(
            "'input' must be a string, an array of strings, or an array of token arrays (non-empty)",
            param="input",
            code="invalid_value" if raw is not None else "missing_required_parameter",
        )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise _bad("encoding_format", "expected 'float' or 'base64'")
    known = {"model", "input", "encoding_format", "dimensions", "user", "modelyard"}
    return EmbeddingRequest(
        model=model,
        input=inputs,
        dimensions=_int(body, "dimensions", 1),
        user=_str(body, "user"),
        encoding_format="base64" if fmt == "base64" else "float",
        extra={k: _forwardable(v, k) for k, v in body.items() if k not in known},
        options=_options(body),
    )


# -- internal shapes -> OpenAI JSON ---------------------------------------------------------

DONE = b"data: [DONE]\n\n"


def encode_usage(u: Usage, cost_usd: float | None = None) -> dict[str, Any]:
    """OpenAI's usage object; ``cost_usd`` (what the call cost, 0 for a cache hit) is modelyard's
    extension field, which OpenAI's SDKs keep (``usage.model_extra["cost_usd"]`` in Python)."""
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }
    if u.estimated:
        out["estimated"] = True
    if cost_usd is not None:
        out["cost_usd"] = round(cost_usd, 10)
    return out


def _encode_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": m.text() if isinstance(m.content, list) else m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    out["refusal"] = m.refusal
    if m.reasoning is not None:
        out["reasoning_content"] = m.reasoning
    if m.reasoning_blocks:
        out["thinking_blocks"] = m.reasoning_blocks
    return out


def encode_response(r: ChatResponse, model: str, cost_usd: float | None = None) -> bytes:
    """A ``chat.completion`` body; ``model`` is the configured name of the model that answered."""
    body: dict[str, Any] = {
        "id": r.id,
        "object": "chat.completion",
        "created": r.created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": _encode_message(c.message),
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
            }
            for c in r.choices
        ],
    }
    if r.usage is not None:
        body["usage"] = encode_usage(r.usage, cost_usd)
    if r.system_fingerprint is not None:
        body["system_fingerprint"] = r.system_fingerprint
    return orjson.dumps(body)


def encode_chunk(c: ChatChunk, model: str, *, chunk_id: str, created: int, cost_usd: float | None = None) -> bytes:
    """One SSE frame (``data: {...}\\n\\n``) for a chunk, under a stable id for the whole stream."""
    choices = []
    for d in c.choices:
        delta: dict[str, Any] = {}
        if d.role is not None:
            delta["role"] = d.role
        if d.content is not None:
            delta["content"] = d.content
        if d.refusal is not None:
            delta["refusal"] = d.refusal
        if d.reasoning is not None:
            delta["reasoning_content"] = d.reasoning
        if d.reasoning_signature is not None:
            delta["thinking_blocks"] = [{"type": "thinking", "thinking": "", "signature": d.reasoning_signature}]
        if d.redacted_reasoning:
            delta["thinking_blocks"] = [{"type": "redacted_thinking", "data": d.redacted_reasoning}]
        if d.tool_calls:
            delta["tool_calls"] = [
                {
                    "index": t.index,
                    **({"id": t.id, "type": "function"} if t.id else {}),
                    "function": {
                        **({"name": t.name} if t.name is not None else {}),
                        "arguments": t.arguments or "",
                    },
                }
                for t in d.tool_calls
            ]
        choices.append({"index": d.index, "delta": delta, "logprobs": d.logprobs, "finish_reason": d.finish_reason})
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if c.usage is not None:
        body["usage"] = encode_usage(c.usage, cost_usd)
    if c.system_fingerprint is not None:
        body["system_fingerprint"] = c.system_fingerprint
    return b"data: " + orjson.dumps(body) + b"\n\n"


#: the top-level ``"id": "..."`` and ``"model": "..."`` members of a forwarded chunk (its choice
#: holds no such keys: see providers/openai.scan_chunk; anything in a string is escaped)
_ID = re.compile(rb'"id"\s*:\s*"(?:[^"\\]|\\.)*"')
_MODEL = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


class Forwarder:
    """Frames for a stream's pass-through chunks: the upstream's bytes with ``id`` set to the
    stream's id and ``model`` to the configured name (contracts "Streaming pass-through")."""

    __slots__ = ("_id", "_model", "_seen_id", "_seen_model")

    def __init__(self, model: str, chunk_id: str) -> None:
        self._id = b'"id":' + orjson.dumps(chunk_id)
        self._model = b'"model":' + orjson.dumps(model)
        # the upstream's members as last seen: a stream repeats them, so one replace each usually does
        self._seen_id = b"\0"
        self._seen_model = b"\0"

    def frames(self, raws: list[bytes]) -> bytes | None:
        """``data: {...}\\n\\n`` for each of a chunk's JSON objects, joined (None when one lacks an
        id or a model: such a chunk is encoded from the internal shape instead)."""
        out = []
        for raw in raws:
            renamed = raw.replace(self._seen_id, self._id, 1)
            new: bytes | None = renamed.replace(self._seen_model, self._model, 1) if renamed is not raw else raw
            if new is renamed:  # a member not as last seen (or the first chunk): find both
                new = self._learn(raw)
            if new is None:
                return None
            out.append(b"data: " + new + b"\n\n")
        return out[0] if len(out) == 1 else b"".join(out)

    def _learn(self, raw: bytes) -> bytes | None:
        m = _member(raw, b'"model":"', _MODEL)
        i = _member(raw, b'"id":"', _ID)
        if m is None or i is None:
            return None
        self._seen_id, self._seen_model = raw[i[0] : i[1]], raw[m[0] : m[1]]
        if i[1] <= m[0]:
            return b"".join((raw[: i[0]], self._id, raw[i[1] : m[0]], self._model, raw[m[1] :]))
        return b"".join((raw[: m[0]], self._model, raw[m[1] : i[0]], self._id, raw[i[1] :]))


def _member(raw: bytes, compact: bytes, pattern: re.Pattern[bytes]) -> tuple[int, int] | None:
    """Where the first ``"key":"value"`` member is in ``raw``: two finds for the compact form
    without escapes (what OpenAI and most servers send), else the pattern."""
    k = raw.find(compact)
    if k >= 0:
        e = raw.find(b'"', k + len(compact))
        if e > 0 and raw[e - 1] != 92:  # 92: a backslash (an escaped quote: let the pattern decide)
            return k, e + 1
    found = pattern.search(raw)
    return (found.start(), found.end()) if found is not None else None


class ChunkEncoder:
    """:func:`encode_chunk` for one stream (its id, creation time and model fixed): a delta that is
    only answer text, the bulk of a translated stream, is framed from prebuilt bytes."""

    __slots__ = ("_created", "_id", "_model", "_text_head")

    def __init__(self, model: str, chunk_id: str, created: int) -> None:
        self._model, self._id, self._created = model, chunk_id, created
        self._text_head = b"".join(
            (
                b'data: {"id":',
                orjson.dumps(chunk_id),
                b',"object":"chat.completion.chunk","created":',
                str(created).encode(),
                b',"model":',
                orjson.dumps(model),
                b',"choices":[{"index":0,"delta":{"content":',
            )
        )

    def encode(self, c: ChatChunk, model: str | None = None, cost_usd: float | None = None) -> bytes:
        """The frame for ``c`` (``model``: another name than the stream's, for a continuation)."""
        if model is None and c.usage is None and c.system_fingerprint is None and len(c.choices) == 1:
            d = c.choices[0]
            if d.only_text():
                return self._text_head + orjson.dumps(d.content) + _TEXT_TAIL
        return encode_chunk(c, model or self._model, chunk_id=self._id, created=self._created, cost_usd=cost_usd)


_TEXT_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'


def sse_error(error: dict[str, Any]) -> bytes:
    """An in-stream error event in OpenAI's shape (the OpenAI SDK raises it as an APIError)."""
    return b"data: " + orjson.dumps(error) + b"\n\n"


def encode_embeddings(r: EmbeddingResponse, model: str, encoding_format: str) -> bytes:
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            if encoding_format == "base64"
            else v,
        }
        for i, v in enumerate(r.data)
    ]
    usage = {"prompt_tokens": r.usage.prompt_tokens, "total_tokens": r.usage.total_tokens or r.usage.prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
