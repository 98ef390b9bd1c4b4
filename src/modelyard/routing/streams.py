"""A committed stream: what was held back, the rest of the upstream stream, and what happens if it breaks.

Before the first content token nothing has reached the client, so the router fails over
invisibly.  After it, a failure must never look like a clean, truncated answer: the stream
either continues on a fallback model that supports assistant prefill (the original messages
plus the partial answer; only the rest is streamed), or ends with an error event naming the
original cause.  If the continuation is itself rejected, the client sees the original failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelyard.errors import ModelyardError, UpstreamError, UpstreamTimeoutError
from modelyard.types import ChatChunk, Usage

if TYPE_CHECKING:
    from modelyard.routing.deployment import Deployment
    from modelyard.routing.limiter import Slot
    from modelyard.routing.router import RouteResult

__all__ = ["Continuation", "RoutedStream", "stalled"]


def stalled(dep: Deployment, stall: float | None) -> UpstreamTimeoutError:
    """The error of a stream that sent nothing for the model's ``stall_timeout_s``."""
    return UpstreamTimeoutError(
        f"{dep.provider.name}: stream from {dep.name!r} stalled for {stall:g} s",
        provider=dep.provider.name,
        model=dep.name,
        phase="stall",
    )


#: given the error and the partial answer, a stream that continues it (or None)
Continuation = Callable[[ModelyardError, str], Awaitable["RoutedStream | None"]]


@dataclass(slots=True)
class RoutedStream:
    result: RouteResult
    head: list[ChatChunk]
    tail: AsyncIterator[ChatChunk]
    slot: Slot
    started: float
    ttft_ms: float
    #: the request asked for reasoning or the answer began with it (its first token is kept apart)
    reasoning: bool = False
    usage: Usage | None = None
    continuation: Continuation | None = None
    #: called once when the stream ends (budgets settle here)
    on_finish: Callable[[bool, Usage | None], Awaitable[None]] | None = None
    #: set when a continuation model finished the answer
    continued_by: RoutedStream | None = None
    #: the request's input tokens (estimated) and the answer's characters received so far: a stream
    #: that ends without the upstream's usage (the client left, a timeout, a cut) is charged these
    input_tokens: int = 0
    output_chars: int = 0
    _closed: bool = field(default=False)

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        """Every chunk, in order. A failure after content started continues or raises the original error.

        The answer's text so far is kept only when a continuation may need it (a fallback that can
        continue a prefill): it grows with the answer, and a slow client's stream lives long."""
        partial: list[str] | None = [] if self.continuation is not None else None
        tool_call_seen = False
        finished = False
        try:
            async for chunk in self._own_chunks():
                if chunk.raw is not None:  # a pass-through chunk: one plain choice, read by the provider
                    if chunk.text and partial is not None:
                        partial.append(chunk.text)
                    finished = finished or chunk.finished
                else:
                    for c in chunk.choices:
                        if c.content and partial is not None:
                            partial.append(c.content)
                        if c.tool_calls:
                            tool_call_seen = True
                        if c.finish_reason:
                            finished = True
                yield chunk
        except ModelyardError as exc:
            if finished or tool_call_seen or self.continuation is None or partial is None:
                raise
            follow = await self.continuation(exc, "".join(partial))
            if follow is None:
                raise
            self.continued_by = follow
            async for chunk in follow.chunks():
                if chunk.usage is not None:
                    self.usage = _add(self.usage, chunk.usage)
                for c in chunk.choices:
                    c.role = None  # the client already has the role chunk
                chunk.raw = None  # changed: no longer the upstream's bytes
                yield chunk

    async def _own_chunks(self) -> AsyncIterator[ChatChunk]:
        dep = self.result.deployment
        stall = dep.stall_timeout_s
        ok = False
        error: BaseException | None = None
        try:
            ready = False  # the next chunk has arrived already (no stall timer needed to wait for it)
            head, self.head = self.head, []
            for chunk in head:
                self._count(chunk)
                ready = chunk.more
                yield chunk
            del head  # what was held back is not kept for the rest of the stream
            while True:
                try:
                    if stall is not None and not ready:
                        async with asyncio.timeout(stall):
                            chunk = await anext(self.tail)
                    else:
                        chunk = await anext(self.tail)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise stalled(dep, stall) from None
                self._count(chunk)
                ready = chunk.more
                yield chunk
            ok = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._finish(ok, error)

    def _count(self, chunk: ChatChunk) -> None:
        """The usage and answer characters a chunk brings (a pass-through chunk has no usage)."""
        if chunk.raw is not None:
            if chunk.text:
                self.output_chars += len(chunk.text)
            return
        if chunk.usage is not None:
            self.usage = chunk.usage
        for c in chunk.choices:
            if c.content:
                self.output_chars += len(c.content)

    async def abort(self) -> None:
        """Release everything if the stream was not consumed to the end (idempotent)."""
        await self._finish(False, None)
        if self.continued_by is not None:
            await self.continued_by.abort()

    async def _finish(self, ok: bool, error: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        dep = self.result.deployment
        latency = (time.perf_counter() - self.started) * 1000
        attempt = self.result.attempts[-1]
        if self.usage is None and not ok:
            # The upstream was answering when the stream ended (client gone, stall, cut): it bills
            # what it produced, so this is charged too: the input estimate plus the output received.
            n_out = (self.output_chars + 3) // 4
            self.usage = Usage(self.input_tokens, n_out, self.input_tokens + n_out, estimated=True)
        attempt.latency_ms = latency
        attempt.usage = self.usage
        self.result.upstream_s += latency / 1000
        dep.state.stats.finish()
        if ok:
            dep.state.stats.record(ok=True, latency_ms=latency, ttft_ms=self.ttft_ms, reasoning=self.reasoning)
            dep.state.breaker.record_success()
        elif isinstance(error, ModelyardError):
            attempt.ok = False
            attempt.error_class = error.kind if isinstance(error, UpstreamError) else type(error).__name__
            attempt.message = error.message
            dep.state.stats.record(ok=False, latency_ms=latency, ttft_ms=self.ttft_ms, error=error.message)
            dep.state.breaker.record_failure()
        else:  # the client went away: says nothing about the model
            dep.state.breaker.release_probe()
        self.slot.release(self.usage.total_tokens if self.usage else None)
        if self.on_finish is not None:
            await self.on_finish(ok, self.usage)
        aclose = getattr(self.tail, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # closing a broken upstream must not mask the real outcome
                pass


def _add(a: Usage | None, b: Usage) -> Usage:
    if a is None:
        return b
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        cache_write_1h_tokens=a.cache_write_1h_tokens + b.cache_write_1h_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        estimated=a.estimated or b.estimated,
    )
