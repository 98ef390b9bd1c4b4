"""The one small interface every provider adapter implements.

An adapter owns one pooled :class:`~modelyard.transport.base.Transport` (chosen when the provider is
built, from its ``proxy:`` and ``tls:`` settings; created on first use, inside the running loop)
and translates between :mod:`modelyard.types` and its wire format, for streaming and non-streaming
alike.  It raises only :class:`~modelyard.errors.ModelyardError` subclasses.
"""

from __future__ import annotations

import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import orjson

from modelyard.config.schema import ProviderConfigBase
from modelyard.errors import (
    ConfigError,
    InvalidRequestError,
    ModelyardError,
    UpstreamConnectionError,
    UpstreamMalformedError,
    UpstreamStatusError,
)
from modelyard.local.manager import LocalModelManager
from modelyard.providers._http import SSEEvent, retry_after_from_headers, translate_exception
from modelyard.scrub import scrub
from modelyard.transport import Lease, Response, Transport, TransportPlan, plan_transport
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ChoiceDelta,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthResult,
    Message,
    UpstreamModel,
)

__all__ = [
    "FORWARDED",
    "TRACEPARENT",
    "CallOptions",
    "Provider",
    "ProviderHealth",
    "coalesce",
    "together",
    "translated_stream",
]

_JSON_HEADERS = {"Content-Type": "application/json"}
#: a server-sent event as a translated stream's ``feed`` takes it (an SSEEvent, or its data as bytes)
E = TypeVar("E")

#: the W3C ``traceparent`` of the request being served, sent with each upstream call (set by the
#: tracer, modelyard.observability.tracing; None when tracing is off)
TRACEPARENT: ContextVar[str | None] = ContextVar("modelyard_traceparent", default=None)
#: request headers a client sent for the upstream (``anthropic-beta`` from the Messages API); each
#: provider kind forwards only the ones it names in ``forwarded_headers``
FORWARDED: ContextVar[Mapping[str, str] | None] = ContextVar("modelyard_forwarded_headers", default=None)


@dataclass(slots=True)
class ProviderHealth:
    """The provider's active health check results (passive health lives with each model's figures)."""

    ok: bool = True
    checked_at: float | None = None
    latency_ms: float | None = None
    detail: str = ""
    consecutive_failures: int = 0

    def record(self, result: HealthResult, *, unhealthy_after: int = 2) -> None:
        self.checked_at = time.time()
        self.latency_ms = result.latency_ms
        self.detail = result.detail
        if result.ok:
            self.consecutive_failures = 0
            self.ok = True
        else:
            self.consecutive_failures += 1
            self.ok = self.consecutive_failures < unhealthy_after

    @property
    def state(self) -> str:
        if self.consecutive_failures == 0:
            return "healthy"
        return "degraded" if self.ok else "unhealthy"


@dataclass(slots=True, frozen=True)
class CallOptions:
    """Per-attempt limits, resolved from the model, provider and route config."""

    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    #: the model can reason (``models.<name>.capabilities.reasoning``): a provider that turns
    #: OpenAI's ``reasoning_effort`` into its own thinking setting does so only then (a model that
    #: cannot think answers that setting with a 400); False drops the hint
    reasoning: bool = True


