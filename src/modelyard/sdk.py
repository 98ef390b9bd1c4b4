"""The Python SDK: the same routing engine in-process, without the server.

    from modelyard import Gateway

    gw = Gateway.from_config("modelyard.yaml")
    result = await gw.chat([{"role": "user", "content": "Draw a flowchart"}], route="mermaid")
    print(result.content, result.model_used, result.is_fallback, result.cost_usd)

    for delta in gw.stream_sync(messages, route="code"): ...   # or: async for delta in gw.stream(...)
    result = gw.chat_sync(messages)                          # from synchronous code

``chat`` returns a :class:`ChatResult` whose ``error`` is set (and ``content`` is None) when every
candidate failed; pass ``raise_on_error=True`` to get the :class:`~modelyard.errors.ModelyardError`
instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from modelyard.accounting.pricing import cost, price_for
from modelyard.config import Config, load_config, parse_config
from modelyard.errors import ModelyardError
from modelyard.routing.deployment import Deployment
from modelyard.routing.options import parse_options
from modelyard.routing.router import Attempt, Router
from modelyard.runtime import Runtime, RuntimeHolder
from modelyard.server.parsing import parse_chat_request
from modelyard.types import ChatResponse, ToolCall, Usage

__all__ = ["ChatResult", "Gateway", "StreamResult"]

T = TypeVar("T")


def _cost(dep: Deployment, usage: Usage | None) -> float:
    """The same cost the server records: the model's config prices over the built-in table."""
    return cost(price_for(dep.config, dep.upstream), usage) if usage is not None else 0.0


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
    """An in-process gateway: config, providers, routes and the router, without HTTP."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._holder: RuntimeHolder | None = None
        self.router = Router()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, source: str | Path | Mapping[str, Any]) -> Gateway:
        """From a YAML file path, or an already-parsed mapping."""
        if isinstance(source, Mapping):
            return cls(parse_config(dict(source)))
        return cls(load_config(source))

    @property
    def runtime(self) -> Runtime:
        if self._holder is None:
            self._holder = RuntimeHolder(self._config)
        return self._holder.current

    async def reload(self, config: Config) -> None:
        """Swap in a new config (in-flight calls finish on the old one)."""
        self._config = config
        if self._holder is not None:
            await self._holder.swap(config)

    def _request(
        self, messages: Sequence[Mapping[str, Any]], route: str | None, model: str | None, params: dict[str, Any]
    ) -> tuple[Any, Any, Any]:
        rt = self.runtime
        target = route or model or rt.default_route
        if target is None:
            raise ModelyardError("no route or model given and no default_route configured")
        body = {"model": target, "messages": [dict(m) for m in messages], **params}
        req = parse_chat_request(body)
        opts = parse_options(req.options)
        resolved = rt.resolve(target)
        if opts.task:
            resolved = rt.for_task(resolved, opts.task)
        return req, opts, resolved

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        route: str | None = None,
        model: str | None = None,
        raise_on_error: bool = False,
        **params: Any,
    ) -> ChatResult:
        """One completion. ``params`` are OpenAI parameters (temperature, max_tokens, tools, ...) and
        ``modelyard={...}`` options (fallback, local_only, task, timeout_s, ...)."""
        start = time.perf_counter()
        try:
            req, opts, resolved = self._request(messages, route, model, params)
            response, result = await self.router.chat(resolved, req, opts)
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
        choice = response.choices[0] if response.choices else None
        dep = result.deployment
        return ChatResult(
            content=choice.message.text() if choice and choice.message.content is not None else None,
            model_used=dep.name,
            provider=dep.provider.name,
            route=result.route,
            is_fallback=result.fallback,
            attempts=result.attempts,
            generation_time=time.perf_counter() - start,
            tokens_used=response.usage.total_tokens if response.usage else 0,
            cost_usd=_cost(dep, response.usage),
            usage=response.usage,
            tool_calls=list(choice.message.tool_calls or []) if choice else [],
            finish_reason=choice.finish_reason if choice else None,
            response=response,
        )

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        route: str | None = None,
        model: str | None = None,
        into: StreamResult | None = None,
        **params: Any,
    ) -> AsyncIterator[str]:
        """Text deltas as they arrive; pass ``into=StreamResult()`` to get the final :class:`ChatResult`."""
        start = time.perf_counter()
        req, opts, resolved = self._request(messages, route, model, {**params, "stream": True})
        routed = await self.router.stream(resolved, req, opts)
        parts: list[str] = []
        finish: str | None = None
        try:
            async for chunk in routed.chunks():
                for c in chunk.choices:
                    finish = c.finish_reason or finish
                    if c.content:
                        parts.append(c.content)
                        yield c.content
        finally:
            await routed.abort()
        if into is not None:
            dep = routed.result.deployment
            into.result = ChatResult(
                content="".join(parts),
                model_used=dep.name,
                provider=dep.provider.name,
                route=routed.result.route,
                is_fallback=routed.result.fallback,
                attempts=routed.result.attempts,
                generation_time=time.perf_counter() - start,
                tokens_used=routed.usage.total_tokens if routed.usage else 0,
                cost_usd=_cost(dep, routed.usage),
                usage=routed.usage,
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
        while True:
            try:
                yield self._run(anext(agen))  # type: ignore[arg-type]
            except StopAsyncIteration:
                return

    async def aclose(self) -> None:
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
