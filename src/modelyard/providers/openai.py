"""OpenAI Chat Completions wire format: OpenAI itself and every OpenAI-compatible server.

vLLM, llama.cpp's server, DeepSeek, Groq, Together, and endpoint gateways such as StreamLake /
Vanchin (``base_url: .../api/gateway/v1/endpoints``, model ``ep-xxxx``) all speak it.  Request
fields modelyard does not know (``ChatRequest.extra``) are passed through unchanged.
"""

from __future__ import annotations

import base64
import functools
import re
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from modelyard.config.schema import OpenAIProviderConfig
from modelyard.errors import ModelyardError, UpstreamConnectionError, UpstreamError, UpstreamStatusError
from modelyard.providers._http import iter_sse_data
from modelyard.providers.base import CallOptions, Provider, classify_error_message, together
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChoiceDelta,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishReason,
    ForcedTool,
    Message,
    ToolCall,
    ToolCallDelta,
    UpstreamModel,
    Usage,
)

__all__ = ["OpenAIProvider", "encode_message", "encode_request", "merged", "scan_chunk"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # non-standard values some compatible servers send
    "eos": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
}


# -- internal -> OpenAI ------------------------------------------------------------------


def encode_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if isinstance(m.content, list):
        out["content"] = [
            {"type": "text", "text": p.text}
            if p.type == "text"
            else {
                "type": "image_url",
                "image_url": {"url": p.image_url, **({"detail": p.detail} if p.detail else {})},
            }
            for p in m.content
        ]
    else:
        out["content"] = m.content
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.refusal is not None:
        out["refusal"] = m.refusal
    return out


#: OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and later; not the gpt-5 chat models), by the
#: upstream name's last segment: they take ``max_completion_tokens`` only, and the default sampling
_REASONING_MODEL = re.compile(r"^(o[1-9](?![0-9])|gpt-([5-9]|\d{2,})(?![0-9])(?!.*-chat))")
#: sampling fields those models refuse unless at their default (1 for these two; the penalties
#: are refused outright), while thinking
_REASONING_REFUSES = ("temperature", "top_p")
_REASONING_REFUSES_ALWAYS = ("presence_penalty", "frequency_penalty")


@functools.lru_cache(maxsize=1024)  # a pure function of the name, asked per request
def openai_reasoning_model(model: str) -> bool:
    """Whether ``model`` is one of OpenAI's reasoning models (see ``_REASONING_MODEL``)."""
    return _REASONING_MODEL.match(model.rsplit("/", 1)[-1].lower()) is not None


def _fit_reasoning_model(body: dict[str, Any], model: str) -> None:
    """What OpenAI's reasoning models refuse with a 400, made what they take: ``max_tokens``
    ("Use 'max_completion_tokens' instead") becomes ``max_completion_tokens``; ``temperature`` and
    ``top_p`` other than 1 are dropped unless the request turned reasoning off
    (``reasoning_effort: none``, gpt-5.1 and later), the penalties always.  A client that picks the
    model needs none of this; a route that falls back from gpt-4o to gpt-5, or a Claude SDK call
    served by o3, does."""
    if not openai_reasoning_model(model):
        return
    if "max_tokens" in body:
        value = body.pop("max_tokens")
        body.setdefault("max_completion_tokens", value)
    if body.get("reasoning_effort") != "none":
        for key in _REASONING_REFUSES:
            if key in body and body[key] != 1:
                del body[key]
    for key in _REASONING_REFUSES_ALWAYS:
        body.pop(key, None)


