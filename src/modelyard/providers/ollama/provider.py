"""Ollama's native API (``/api/chat``, ``/api/embed``, ``/api/tags`` ...), not its OpenAI shim.

The native API is used because it exposes what the shim hides: NDJSON streaming with a final
``done`` line that carries the token counts, ``keep_alive`` per request, and the local-model
lifecycle (``/api/ps``, ``/api/show``, ``/api/pull``, load/unload through ``/api/generate``).

Translation notes:

* Images: Ollama takes base64 strings in ``message.images``.  ``data:...;base64,`` URIs are sent
  as their payload.  ``http(s)`` image URLs are refused with an InvalidRequestError: modelyard
  does not fetch URLs on the client's behalf (no server-side request forgery, no unbounded
  downloads on the hot path); the client must inline the image as a ``data:`` URI.
* Tool calls: Ollama's arguments are JSON objects (OpenAI's are JSON strings).  Older Ollama
  versions send no call id, so ids are generated (``call_<n>``) unless Ollama sends one.  Tool
  results carry ``tool_name``, looked up from the earlier assistant tool call with that id.
* ``tool_choice``: Ollama cannot force a tool.  ``"none"`` drops the tools from the request, a
  forced function keeps only that tool; ``"required"`` sends the tools unchanged.
* ``message.thinking`` (reasoning models) is the answer's reasoning (out as ``reasoning_content``).
  OpenAI's ``reasoning_effort`` becomes ``think`` for a model that can think
  (``capabilities.reasoning``): ``low``/``medium``/``high`` for gpt-oss, else ``false`` for
  ``none`` and ``true`` for the others.  An explicit ``think`` is sent as given.
* Ollama options without an OpenAI equivalent (``num_ctx``, ``top_k`` ...) may be given as request
  fields or in an ``options`` object; they are passed on in ``options``.

Lifecycle: ``self.lifecycle`` is the provider's :class:`~modelyard.local.LocalModelManager`.  Once
it is started (the gateway starts it; so does ``await provider.lifecycle.start()``), every request
goes through it: the model is loaded explicitly on first use (requests arriving meanwhile share
the load, within ``load_timeout_s``), ``max_loaded`` / ``memory_budget_mb`` evict idle models,
and Ollama gets the model's own ``keep_alive``.  A provider whose manager was never started
(a library user, a unit test) leaves loading to Ollama and sends the provider's ``keep_alive``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from modelyard.config.schema import OllamaProviderConfig
from modelyard.errors import (
    InvalidRequestError,
    UpstreamConnectionError,
    UpstreamMalformedError,
    UpstreamStatusError,
)
from modelyard.local.manager import LocalModelManager
from modelyard.local.settings import keep_alive_for_ollama, provider_settings
from modelyard.providers._http import iter_lines
from modelyard.providers.base import CallOptions, Provider, classify_error_message
from modelyard.providers.ollama.lifecycle import OllamaBackend
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
    Tool,
    ToolCall,
    ToolCallDelta,
    UpstreamModel,
    Usage,
)

__all__ = [
    "LoadedModel",
    "OllamaProvider",
    "StreamDecoder",
    "decode_chat_response",
    "encode_chat_request",
    "encode_message",
    "keep_alive_value",
]

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}

#: Ollama options a client may pass as extra request fields (no OpenAI equivalent).
_EXTRA_OPTIONS = (
    "num_ctx",
    "num_keep",
    "top_k",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "repeat_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "penalize_newline",
    "num_batch",
    "num_gpu",
    "num_thread",
)

_IMAGE_URL_HINT = (
    "Ollama needs images inline as base64: send the image as a data: URI (data:image/png;base64,...) instead of a URL"
)


# -- internal -> Ollama ------------------------------------------------------------------


def keep_alive_value(value: str | int | float | None) -> str | int | float | None:
    """``keep_alive`` as Ollama parses it: numbers are seconds, strings are Go durations.

    Ollama rejects a numeric *string* (``"-1"``: missing unit), so those become numbers.
    """
    if value is None or isinstance(value, int | float):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _image_data(part: ContentPart, where: str) -> str:
    data = part.base64_data
    if data is not None:
        return data
    if part.image_url.startswith(("http://", "https://")):
        raise InvalidRequestError(f"{where}: {_IMAGE_URL_HINT}", param=where)
    raise InvalidRequestError(f"{where}: unsupported image reference; {_IMAGE_URL_HINT}", param=where)


def _tool_arguments(raw: str, where: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(f"{where} must be a JSON object, got {raw[:80]!r}", param=where) from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{where} must be a JSON object (Ollama takes named arguments)", param=where)
    return value


def encode_message(m: Message, index: int, tool_names: dict[str, str]) -> dict[str, Any]:
    """One Ollama message. ``tool_names`` maps earlier tool call ids to function names."""
    out: dict[str, Any] = {"role": _ROLES[m.role]}
    images: list[str] = []
    if isinstance(m.content, list):
        texts: list[str] = []
        for j, part in enumerate(m.content):
            if part.type == "text":
                texts.append(part.text)
            else:
                images.append(_image_data(part, f"messages[{index}].content[{j}].image_url"))
        out["content"] = "".join(texts)
    else:
        out["content"] = m.content or ""
    if images:
        out["images"] = images
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "function": {
                    "name": c.name,
                    "arguments": _tool_arguments(c.arguments, f"messages[{index}].tool_calls[{k}].function.arguments"),
                }
            }
            for k, c in enumerate(m.tool_calls)
        ]
    if m.role == "tool":
        name = tool_names.get(m.tool_call_id or "") or m.name
        if name:
            out["tool_name"] = name
    return out


def encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    tool_names: dict[str, str] = {}
    out = []
    for i, m in enumerate(messages):
        out.append(encode_message(m, i, tool_names))
        for c in m.tool_calls or ():
            tool_names[c.id] = c.name
    return out


def _encode_tool(t: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t.name}
    if t.description is not None:
        fn["description"] = t.description
    fn["parameters"] = t.parameters if t.parameters is not None else {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


#: OpenAI ``reasoning_effort`` -> gpt-oss's ``think`` level (it cannot stop thinking)
_GPT_OSS_THINK = {"none": "low", "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def _think(effort: Any, model: str) -> bool | str | None:
    """OpenAI's ``reasoning_effort`` as Ollama's ``think``: a level for gpt-oss (which ignores
    true/false), else on or off (other models refuse a level: 'think value "medium" is not
    supported for this model')."""
    if not isinstance(effort, str) or effort not in _GPT_OSS_THINK:
        return None
    if model.rsplit("/", 1)[-1].lower().startswith("gpt-oss"):
        return _GPT_OSS_THINK[effort]
    return effort != "none"


def encode_chat_request(
    req: ChatRequest,
    model: str,
    *,
    stream: bool,
    keep_alive: str | int | float | None = None,
    reasoning: bool = True,
) -> dict[str, Any]:
    """The ``/api/chat`` body for ``req``, addressed to upstream ``model``; ``reasoning``: the model
    can think (else a ``reasoning_effort`` is dropped rather than sent as ``think``)."""
    if req.n is not None and req.n > 1:
        raise InvalidRequestError("Ollama generates one choice per request: 'n' must be 1", param="n")
    body: dict[str, Any] = {"model": model, "messages": encode_messages(req.messages), "stream": stream}
    options: dict[str, Any] = {}
    extra_options = req.extra.get("options")
    if isinstance(extra_options, dict):
        options.update(extra_options)
    for key in _EXTRA_OPTIONS:
        if key in req.extra:
            options[key] = req.extra[key]
    for key in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "stop"):
        value = getattr(req, key)
        if value is not None:
            options[key] = value
    if req.max_tokens is not None:
        options["num_predict"] = req.max_tokens
    if options:
        body["options"] = options
    if req.tools and req.tool_choice != "none":
        tools = req.tools
        if isinstance(req.tool_choice, ForcedTool):
            tools = [t for t in req.tools if t.name == req.tool_choice.name]
            if not tools:
                raise InvalidRequestError(
                    f"tool_choice names {req.tool_choice.name!r}, which is not in 'tools'", param="tool_choice"
                )
        body["tools"] = [_encode_tool(t) for t in tools]
    rf = req.response_format
    if rf is not None:
        if rf.type == "json_object" or (rf.type == "json_schema" and not rf.schema):
            body["format"] = "json"
        elif rf.type == "json_schema":
            body["format"] = rf.schema
    if "think" in req.extra:
        body["think"] = req.extra["think"]
    elif reasoning and (think := _think(req.extra.get("reasoning_effort"), model)) is not None:
        body["think"] = think
    ka = keep_alive_value(keep_alive)
    if ka is not None:
        body["keep_alive"] = ka
    return body


