"""The Python SDK: the gateway in-process, through the same pipeline as the HTTP server.

    from modelyard import Gateway

    gw = Gateway.from_config("modelyard.yaml")
    result = await gw.chat([{"role": "user", "content": "Draw a flowchart"}], route="mermaid")
    print(result.content, result.model_used, result.is_fallback, result.cost_usd)

    for delta in gw.stream_sync(messages, route="code"): ...   # or: async for delta in gw.stream(...)
    result = gw.chat_sync(messages)                          # from synchronous code

Every call goes through :class:`modelyard.gateway.pipeline.Pipeline`, exactly as an HTTP request
does: route resolution (``route=``, the ``default`` alias, ``provider:model``, tasks), the
caller's key (``api_key=``: allowed routes and models, the key's rpm/tpm and budget), budgets and
``max_cost_usd``, the response cache, usage records, and runtime pinning across :meth:`reload`.
The services are the server's for the same config: the database named by ``database:`` (usage
records and keys; ``Gateway(config, database=None)`` turns records off), budgets in memory or
Redis (``state:``), the cache.  They start on the first call.

``chat`` returns a :class:`ChatResult` whose ``error`` is set (and ``content`` is None) when every
candidate failed; pass ``raise_on_error=True`` to get the :class:`~modelyard.errors.ModelyardError`
instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, TypeVar

from modelyard.config import Config, load_config, parse_config
from modelyard.errors import ModelyardError
from modelyard.gateway.auth import Principal
from modelyard.gateway.pipeline import Pipeline, Served
from modelyard.gateway.services import CoreServices, Services
from modelyard.observability.tracing import Tracing, make_tracing
from modelyard.routing.options import parse_options
from modelyard.routing.router import Attempt, Router
from modelyard.runtime import Runtime, RuntimeHolder
from modelyard.types import ChatRequest, ChatResponse, ToolCall, Usage
from modelyard.wire.openai import parse_chat_request

__all__ = ["ChatResult", "Gateway", "StreamResult"]

T = TypeVar("T")

#: the caller of an SDK call made without ``api_key=``
_MASTER = Principal("master")


@dataclass(slots=True)
class ChatResult:
    """The answer and how it was obtained."""

    content: str | None
    model_used: str | None
    provider: str | None
    route: str | None
    is_fallback: bool
    #: every attempt, in order (failed ones included)
    attempts: list[Attempt]
    #: seconds from the call to the complete answer
    generation_time: float
    tokens_used: int
    cost_usd: float
    error: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    response: ChatResponse | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class StreamResult:
    """Filled in as a stream is consumed: ``result`` is set when it ends."""

    result: ChatResult | None = None


class Gateway:
    """An in-process gateway: the server's pipeline and services, without HTTP."""

    def __init__(
        self, config: Config, *, database: str | EllipsisType | None = ..., span_processor: Any = None
    ) -> None:
        """``database``: a database URL for usage records and keys (default: the config's
        ``database``, as the server uses it); None runs without records and keys.
        ``span_processor``: an OpenTelemetry span processor for this gateway's traces (else the
        config's ``tracing.otlp_endpoint``, if set)."""
        self._config = config
        self._database = database
        self._span_processor = span_processor
        self._tracing: Tracing | None = None
        self._holder: RuntimeHolder | None = None
        self.router = Router()
        self._services: Services | CoreServices | None = None
        self._pipeline: Pipeline | None = None
        self._starting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls, source: str | Path | Mapping[str, Any], *, database: str | EllipsisType | None = ...
    ) -> Gateway:
        """From a YAML file path, or an already-parsed mapping."""
        if isinstance(source, Mapping):
            return cls(parse_config(dict(source)), database=database)
        return cls(load_config(source), database=database)

    @property
    def holder(self) -> RuntimeHolder:
        if self._holder is None:
            self._holder = RuntimeHolder(self._config)
        return self._holder

    @property
    def runtime(self) -> Runtime:
        return self.holder.current

    @property
    def services(self) -> Services | CoreServices | None:
        """The services the pipeline uses (None until the first call)."""
        return self._services

    async def pipeline(self) -> Pipeline:
        """The request pipeline, its services started on first use."""
        if self._pipeline is not None:
            return self._pipeline
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._pipeline is None:
                config = self.holder.current.config
                if self._database is None:
                    self._services = await CoreServices.start(config)
                else:
                    if not isinstance(self._database, EllipsisType):
                        database = config.database.model_copy(update={"url": self._database})
                        config = config.model_copy(update={"database": database})
                    self._services = await Services.start(config, lambda: self.holder.current)
                self._tracing = make_tracing(config.tracing, self._span_processor)
                self._pipeline = Pipeline(self.holder, self.router, self._services, self._tracing)
        return self._pipeline

    async def reload(self, config: Config) -> None:
        """Swap in a new config (calls in flight, streams included, finish on the old one)."""
        self._config = config
        if self._holder is not None:
            await self._holder.swap(config)
        if self._services is not None:
            await self._services.refresh_budgets(config)

    async def _call(
        self,
        messages: Sequence[Mapping[str, Any]],
        route: str | None,
        model: str | None,
        api_key: str | None,
        params: dict[str, Any],
    ) -> tuple[Pipeline, ChatRequest, Any, Principal]:
        pipeline = await self.pipeline()
        principal = await pipeline.authenticate({"authorization": f"Bearer {api_key}"}) if api_key else _MASTER
        body: dict[str, Any] = {"model": model or route or "default", "messages": [dict(m) for m in messages], **params}
        if route is not None:
            body["modelyard"] = {**(body.get("modelyard") or {}), "route": route}
        req = parse_chat_request(body)
        return pipeline, req, parse_options(req.options), principal

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        route: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        raise_on_error: bool = False,
        **params: Any,
    ) -> ChatResult:
        """One completion. ``params`` are OpenAI parameters (temperature, max_tokens, tools, ...) and
        ``modelyard={...}`` options (fallback, local_only, task, timeout_s, max_cost_usd, cache, ...).
        ``api_key`` makes the call as that virtual key (checked as over HTTP); without it the call
        runs with the master key's rights."""
        start = time.perf_counter()
        try:
            pipeline, req, opts, principal = await self._call(messages, route, model, api_key, params)
            served = await pipeline.chat(req, opts, principal, started=start)
        except ModelyardError as exc:
            if raise_on_error:
                raise
            return ChatResult(
                content=None,
                model_used=None,
                provider=None,
                route=route or model,
                is_fallback=False,
                attempts=list(getattr(exc, "records", [])),
                generation_time=time.perf_counter() - start,
                tokens_used=0,
                cost_usd=0.0,
                error=exc.message,
            )
        return _result(served, time.perf_counter() - start)

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        route: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        into: StreamResult | None = None,
        **params: Any,
    ) -> AsyncGenerator[str, None]:
        """Text deltas as they arrive; pass ``into=StreamResult()`` to get the final :class:`ChatResult`.

        Leaving the loop early (``break``, an exception, ``aclose()``) ends the upstream call and
        records the request, as a client hanging up on the server does."""
        start = time.perf_counter()
        pipeline, req, opts, principal = await self._call(messages, route, model, api_key, {**params, "stream": True})
        stream = await pipeline.stream(req, opts, principal, started=start)
        parts: list[str] = []
        finish: str | None = None
        try:
            async for chunk in stream.chunks():
                for c in chunk.choices:
                    finish = c.finish_reason or finish
                    if c.content:
                        parts.append(c.content)
                        yield c.content
        finally:
            await stream.aclose()
        if into is not None:
            usage = stream.usage
            into.result = ChatResult(
                content="".join(parts),
                model_used=stream.model,
                provider=stream.provider,
                route=stream.route,
                is_fallback=stream.fallback,
                attempts=stream.attempts,
                generation_time=time.perf_counter() - start,
                tokens_used=usage.total_tokens if usage else 0,
                cost_usd=stream.cost_usd,
                usage=usage,
                finish_reason=finish,
            )

    # -- synchronous use: one private event loop in a daemon thread ----------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="modelyard-sdk", daemon=True)
            self._thread.start()
            self._loop = loop
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def chat_sync(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> ChatResult:
        """:meth:`chat` for synchronous code."""
        return self._run(self.chat(messages, **kwargs))

    def stream_sync(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Iterator[str]:
        """:meth:`stream` for synchronous code."""
        agen = self.stream(messages, **kwargs)
        try:
            while True:
                try:
                    yield self._run(anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            # leaving early (break, close(), an exception): end the upstream call and record the
            # request now, as an HTTP client hanging up does, not whenever the generator is collected
            self._run(agen.aclose())

    async def aclose(self) -> None:
        """Close the providers and the services (every queued usage record is written first)."""
        if self._pipeline is not None:
            await self._pipeline.shadows.aclose()
        if self._services is not None:
            await self._services.aclose()
            self._services = None
            self._pipeline = None
        if self._tracing is not None:
            self._tracing.shutdown()  # exports what is left
            self._tracing = None
        if self._holder is not None:
            await self._holder.aclose()
            self._holder = None

    def close(self) -> None:
        """Close from synchronous code (after chat_sync / stream_sync)."""
        if self._loop is None:
            return
        self._run(self.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = None

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(served: Served, elapsed: float) -> ChatResult:
    response = served.response
    choice = response.choices[0] if response.choices else None
    return ChatResult(
        content=choice.message.text() if choice and choice.message.content is not None else None,
        model_used=served.model,
        provider=served.provider,
        route=served.route,
        is_fallback=served.fallback,
        attempts=served.attempts,
        generation_time=elapsed,
        tokens_used=response.usage.total_tokens if response.usage else 0,
        cost_usd=served.cost_usd,
        usage=response.usage,
        tool_calls=list(choice.message.tool_calls or []) if choice else [],
        finish_reason=choice.finish_reason if choice else None,
        response=response,
    )
