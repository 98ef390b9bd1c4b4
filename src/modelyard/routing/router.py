"""The router: picks candidates for a request and tries them until one answers.

It composes small parts, each with one job: a :class:`~modelyard.routing.strategies.Strategy`
orders the pool, a :class:`~modelyard.routing.breaker.CircuitBreaker` skips failing models, a
:class:`~modelyard.routing.limiter.ModelLimiter` enforces concurrency and rate limits, and
:class:`~modelyard.routing.policy.RetryPolicy` decides what a failure means (retry the same model,
fail over, or give up).  Streams are held back until the first content token, so a failure
before it fails over invisibly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import (
    AllAttemptsFailedError,
    ModelyardError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from modelyard.routing.deployment import Deployment, Route
from modelyard.routing.limiter import Slot
from modelyard.routing.options import RequestOptions
from modelyard.routing.policy import Decision, RetryPolicy
from modelyard.types import ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, Usage

__all__ = ["Attempt", "RouteResult", "RoutedStream", "Router", "estimate_tokens"]


@dataclass(slots=True)
class Attempt:
    """One try at one model. Failed attempts are recorded, never billed as completions."""

    number: int
    model: str
    provider: str
    ok: bool
    latency_ms: float
    ttft_ms: float | None = None
    error_class: str | None = None
    status: int | None = None
    message: str | None = None
    usage: Usage | None = None

    def public(self) -> dict[str, Any]:
        """What a client may see about this attempt (no secrets: messages come from upstream bodies)."""
        return {
            "model": self.model,
            "provider": self.provider,
            "error": self.error_class,
            "status": self.status,
            "message": self.message,
        }


@dataclass(slots=True)
class RouteResult:
    route: str
    deployment: Deployment
    attempts: list[Attempt]
    #: seconds spent waiting on upstreams (all attempts), to report modelyard's own overhead
    upstream_s: float = 0.0

    first_choice: str = ""

    @property
    def fallback(self) -> bool:
        """True when the answer did not come from the first choice (a same-model retry is not a fallback)."""
        return self.deployment.name != self.first_choice


@dataclass(slots=True)
class RoutedStream:
    """A committed stream: the chunks read while holding back, then the rest of the upstream stream."""

    result: RouteResult
    head: list[ChatChunk]
    tail: AsyncIterator[ChatChunk]
    slot: Slot
    started: float
    ttft_ms: float
    usage: Usage | None = None
    _closed: bool = field(default=False)

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        """Every chunk, in order. Upstream errors after the head propagate (the server reports them)."""
        dep = self.result.deployment
        stall = dep.stall_timeout_s
        ok = False
        error: BaseException | None = None
        try:
            for chunk in self.head:
                if chunk.usage is not None:
                    self.usage = chunk.usage
                yield chunk
            while True:
                try:
                    if stall is not None:
                        async with asyncio.timeout(stall):
                            chunk = await anext(self.tail)
                    else:
                        chunk = await anext(self.tail)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamTimeoutError(
                        f"{dep.provider.name}: stream from {dep.name!r} stalled for {stall:g} s",
                        provider=dep.provider.name,
                        model=dep.name,
                        phase="stall",
                    ) from None
                if chunk.usage is not None:
                    self.usage = chunk.usage
                yield chunk
            ok = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._finish(ok, error)

    async def abort(self) -> None:
        """Release everything if the stream was not consumed to the end (idempotent)."""
        await self._finish(False, None)

    async def _finish(self, ok: bool, error: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        dep = self.result.deployment
        latency = (time.perf_counter() - self.started) * 1000
        attempt = self.result.attempts[-1]
        attempt.latency_ms = latency
        attempt.usage = self.usage
        if not ok and isinstance(error, ModelyardError):
            attempt.ok = False
            attempt.error_class = _error_class(error)
            attempt.message = error.message
        self.result.upstream_s += latency / 1000
        dep.state.stats.finish()
        if ok:
            dep.state.stats.record(ok=True, latency_ms=latency, ttft_ms=self.ttft_ms)
            dep.state.breaker.record_success()
        elif isinstance(error, UpstreamError):
            dep.state.stats.record(ok=False, latency_ms=latency, ttft_ms=self.ttft_ms, error=attempt.message)
            dep.state.breaker.record_failure()
        else:  # the client went away: says nothing about the model
            dep.state.breaker.release_probe()
        self.slot.release(self.usage.total_tokens if self.usage else None)
        aclose = getattr(self.tail, "aclose", None)
        if aclose is not None:
            await aclose()


def estimate_tokens(req: ChatRequest) -> int:
    """A fast upper-bound estimate of a request's tokens (about 4 characters a token), for rate limits."""
    chars = 0
    for m in req.messages:
        c = m.content
        if isinstance(c, str):
            chars += len(c)
        elif c:
            chars += sum(len(p.text) + (1000 if p.type == "image" else 0) for p in c)
        chars += 16
    return chars // 4 + (req.max_tokens or 256)