class Provider(ABC):
    """A configured upstream: one wire format, one base URL, one credential, one connection pool."""

    kind: ClassVar[str]
    default_base_url: ClassVar[str]
    #: True when the provider runs locally (data never leaves the machine/network)
    local_by_default: ClassVar[bool] = False
    supports_embeddings: ClassVar[bool] = False
    #: client request headers this kind passes on to its upstream (see FORWARDED)
    forwarded_headers: ClassVar[tuple[str, ...]] = ()
    #: the provider's config; each adapter narrows it to its kind's class (``OllamaProviderConfig``...)
    config: ProviderConfigBase
    #: the local-model lifecycle manager of a provider that loads and unloads models (Ollama,
    #: llama.cpp); None for the others
    lifecycle: LocalModelManager | None = None

    def __init__(self, name: str, config: ProviderConfigBase) -> None:
        if config.kind != self.kind:
            raise TypeError(f"{type(self).__name__} takes a {self.kind!r} provider config, not {config.kind!r}")
        self.name = name
        self.config = config
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")
        self.is_local = config.local if config.local is not None else self.local_by_default
        self.health_state = ProviderHealth()
        #: the transport's kind, TLS context and proxies: decided here, once (never per request)
        self.transport_plan: TransportPlan = self.plan_transport()
        self._client: Transport | None = None
        self._closed = False

    # -- the interface -------------------------------------------------------------------

    @abstractmethod
    async def chat(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> ChatResponse:
        """One non-streaming completion."""

    @abstractmethod
    def stream(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> AsyncIterator[ChatChunk]:
        """A streamed completion as OpenAI-style chunks (the last one may carry only usage)."""

    async def embed(self, request: EmbeddingRequest, upstream_model: str, call: CallOptions) -> EmbeddingResponse:
        raise InvalidRequestError(f"provider {self.name!r} ({self.kind}) does not serve embeddings", param="model")

    @abstractmethod
    async def list_models(self) -> list[UpstreamModel]:
        """The models the upstream itself lists."""

    #: the upstream model a chat probe asks (the cheapest configured one; set by the runtime)
    probe_model: str | None = None
    #: when (time.monotonic) a real request last succeeded on this provider (set by the router)
    traffic_ok_at: float | None = None

    async def health(self) -> HealthResult:
        """An active check, by ``health.method``: list the upstream's models (a chat probe when the
        listing is not served: 404/405), or a 1-token chat probe."""
        start = time.perf_counter()
        method = self.config.health.method
        try:
            if method == "chat_probe":
                return await self._chat_probe(start)
            try:
                models = await self.list_models()
            except UpstreamStatusError as exc:
                if exc.upstream_status in (404, 405) and self.probe_model is not None:
                    return await self._chat_probe(start, note="the model listing is not served: ")
                raise
        except Exception as exc:  # a probe reports, it does not raise
            detail = scrub(f"{type(exc).__name__}: {exc}")
            return HealthResult(False, (time.perf_counter() - start) * 1000, detail)
        return HealthResult(True, (time.perf_counter() - start) * 1000, f"{len(models)} models")

    async def _chat_probe(self, start: float, note: str = "") -> HealthResult:
        model = self.probe_model
        if model is None:
            return HealthResult(False, 0.0, "chat_probe: the provider has no configured model to ask")
        req = ChatRequest(model=model, messages=[Message(role="user", content="ping")], max_tokens=1)
        try:
            answer = await self.chat(req, model, CallOptions(timeout_s=self.config.timeout_s))
        except Exception as exc:  # a probe reports, it does not raise
            detail = scrub(f"{note}{type(exc).__name__}: {exc}")
            return HealthResult(False, (time.perf_counter() - start) * 1000, detail, probe_model=model)
        ms = (time.perf_counter() - start) * 1000
        return HealthResult(
            True, ms, f"{note}1-token chat probe on {model!r} ok", probe_model=model, usage=answer.usage
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- helpers for adapters ------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """Headers that carry the credential. Override per wire format."""
        return {}

    def plan_transport(self) -> TransportPlan:
        """The transport for this provider's base URL under its ``proxy:`` and ``tls:`` settings."""
        try:
            return plan_transport(self.base_url, proxy=self.config.proxy, tls=self.config.tls, name=self.name)
        except (ssl.SSLError, OSError) as exc:  # a PEM file that exists but does not load
            raise ConfigError(f"cannot load the TLS files: {exc}", path=f"providers.{self.name}.tls") from exc

    @property
    def client(self) -> Transport:
        """The provider's connection pool (one per provider, made on first use)."""
        if self._closed:
            raise UpstreamConnectionError(f"provider {self.name!r} was closed (config reloaded)", provider=self.name)
        client = self._client
        if client is None or client.closed:
            headers = {"User-Agent": "modelyard", **self.auth_headers(), **self.config.headers}
            client = self._client = self.transport_plan.build(
                headers=headers, max_connections=self.config.max_connections
            )
            client.constant_headers(_JSON_HEADERS)
        return client

    def request(
        self,
        method: str,
        url: str,
        *,
        model: str,
        call: CallOptions,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamCall:
        """``async with provider.request(...) as resp:`` sends the request and yields a 2xx response.

        Transport failures inside the block (including while the caller reads the body or a
        stream) become UpstreamErrors; error statuses become :meth:`error_from_response`, and a
        redirect (3xx, never followed) becomes :meth:`redirect_error`.
        The connection goes back to the pool when the block ends with the body read, and is
        closed otherwise.
        """
        data = orjson.dumps(body) if body is not None else None
        hdrs: Mapping[str, str] | None = _JSON_HEADERS if data is not None else None
        if headers:
            hdrs = {**(hdrs or {}), **headers}
        return UpstreamCall(self, model, method, url, data, hdrs, params, call)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        model: str,
        call: CallOptions,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        async with self.request(method, url, model=model, call=call, body=body, params=params) as resp:
            raw = await resp.read()
        return self.decode(raw, model)

    def decode(self, raw: bytes, model: str) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self.malformed(f"upstream sent invalid JSON for {model!r}: {raw[:200]!r}", model) from exc

    def malformed(self, detail: str, model: str) -> UpstreamMalformedError:
        """The error for an upstream answer that cannot be parsed (retryable: try again or elsewhere)."""
        return UpstreamMalformedError(f"{self.name}: {detail}", provider=self.name, model=model)

    def error_from_response(
        self, status: int, raw: bytes, headers: Mapping[str, str], model: str
    ) -> UpstreamStatusError:
        """Build the error for an upstream error status. Adapters refine ``code`` and message."""
        message, code, param = self.parse_error_body(raw)
        code = code or classify_error_message(message)
        return UpstreamStatusError(
            f"{self.name} returned {status} for {model!r}: {message}",
            upstream_status=status,
            provider=self.name,
            model=model,
            code=code,
            param=param,
            retry_after=retry_after_from_headers(headers),
        )

    def redirect_error(self, status: int, headers: Mapping[str, str], model: str) -> UpstreamStatusError:
        """A 3xx answer: not followed (it would resend a POST and its credential elsewhere) and not retried."""
        location = headers.get("location") or "(no Location header)"
        return UpstreamStatusError(
            f"{self.name}: upstream redirected ({status}) to {location}; fix the provider's base_url",
            upstream_status=status,
            provider=self.name,
            model=model,
            code="upstream_redirect",
        )

    def parse_error_body(self, raw: bytes) -> tuple[str, str | None, str | None]:
        """(message, code, param) from an error body. The default reads OpenAI's shape."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            text = raw.decode("utf-8", "replace").strip()
            return (text[:500] or "no error body"), None, None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            return str(err.get("message") or body), str(code) if code else None, err.get("param")
        if isinstance(err, str):
            return err, None, None
        return str(body)[:500], None, None


async def translated_stream(
    provider: Provider,
    batches: AsyncIterator[list[E]],
    model: str,
    feed: Callable[[E], list[ChatChunk] | str],
    text_chunk: Callable[[str], ChatChunk],
    done: Callable[[], bool] | None = None,
) -> AsyncIterator[ChatChunk]:
    """The chunks of a stream in another wire format, from its server-sent events (``batches``:
    :func:`~modelyard.providers._http.iter_sse` or ``iter_sse_data``, one list per read).

    ``feed`` turns one event into chunks, or into a ``str``: the event is only more answer text
    for choice 0 (never empty), the bulk of a stream.  Consecutive texts of one read become one
    chunk, made by ``text_chunk`` at the first of them: what :func:`coalesce` would make of one
    chunk per text, without building those.  The chunks of one read go out together
    (:func:`coalesce`); a malformed event or an in-band error is raised after the chunks that came
    before it; ``done`` ends the stream early."""
    async for batch in batches:
        chunks: list[ChatChunk] = []
        run: ChatChunk | None = None  # the chunk of the texts in ``texts``, last in ``chunks``
        texts: list[str] = []
        failed: Exception | None = None
        for event in batch:
            try:
                out = feed(event)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                failed = provider.malformed(f"malformed stream event from {model!r}: {_excerpt(event)}", model)
                failed.__cause__ = exc
                break
            except ModelyardError as exc:
                failed = exc
                break
            if isinstance(out, str):
                if run is None:
                    run = text_chunk(out)
                    chunks.append(run)
                    texts = [out]
                else:
                    texts.append(out)
            else:
                if run is not None:
                    if len(texts) > 1:
                        run.choices[0].content = "".join(texts)
                    run = None
                chunks += out
            if done is not None and done():
                break
        if run is not None and len(texts) > 1:
            run.choices[0].content = "".join(texts)
        ended = done is not None and done()
        for chunk in coalesce(chunks, ending=ended):
            yield chunk
        if failed is not None:
            raise failed
        if ended:
            return


def _excerpt(event: object) -> str:
    """The start of an event's data (an SSEEvent's, or the bytes themselves), for an error message."""
    data = event.data if isinstance(event, SSEEvent) else event
    if isinstance(data, bytes):
        data = data[:200].decode("utf-8", "replace")
    return repr(data[:200]) if isinstance(data, str) else repr(data)


def _plain(chunk: ChatChunk) -> ChoiceDelta | None:
    """The delta of a chunk that is only more answer text for choice 0 (else None)."""
    if chunk.usage is not None or len(chunk.choices) != 1:
        return None
    d = chunk.choices[0]
    return d if d.only_text() else None


def together(chunks: list[ChatChunk], *, ending: bool = False) -> list[ChatChunk]:
    """Mark the chunks of one upstream read ``more`` so the front end writes them in one go: all
    but the last, or all of them when the stream ends right after (the end flushes them)."""
    for chunk in chunks if ending else chunks[:-1]:
        chunk.more = True
    return chunks


def coalesce(chunks: list[ChatChunk], *, ending: bool = False) -> list[ChatChunk]:
    """The chunks one upstream read produced, with consecutive plain-text chunks of choice 0 merged
    into one (they arrived at the same instant: one delta costs one encode and one write, not N),
    marked to go out together (:func:`together`)."""
    if len(chunks) > 1:
        out: list[ChatChunk] = []
        texts: list[str] = []
        for chunk in chunks:
            d = _plain(chunk)
            if d is not None and texts:
                texts.append(d.content or "")
                continue
            if len(texts) > 1:
                out[-1].choices[0].content = "".join(texts)
            texts = [d.content or ""] if d is not None else []
            out.append(chunk)
        if len(texts) > 1:
            out[-1].choices[0].content = "".join(texts)
        chunks = out
    return together(chunks, ending=ending)


def classify_error_message(message: str) -> str | None:
    """Recognise context-length and content-policy errors from providers that give no code."""
    m = message.lower()
    if any(
        s in m
        for s in (
            "context length",
            "context_length",
            "maximum context",
            "context window",
            "prompt is too long",
            "too many tokens",
            "input is too long",
            "exceeds the maximum number of tokens",
        )
    ):
        return "context_length_exceeded"
    if any(s in m for s in ("content policy", "content_policy", "safety", "content management policy")):
        return "content_policy_violation"
    return None


class UpstreamCall:
    """One upstream request as an async context manager (a plain class: it runs for every attempt)."""

    __slots__ = ("_call", "_data", "_headers", "_lease", "_method", "_model", "_params", "_provider", "_url")

    def __init__(
        self,
        provider: Provider,
        model: str,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        call: CallOptions,
    ) -> None:
        self._provider = provider
        self._model = model
        self._method = method
        self._url = url
        self._data = data
        self._headers = headers
        self._params = params
        self._call = call
        self._lease: Lease | None = None

    async def __aenter__(self) -> Response:
        p = self._provider
        headers = self._headers
        traceparent = TRACEPARENT.get()
        if traceparent is not None:
            headers = {**(headers or {}), "traceparent": traceparent}
        if p.forwarded_headers:
            forwarded = FORWARDED.get()
            if forwarded:
                extra = {k: v for k, v in forwarded.items() if k in p.forwarded_headers}
                if extra:
                    headers = {**(headers or {}), **extra}
        try:
            resp, lease = await p.client.send(
                self._method,
                self._url,
                body=self._data,
                headers=headers,
                params=self._params,
                timeout_s=self._call.timeout_s,
                connect_timeout_s=self._call.connect_timeout_s,
            )
        except Exception as exc:
            self._raise_translated(exc)
            raise
        status = resp.status
        if status < 300:
            self._lease = lease
            return resp
        try:
            raw = await resp.read()
        except Exception as exc:
            self._raise_translated(exc)
            raise
        finally:
            lease.release()
        if status < 400:
            raise p.redirect_error(status, resp.headers, self._model)
        raise p.error_from_response(status, raw, resp.headers, self._model)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        lease = self._lease
        if lease is not None:
            self._lease = None
            lease.release()
        if isinstance(exc, Exception):
            self._raise_translated(exc)

    def _raise_translated(self, exc: Exception) -> None:
        """Raise the UpstreamError for a transport failure; return for anything else (the caller re-raises)."""
        translated = translate_exception(exc, self._provider.name, self._model, self._provider.base_url)
        if translated is not None:
            raise translated from exc