def encode_request(req: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The OpenAI request body for ``req``, addressed to upstream ``model``."""
    body: dict[str, Any] = dict(req.extra)
    body["model"] = model
    body["messages"] = [encode_message(m) for m in req.messages]
    for key in (
        "temperature",
        "top_p",
        "n",
        "seed",
        "user",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
    ):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.max_tokens is not None:
        body[req.max_tokens_field] = req.max_tokens
    if req.stop is not None:
        body["stop"] = req.stop
    if req.tools is not None:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description is not None else {}),
                    **({"parameters": t.parameters} if t.parameters is not None else {}),
                    **({"strict": t.strict} if t.strict is not None else {}),
                },
            }
            for t in req.tools
        ]
    if isinstance(req.tool_choice, ForcedTool):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
    elif req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    rf = req.response_format
    if rf is not None:
        if rf.type == "json_schema":
            schema: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {}}
            if rf.strict is not None:
                schema["strict"] = rf.strict
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        else:
            body["response_format"] = {"type": rf.type}
    if stream:
        body["stream"] = True
        # Always ask for usage: modelyard accounts every call; the client sees it only if it asked.
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    _fit_reasoning_model(body, model)
    return body


# -- OpenAI -> internal ------------------------------------------------------------------


def decode_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = int(data.get("prompt_tokens") or 0)
    completion = int(data.get("completion_tokens") or 0)
    details = data.get("prompt_tokens_details") or {}
    out_details = data.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(data.get("total_tokens") or prompt + completion),
        # OpenAI: prompt_tokens_details.cached_tokens; DeepSeek: prompt_cache_hit_tokens
        cached_tokens=int(details.get("cached_tokens") or data.get("prompt_cache_hit_tokens") or 0),
        reasoning_tokens=int(out_details.get("reasoning_tokens") or 0),
    )


def decode_finish(value: Any) -> FinishReason | None:
    if value is None:
        return None
    return _FINISH.get(str(value), "stop")


def decode_message(data: dict[str, Any]) -> Message:
    content = data.get("content")
    parts: str | list[ContentPart] | None
    if isinstance(content, list):  # some compatible servers answer with parts
        parts = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    else:
        parts = content
    calls = data.get("tool_calls")
    return Message(
        role="assistant",
        content=parts,
        tool_calls=[
            ToolCall(
                id=str(c.get("id") or ""),
                name=str((c.get("function") or {}).get("name") or ""),
                arguments=str((c.get("function") or {}).get("arguments") or ""),
            )
            for c in calls
        ]
        if calls
        else None,
        refusal=data.get("refusal"),
        reasoning=_reasoning(data),
    )


def _reasoning(data: dict[str, Any]) -> str | None:
    """``reasoning_content`` (DeepSeek, vLLM, Qwen-style servers) or ``reasoning`` (OpenRouter, Ollama's
    OpenAI endpoint), when it is text."""
    value = data.get("reasoning_content")
    if value is None:
        value = data.get("reasoning")
    return value if isinstance(value, str) and value else None


def decode_response(data: Any, model: str) -> ChatResponse:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise ValueError("response has no 'choices' list")
    return ChatResponse(
        id=str(data.get("id") or ""),
        created=int(data.get("created") or time.time()),
        model=str(data.get("model") or model),
        choices=[
            Choice(
                index=int(c.get("index", i)),
                message=decode_message(c.get("message") or {}),
                finish_reason=decode_finish(c.get("finish_reason")),
                logprobs=c.get("logprobs"),
            )
            for i, c in enumerate(data["choices"])
        ],
        usage=decode_usage(data.get("usage")),
        system_fingerprint=data.get("system_fingerprint"),
    )


def decode_chunk(data: dict[str, Any], model: str) -> ChatChunk:
    choices = []
    for c in data.get("choices") or []:
        delta = c.get("delta") or {}
        calls = delta.get("tool_calls")
        choices.append(
            ChoiceDelta(
                index=int(c.get("index") or 0),
                role=delta.get("role"),
                content=delta.get("content"),
                tool_calls=[
                    ToolCallDelta(
                        index=int(tc.get("index") or 0),
                        id=tc.get("id"),
                        name=(tc.get("function") or {}).get("name"),
                        arguments=(tc.get("function") or {}).get("arguments"),
                    )
                    for tc in calls
                ]
                if calls
                else None,
                finish_reason=decode_finish(c.get("finish_reason")),
                logprobs=c.get("logprobs"),
                refusal=delta.get("refusal"),
                reasoning=_reasoning(delta),
            )
        )
    return ChatChunk(
        id=str(data.get("id") or ""),
        created=int(data.get("created") or 0),
        model=str(data.get("model") or model),
        choices=choices,
        usage=decode_usage(data.get("usage")),
        system_fingerprint=data.get("system_fingerprint"),
    )


def merged(raws: list[bytes], model: str) -> ChatChunk:
    """Plain chunks of one choice (``scan_chunk``) as one chunk: their deltas merged (the first
    role, the content in order, the finish reason). Parsed again: keeping every parsed chunk
    around for this rare need would cost more memory than the parse costs CPU."""
    chunks = [decode_chunk(orjson.loads(r), model) for r in raws]
    first = chunks[0]
    if len(chunks) > 1:
        delta = first.choices[0]
        delta.content = "".join(c.choices[0].content or "" for c in chunks) or delta.content
        delta.finish_reason = chunks[-1].choices[0].finish_reason
    return first


def scan_chunk(data: Any) -> tuple[str | None, bool] | None:
    """What the gateway needs from a parsed OpenAI stream chunk that it can forward as it came: its
    content text (None: none) and whether its choice finished.

    None when the chunk is anything but one choice (index 0) of plain content and/or a finish
    reason: tool calls, reasoning, refusals, usage, logprobs, errors and unexpected shapes are
    decoded into the internal shape instead.  A handful of dict lookups: no objects are built.
    """
    if type(data) is not dict or data.get("usage") is not None or "error" in data:
        return None
    choices = data.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("index", 0) != 0 or choice.get("logprobs") is not None:
        return None
    delta = choice.get("delta")
    if type(delta) is not dict:
        return None
    for key in delta:
        if key not in _PLAIN and delta[key] is not None:
            return None
    text = delta.get("content")
    finish = choice.get("finish_reason")
    if (text is not None and type(text) is not str) or (finish is not None and type(finish) is not str):
        return None
    return text, finish is not None


#: delta keys a forwarded chunk may carry with a value (any other non-null key: decoded in full)
_PLAIN = frozenset(("role", "content"))


class OpenAIProvider(Provider):
    kind = "openai"
    default_base_url = "https://api.openai.com/v1"
    supports_embeddings = True
    config: OpenAIProviderConfig

    def auth_headers(self) -> dict[str, str]:
        if self.config.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    async def chat(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> ChatResponse:
        data = await self.request_json(
            "POST",
            f"{self.base_url}/chat/completions",
            model=upstream_model,
            call=call,
            body=encode_request(request, upstream_model, stream=False),
        )
        try:
            return decode_response(data, upstream_model)
        except (ValueError, TypeError, AttributeError) as exc:
            raise self.malformed(f"unexpected response shape from {upstream_model!r}: {exc}", upstream_model) from exc

    async def stream(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> AsyncIterator[ChatChunk]:
        body = encode_request(request, upstream_model, stream=True)
        # choice indices seen, and those that reached a finish_reason (n > 1 streams interleave)
        seen: set[int] = set()
        finished: set[int] = set()
        # one choice and no logprobs: plain chunks pass through undecoded (scan_chunk)
        scan = (request.n or 1) == 1 and not request.logprobs
        async with self.request(
            "POST", f"{self.base_url}/chat/completions", model=upstream_model, call=call, body=body
        ) as resp:
            async for batch in iter_sse_data(resp):
                # the plain chunks of one read become one pass-through chunk; the rest are decoded
                raws: list[bytes] = []
                texts: list[str] = []
                done = False
                out: list[ChatChunk] = []
                ended = False
                failed: ModelyardError | None = None
                for raw in batch:
                    if raw == b"[DONE]":
                        ended = True
                        break
                    try:
                        data = orjson.loads(raw)
                    except orjson.JSONDecodeError as exc:
                        failed = self._malformed(raw, upstream_model)
                        failed.__cause__ = exc
                        break
                    found = scan_chunk(data) if scan and not done else None
                    if found is not None:
                        raws.append(raw)
                        seen.add(0)
                        if found[0]:
                            texts.append(found[0])
                        if found[1]:
                            done = True
                            finished.add(0)
                        continue
                    if raws:
                        out.append(self._passthrough(raws, texts, done, upstream_model))
                        raws, texts = [], []
                    try:
                        chunk = self._decode(data, upstream_model)
                    except ModelyardError as exc:  # an in-band error, after what came before it
                        failed = exc
                        break
                    for c in chunk.choices:
                        seen.add(c.index)
                        if c.finish_reason:
                            finished.add(c.index)
                    out.append(chunk)
                if raws:
                    out.append(self._passthrough(raws, texts, done, upstream_model))
                for chunk in together(out, ending=ended):
                    yield chunk
                if failed is not None:
                    raise failed
                if ended:
                    return
        if not finished or seen - finished:
            raise UpstreamConnectionError(
                f"{self.name}: stream from {upstream_model!r} ended before the answer was complete",
                provider=self.name,
                model=upstream_model,
            )

    def _passthrough(self, raws: list[bytes], texts: list[str], done: bool, model: str) -> ChatChunk:
        text = "".join(texts) if texts else None
        texts.clear()  # the pieces are in ``text`` now: the stream's frame does not keep a second copy
        return ChatChunk.passthrough(raws, model, merged, text=text, finished=done)

    def _decode(self, data: Any, upstream_model: str) -> ChatChunk:
        """A parsed stream chunk in the internal shape (an error chunk raises it)."""
        try:
            if not isinstance(data, dict):
                raise TypeError("chunk is not an object")
            if "error" in data:
                raise self._stream_error(data["error"], upstream_model)
            return decode_chunk(data, upstream_model)
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(orjson.dumps(data), upstream_model) from exc

    def _malformed(self, raw: bytes, upstream_model: str) -> UpstreamError:
        return self.malformed(
            f"malformed stream chunk from {upstream_model!r}: {raw[:200].decode('utf-8', 'replace')!r}",
            upstream_model,
        )

    def _stream_error(self, err: Any, model: str) -> UpstreamStatusError:
        message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        code = err.get("code") if isinstance(err, dict) else None
        status = 500
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
            # vLLM and some gateways put the HTTP status in ``code``
            status, code = code, None
        return UpstreamStatusError(
            f"{self.name} reported an error mid-stream for {model!r}: {message}",
            upstream_status=status,
            provider=self.name,
            model=model,
            code=str(code) if code else classify_error_message(str(message)),
        )

    async def embed(self, request: EmbeddingRequest, upstream_model: str, call: CallOptions) -> EmbeddingResponse:
        body: dict[str, Any] = dict(request.extra)
        body.update({"model": upstream_model, "input": request.input, "encoding_format": "float"})
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
        data = await self.request_json(
            "POST", f"{self.base_url}/embeddings", model=upstream_model, call=call, body=body
        )
        try:
            items = sorted(data["data"], key=lambda d: d.get("index", 0))
            vectors = [_vector(d["embedding"]) for d in items]
            usage = decode_usage(data.get("usage")) or Usage()
        except (KeyError, TypeError, ValueError) as exc:
            raise self.malformed(f"unexpected embeddings response from {upstream_model!r}", upstream_model) from exc
        return EmbeddingResponse(model=str(data.get("model") or upstream_model), data=vectors, usage=usage)

    async def list_models(self) -> list[UpstreamModel]:
        data = await self.request_json(
            "GET", f"{self.base_url}/models", model="(list models)", call=CallOptions(timeout_s=15)
        )
        items = data.get("data") if isinstance(data, dict) else None
        return [
            UpstreamModel(id=str(m.get("id")), owned_by=str(m.get("owned_by") or ""))
            for m in items or []
            if isinstance(m, dict) and m.get("id")
        ]


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):  # base64 of little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(v) for v in value]