def _error_class(exc: ModelyardError) -> str:
    if isinstance(exc, UpstreamError):
        return exc.kind
    return type(exc).__name__.removesuffix("Error").lower()


def _status_of(exc: ModelyardError) -> int | None:
    upstream = getattr(exc, "upstream_status", None)
    return int(upstream) if upstream is not None else None


class Router:
    """Tries a route's candidates in order until one answers, within the route's limits."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()

    # -- candidate selection ---------------------------------------------------------------

    def candidates(self, route: Route, opts: RequestOptions, *, stream: bool) -> list[Deployment]:
        ordered = route.strategy.order(route.pool, stream=stream)
        if opts.prefer is not None:
            ordered.sort(key=lambda d: 0 if opts.prefer in d.config.tags else 1)
        if opts.fallback:
            ordered += [d for d in route.fallbacks if d not in ordered]
        else:
            ordered = ordered[:1]
        if opts.local_only:
            ordered = [d for d in ordered if d.is_local]
        return ordered

    # -- the attempt loop -----------------------------------------------------------------

    async def run(
        self,
        route: Route,
        opts: RequestOptions,
        est_tokens: int,
        call: Any,
        *,
        stream: bool = False,
    ) -> tuple[Any, RouteResult, Slot]:
        """Run ``call(deployment, timeout_s)`` over the candidates; return its value, the result and the held slot.

        The caller releases the slot (for streams, when the stream ends).
        """
        candidates = self.candidates(route, opts, stream=stream)
        if not candidates:
            why = " (local_only is set and no local model is in the route)" if opts.local_only else ""
            raise ServiceUnavailableError(f"route {route.name!r} has no model to try{why}")
        timeout = opts.timeout_s or route.timeout_s
        deadline = time.monotonic() + timeout if timeout else None
        max_attempts = opts.max_attempts or route.max_attempts
        result = RouteResult(route=route.name, deployment=candidates[0], attempts=[], first_choice=candidates[0].name)
        queue = list(candidates)
        tries: dict[str, int] = {}
        skipped: list[str] = []
        last: ModelyardError | None = None
        while queue and len(result.attempts) < max_attempts:
            dep, slot = await self._acquire(queue, est_tokens, deadline, skipped)
            if dep is None or slot is None:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                slot.release(0)
                dep.state.breaker.release_probe()
                last = UpstreamTimeoutError(f"route {route.name!r} ran out of time", phase="deadline")
                break
            number = len(result.attempts) + 1
            tries[dep.name] = tries.get(dep.name, 0) + 1
            dep.state.stats.start()
            start = time.perf_counter()
            try:
                value = await call(dep, remaining)
            except ModelyardError as exc:
                elapsed = (time.perf_counter() - start) * 1000
                result.upstream_s += elapsed / 1000
                dep.state.stats.finish()
                slot.release(0)
                last = exc
                result.attempts.append(
                    Attempt(
                        number=number,
                        model=dep.name,
                        provider=dep.provider.name,
                        ok=False,
                        latency_ms=elapsed,
                        error_class=_error_class(exc),
                        status=_status_of(exc),
                        message=exc.message,
                    )
                )
                decision = self.policy.decide(exc, dep, tries[dep.name], route, deadline)
                if decision.counts_against_model:
                    dep.state.stats.record(ok=False, latency_ms=elapsed, error=exc.message)
                    dep.state.breaker.record_failure()
                else:
                    dep.state.breaker.release_probe()
                await self._apply(decision, dep, queue)
                if decision.final:
                    raise decision.final_error or exc from None
                continue
            except BaseException:
                dep.state.stats.finish()
                dep.state.breaker.release_probe()
                slot.release(0)
                raise
            elapsed = (time.perf_counter() - start) * 1000
            attempt = Attempt(number=number, model=dep.name, provider=dep.provider.name, ok=True, latency_ms=elapsed)
            result.attempts.append(attempt)
            result.deployment = dep
            if not stream:
                result.upstream_s += elapsed / 1000
                dep.state.stats.finish()
                dep.state.stats.record(ok=True, latency_ms=elapsed)
                dep.state.breaker.record_success()
            return value, result, slot
        raise self._exhausted(route, result, last, skipped)

    async def _acquire(
        self,
        queue: list[Deployment],
        est_tokens: int,
        deadline: float | None,
        skipped: list[str],
    ) -> tuple[Deployment | None, Slot | None]:
        """The first candidate whose breaker allows a call and that has capacity now; else wait on the first one."""
        waitable: Deployment | None = None
        for dep in list(queue):
            breaker = dep.state.breaker
            if breaker.state == "open":
                queue.remove(dep)
                skipped.append(dep.name)
                continue
            slot = dep.state.limiter.try_acquire(est_tokens)
            if slot is None:
                waitable = waitable or dep
                continue
            if not breaker.allow():
                slot.release(0)
                continue
            queue.remove(dep)
            queue.insert(0, dep)
            return dep, slot
        if waitable is None:
            return None, None
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            slot = await waitable.state.limiter.acquire(est_tokens, timeout=remaining)
        except RateLimitError:
            queue.remove(waitable)
            if not queue:
                raise
            return await self._acquire(queue, est_tokens, deadline, skipped)
        if not waitable.state.breaker.allow():
            slot.release(0)
            queue.remove(waitable)
            skipped.append(waitable.name)
            return await self._acquire(queue, est_tokens, deadline, skipped)
        return waitable, slot

    async def _apply(self, decision: Decision, dep: Deployment, queue: list[Deployment]) -> None:
        if dep in queue:
            queue.remove(dep)
        if decision.keep is not None:
            queue[:] = [d for d in queue if decision.keep(d)]
        if decision.retry_same:
            if decision.wait_s > 0:
                await asyncio.sleep(decision.wait_s)
            queue.insert(0, dep)

    def _exhausted(
        self, route: Route, result: RouteResult, last: ModelyardError | None, skipped: list[str]
    ) -> ModelyardError:
        final = self.policy.final_error(last, result.attempts)
        if final is not None:
            return final
        attempts = [a.public() for a in result.attempts]
        attempts += [{"model": name, "error": "circuit_open", "status": None, "message": None} for name in skipped]
        if not result.attempts:
            if isinstance(last, RateLimitError):
                return last
            return AllAttemptsFailedError(
                f"no model of route {route.name!r} can take the request now "
                f"({', '.join(skipped) or 'none'} unavailable: circuit open); try again shortly",
                attempts=attempts,
                last=ServiceUnavailableError("circuit open"),
            )
        summary = "; ".join(f"{a.model}: {a.error_class}{f' {a.status}' if a.status else ''}" for a in result.attempts)
        return AllAttemptsFailedError(
            f"all {len(result.attempts)} attempts on route {route.name!r} failed ({summary}). "
            f"Last error: {last.message if last else 'unknown'}",
            attempts=attempts,
            last=last,
        )

    # -- the three kinds of call --------------------------------------------------------------

    async def chat(self, route: Route, req: ChatRequest, opts: RequestOptions) -> tuple[ChatResponse, RouteResult]:
        async def call(dep: Deployment, remaining: float | None) -> ChatResponse:
            return await dep.provider.chat(req, dep.upstream, _call_options(dep, remaining))

        response, result, slot = await self.run(route, opts, estimate_tokens(req), call)
        result.attempts[-1].usage = response.usage
        slot.release(response.usage.total_tokens if response.usage else None)
        return response, result

    async def stream(self, route: Route, req: ChatRequest, opts: RequestOptions) -> RoutedStream:
        started: dict[str, float] = {}

        async def call(dep: Deployment, remaining: float | None) -> tuple[list[ChatChunk], AsyncIterator[ChatChunk]]:
            started["t"] = time.perf_counter()
            iterator = dep.provider.stream(req, dep.upstream, _call_options(dep, remaining)).__aiter__()
            ttft = dep.ttft_timeout_s
            if remaining is not None:
                ttft = min(ttft, remaining) if ttft is not None else remaining
            head: list[ChatChunk] = []
            try:
                async with asyncio.timeout(ttft):
                    while True:
                        chunk = await anext(iterator)
                        head.append(chunk)
                        if any(c.has_output() for c in chunk.choices):
                            break
            except StopAsyncIteration:
                pass
            except TimeoutError:
                await _aclose(iterator)
                raise UpstreamTimeoutError(
                    f"{dep.provider.name}: no first token from {dep.name!r} within {ttft:g} s",
                    provider=dep.provider.name,
                    model=dep.name,
                    phase="ttft",
                ) from None
            except BaseException:
                await _aclose(iterator)
                raise
            return head, iterator

        (head, tail), result, slot = await self.run(route, opts, estimate_tokens(req), call, stream=True)
        ttft_ms = (time.perf_counter() - started["t"]) * 1000
        result.attempts[-1].ttft_ms = ttft_ms
        return RoutedStream(result=result, head=head, tail=tail, slot=slot, started=started["t"], ttft_ms=ttft_ms)

    async def embed(
        self, route: Route, req: EmbeddingRequest, opts: RequestOptions
    ) -> tuple[EmbeddingResponse, RouteResult]:
        async def call(dep: Deployment, remaining: float | None) -> EmbeddingResponse:
            return await dep.provider.embed(req, dep.upstream, _call_options(dep, remaining))

        est = sum(len(x) // 4 + 1 if isinstance(x, str) else len(x) for x in req.input)
        response, result, slot = await self.run(route, opts, est, call)
        result.attempts[-1].usage = response.usage
        slot.release(response.usage.total_tokens)
        return response, result


def _call_options(dep: Deployment, remaining: float | None) -> Any:
    if remaining is None or remaining >= dep.call.timeout_s:
        return dep.call
    from modelyard.providers.base import CallOptions

    return CallOptions(timeout_s=max(0.001, remaining), connect_timeout_s=min(dep.call.connect_timeout_s, remaining))


async def _aclose(iterator: AsyncIterator[ChatChunk]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream stream must not mask the real error
            pass