# -- Ollama -> internal ------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An Ollama timestamp (RFC 3339, nanoseconds, ``Z`` or an offset), or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:  # at most microseconds for Python
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
        text = f"{head}.{rest}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _created(data: dict[str, Any]) -> int:
    when = parse_time(data.get("created_at"))
    stamp = int(when.timestamp()) if when is not None else 0
    return stamp if stamp > 0 else int(time.time())


def decode_usage(data: dict[str, Any]) -> Usage:
    prompt = int(data.get("prompt_eval_count") or 0)
    completion = int(data.get("eval_count") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def decode_finish(done_reason: Any, has_tool_calls: bool) -> FinishReason:
    if done_reason == "length":
        return "length"
    return "tool_calls" if has_tool_calls else "stop"


def decode_tool_call(call: Any, n: int) -> ToolCall:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise TypeError("tool call has no 'function' object")
    fn = call["function"]
    args = fn.get("arguments")
    arguments = args if isinstance(args, str) else orjson.dumps(args if args is not None else {}).decode()
    return ToolCall(id=str(call.get("id") or f"call_{n}"), name=str(fn.get("name") or ""), arguments=arguments)


def decode_chat_response(data: Any, model: str) -> ChatResponse:
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise ValueError("response has no 'message' object")
    msg = data["message"]
    calls = [decode_tool_call(c, i) for i, c in enumerate(msg.get("tool_calls") or [])]
    content = msg.get("content")
    if not isinstance(content, str | None):
        raise TypeError("message.content is not a string")
    thinking = msg.get("thinking")
    message = Message(
        role="assistant",
        content=None if calls and not content else (content or ""),
        tool_calls=calls or None,
        reasoning=thinking if isinstance(thinking, str) and thinking else None,
    )
    return ChatResponse(
        id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
        created=_created(data),
        model=str(data.get("model") or model),
        choices=[Choice(index=0, message=message, finish_reason=decode_finish(data.get("done_reason"), bool(calls)))],
        usage=decode_usage(data),
    )


@dataclass(slots=True)
class StreamDecoder:
    """Turns Ollama's NDJSON stream lines into chunks, remembering what it needs between lines."""

    id: str
    model: str
    created: int = 0
    started: bool = False
    tool_calls: int = 0
    done: bool = False

    def chunk(self, delta: ChoiceDelta | None, usage: Usage | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id, created=self.created, model=self.model, choices=[delta] if delta else [], usage=usage
        )

    def decode_line(self, data: dict[str, Any]) -> list[ChatChunk]:
        """The chunks for one (non-error) NDJSON line."""
        out: list[ChatChunk] = []
        if not self.started:
            self.started = True
            self.created = _created(data)
            self.model = str(data.get("model") or self.model)
            out.append(self.chunk(ChoiceDelta(role="assistant", content="")))
        msg = data.get("message") or {}
        if not isinstance(msg, dict):
            raise TypeError("'message' is not an object")
        content = msg.get("content")
        if not isinstance(content, str | None):
            raise TypeError("message.content is not a string")
        deltas: list[ToolCallDelta] = []
        for call in msg.get("tool_calls") or []:
            tc = decode_tool_call(call, self.tool_calls)
            deltas.append(ToolCallDelta(index=self.tool_calls, id=tc.id, name=tc.name, arguments=tc.arguments))
            self.tool_calls += 1
        thinking = msg.get("thinking")
        if isinstance(thinking, str) and thinking:
            out.append(self.chunk(ChoiceDelta(reasoning=thinking)))
        if content or deltas:
            out.append(self.chunk(ChoiceDelta(content=content or None, tool_calls=deltas or None)))
        if data.get("done"):
            self.done = True
            finish = decode_finish(data.get("done_reason"), self.tool_calls > 0)
            out.append(self.chunk(ChoiceDelta(finish_reason=finish)))
            out.append(self.chunk(None, decode_usage(data)))
        return out


# -- lifecycle -----------------------------------------------------------------------------


@dataclass(slots=True)
class LoadedModel:
    """A model Ollama holds in memory (``/api/ps``)."""

    name: str
    size: int = 0
    size_vram: int = 0
    #: when Ollama unloads it; None when unknown
    expires_at: datetime | None = None
    digest: str = ""
    context_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def context_length(model_info: Any) -> int | None:
    """The context window from ``/api/show``'s ``model_info`` (``<architecture>.context_length``)."""
    if not isinstance(model_info, dict):
        return None
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length") if arch else None
    if value is None:
        value = next((v for k, v in model_info.items() if k.endswith(".context_length")), None)
    return int(value) if isinstance(value, int | float) and value > 0 else None


class OllamaProvider(Provider):
    kind = "ollama"
    default_base_url = "http://localhost:11434"
    local_by_default = True
    supports_embeddings = True
    config: OllamaProviderConfig
    lifecycle: LocalModelManager

    def __init__(self, name: str, config: OllamaProviderConfig) -> None:
        super().__init__(name, config)
        budget = config.memory_budget_mb
        self.lifecycle = LocalModelManager(
            name,
            OllamaBackend(self),
            defaults=provider_settings(name, config),
            preload=config.preload,
            max_loaded=config.max_loaded,
            memory_budget_bytes=int(budget * 2**20) if budget is not None else None,
        )

    async def aclose(self) -> None:
        await self.lifecycle.aclose()
        await super().aclose()

    def _keep_alive(self, model: str) -> str | int | float | None:
        """The keep_alive sent with a request: the model's (managed) or the provider's."""
        if self.lifecycle.started:
            return keep_alive_for_ollama(self.lifecycle.settings(model).keep_alive_s)
        return self.config.keep_alive

    def _use(self, model: str, call: CallOptions) -> AbstractAsyncContextManager[object]:
        """Hold ``model`` loaded and in use for a request (a no-op while the manager is not started)."""
        if not self.lifecycle.started:
            return contextlib.nullcontext()
        limit = self.lifecycle.settings(model).load_timeout_s
        return self.lifecycle.use(model, timeout=min(limit, call.timeout_s) if limit else call.timeout_s)

    def auth_headers(self) -> dict[str, str]:
        # a local Ollama needs no key; one behind an authenticating proxy (or ollama.com) does
        if self.config.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    # -- errors --------------------------------------------------------------------------

    def error_from_response(
        self, status: int, raw: bytes, headers: Mapping[str, str], model: str
    ) -> UpstreamStatusError:
        message, _, _ = self.parse_error_body(raw)
        if status == 404 and "not found" in message.lower() and not model.startswith("("):
            # 'model "x" not found, try pulling it first' (or newer: "model 'x' not found")
            return UpstreamStatusError(
                f"{self.name}: model {model!r} is not installed on the Ollama server ({message}); "
                f"run `ollama pull {model}` on that host",
                upstream_status=404,
                provider=self.name,
                model=model,
                code="model_not_found",
            )
        return super().error_from_response(status, raw, headers, model)

    def _inband_error(self, err: Any, model: str, status: int = 500) -> UpstreamStatusError:
        """An ``{"error": ...}`` object in a 200 answer (Ollama sends one mid-stream when generation fails)."""
        message = str(err.get("message", err) if isinstance(err, dict) else err)
        return UpstreamStatusError(
            f"{self.name} reported an error for {model!r}: {message}",
            upstream_status=status,
            provider=self.name,
            model=model,
            code=classify_error_message(message),
        )

    def _malformed(self, model: str, what: str) -> UpstreamMalformedError:
        return UpstreamMalformedError(f"{self.name}: {what} from {model!r}", provider=self.name, model=model)

    def _line(self, raw: bytes, model: str) -> dict[str, Any] | None:
        """One NDJSON line as an object (None for a blank line)."""
        if not raw.strip():
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self._malformed(model, f"malformed stream line {raw[:200]!r}") from None
        if not isinstance(data, dict):
            raise self._malformed(model, f"stream line is not an object: {raw[:200]!r}")
        return data

    # -- chat ----------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> ChatResponse:
        body = encode_chat_request(
            request, upstream_model, stream=False, keep_alive=self._keep_alive(upstream_model), reasoning=call.reasoning
        )
        async with self._use(upstream_model, call):
            data = await self.request_json(
                "POST", f"{self.base_url}/api/chat", model=upstream_model, call=call, body=body
            )
        if isinstance(data, dict) and "error" in data:
            raise self._inband_error(data["error"], upstream_model)
        try:
            return decode_chat_response(data, upstream_model)
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._malformed(upstream_model, f"unexpected response shape ({exc})") from exc

    async def stream(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> AsyncIterator[ChatChunk]:
        body = encode_chat_request(
            request, upstream_model, stream=True, keep_alive=self._keep_alive(upstream_model), reasoning=call.reasoning
        )
        state = StreamDecoder(id=f"chatcmpl-{uuid.uuid4().hex[:24]}", model=upstream_model)
        async with (
            self._use(upstream_model, call),
            self.request("POST", f"{self.base_url}/api/chat", model=upstream_model, call=call, body=body) as resp,
        ):
            async for raw in iter_lines(resp):
                data = self._line(raw, upstream_model)
                if data is None:
                    continue
                if "error" in data:
                    raise self._inband_error(data["error"], upstream_model)
                try:
                    chunks = state.decode_line(data)
                except (TypeError, ValueError, AttributeError) as exc:
                    raise self._malformed(upstream_model, f"unexpected stream line {raw[:200]!r}") from exc
                for chunk in chunks:
                    yield chunk
                if state.done:
                    return
        raise UpstreamConnectionError(
            f"{self.name}: stream from {upstream_model!r} ended before the answer was complete (no done line)",
            provider=self.name,
            model=upstream_model,
        )

    # -- embeddings and models -----------------------------------------------------------

    async def embed(self, request: EmbeddingRequest, upstream_model: str, call: CallOptions) -> EmbeddingResponse:
        if any(not isinstance(item, str) for item in request.input):
            raise InvalidRequestError("Ollama embeds text only: 'input' must be strings, not tokens", param="input")
        body: dict[str, Any] = {"model": upstream_model, "input": list(request.input)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if isinstance(request.extra.get("truncate"), bool):
            body["truncate"] = request.extra["truncate"]
        ka = keep_alive_value(self._keep_alive(upstream_model))
        if ka is not None:
            body["keep_alive"] = ka
        async with self._use(upstream_model, call):
            data = await self.request_json(
                "POST", f"{self.base_url}/api/embed", model=upstream_model, call=call, body=body
            )
        try:
            vectors = [[float(v) for v in vec] for vec in data["embeddings"]]
            if len(vectors) != len(request.input):
                raise ValueError("wrong number of embeddings")
            tokens = int(data.get("prompt_eval_count") or 0)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(upstream_model, "unexpected embeddings response") from exc
        return EmbeddingResponse(
            model=str(data.get("model") or upstream_model),
            data=vectors,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def list_models(self) -> list[UpstreamModel]:
        data = await self.request_json("GET", f"{self.base_url}/api/tags", model="(list models)", call=self._admin())
        items = data.get("models") if isinstance(data, dict) else None
        out = []
        for m in items or []:
            if not isinstance(m, dict) or not (m.get("name") or m.get("model")):
                continue
            details = dict(m.get("details") or {})
            for key in ("size", "digest", "modified_at"):
                if key in m:
                    details[key] = m[key]
            out.append(UpstreamModel(id=str(m.get("name") or m.get("model")), owned_by="ollama", details=details))
        return out

    # -- local-model lifecycle -----------------------------------------------------------

    def _admin(self, timeout_s: float | None = None) -> CallOptions:
        return CallOptions(
            timeout_s=timeout_s if timeout_s is not None else self.config.timeout_s,
            connect_timeout_s=self.config.connect_timeout_s,
        )

    async def loaded_models(self) -> list[LoadedModel]:
        """The models Ollama holds in memory now (``GET /api/ps``)."""
        data = await self.request_json("GET", f"{self.base_url}/api/ps", model="(loaded models)", call=self._admin())
        items = data.get("models") if isinstance(data, dict) else None
        out = []
        for m in items or []:
            if not isinstance(m, dict) or not (m.get("name") or m.get("model")):
                continue
            ctx = m.get("context_length")
            out.append(
                LoadedModel(
                    name=str(m.get("name") or m.get("model")),
                    size=int(m.get("size") or 0),
                    size_vram=int(m.get("size_vram") or 0),
                    expires_at=parse_time(m.get("expires_at")),
                    digest=str(m.get("digest") or ""),
                    context_length=int(ctx) if isinstance(ctx, int) and ctx > 0 else None,
                    details=dict(m.get("details") or {}),
                )
            )
        return out

    async def show(self, model: str) -> UpstreamModel:
        """A model's details (``POST /api/show``); ``context_window`` from its ``model_info``."""
        data = await self.request_json(
            "POST", f"{self.base_url}/api/show", model=model, call=self._admin(), body={"model": model}
        )
        if not isinstance(data, dict):
            raise self._malformed(model, "unexpected /api/show response")
        details: dict[str, Any] = dict(data.get("details") or {})
        for key in ("model_info", "capabilities", "parameters", "modified_at"):
            if key in data:
                details[key] = data[key]
        return UpstreamModel(
            id=model, owned_by="ollama", context_window=context_length(data.get("model_info")), details=details
        )

    async def load(
        self, model: str, keep_alive: str | int | float | None = None, *, timeout_s: float | None = None
    ) -> float:
        """Load ``model`` into memory (``/api/generate`` without a prompt); returns the seconds it took.

        ``keep_alive`` defaults to the provider's configured ``keep_alive`` (else Ollama's 5m).
        """
        body: dict[str, Any] = {"model": model}
        ka = keep_alive_value(keep_alive if keep_alive is not None else self.config.keep_alive)
        if ka is not None:
            body["keep_alive"] = ka
        start = time.perf_counter()
        call = self._admin(timeout_s if timeout_s is not None else max(self.config.timeout_s, 300.0))
        data = await self.request_json("POST", f"{self.base_url}/api/generate", model=model, call=call, body=body)
        if isinstance(data, dict) and "error" in data:
            raise self._inband_error(data["error"], model)
        if not isinstance(data, dict) or not data.get("done"):
            raise self._malformed(model, "unexpected answer to a load request")
        return time.perf_counter() - start

    async def unload(self, model: str) -> None:
        """Unload ``model`` from memory now (``/api/generate`` with ``keep_alive: 0``)."""
        data = await self.request_json(
            "POST",
            f"{self.base_url}/api/generate",
            model=model,
            call=self._admin(),
            body={"model": model, "keep_alive": 0},
        )
        if isinstance(data, dict) and "error" in data:
            raise self._inband_error(data["error"], model)

    async def pull(self, model: str, *, timeout_s: float = 6 * 3600.0) -> AsyncIterator[dict[str, Any]]:
        """Download ``model`` (``POST /api/pull``), yielding Ollama's progress objects.

        The last one has ``status: "success"``.  An error line raises UpstreamStatusError (404 when
        the registry has no such model); a stream that ends early raises UpstreamConnectionError.
        """
        body = {"model": model, "stream": True}
        async with self.request(
            "POST", f"{self.base_url}/api/pull", model=model, call=self._admin(timeout_s), body=body
        ) as resp:
            async for raw in iter_lines(resp):
                data = self._line(raw, model)
                if data is None:
                    continue
                if "error" in data:
                    message = str(data["error"])
                    missing = "does not exist" in message or "not found" in message
                    raise self._inband_error(message, model, 404 if missing else 500)
                yield data
                if data.get("status") == "success":
                    return
        raise UpstreamConnectionError(
            f"{self.name}: pull of {model!r} ended before it succeeded", provider=self.name, model=model
        )
