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
import math
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from modelyard.errors import (
    AllAttemptsFailedError,
    ModelyardError,
    PaymentRequiredError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamValidationError,
)
from modelyard.providers.base import CallOptions
from modelyard.routing.auto import TierChoice
from modelyard.routing.capability import EMBEDDING_NEEDS, chat_needs
from modelyard.routing.deployment import Deployment, Route
from modelyard.routing.limiter import Slot
from modelyard.routing.options import RequestOptions
from modelyard.routing.plan import Plan, plan_for
from modelyard.routing.policy import Decision, RetryPolicy
from modelyard.routing.shared import Admission, Coordinator
from modelyard.routing.streams import Continuation, RoutedStream, stalled
from modelyard.routing.ttft import first_token_limit
from modelyard.types import ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, Message, Usage
from modelyard.validators import ValidationFailed, Validator, build_validators

__all__ = ["Attempt", "AttemptHooks", "Judge", "RouteResult", "RoutedStream", "Router", "estimate_tokens"]


class Judge(Protocol):
    """Scores an answer before it is served (an ``auto`` route's LLM judge, injected by the gateway).

    Raises :class:`~modelyard.errors.UpstreamValidationError` to reject the answer: the request
    moves on to the next candidate (the next tier up), like a validator's rejection."""

    async def __call__(self, dep: Deployment, texts: list[str]) -> None: ...


class AttemptHooks(Protocol):
    """Called around every upstream attempt (budgets reserve before and settle after).

    ``before`` may raise :class:`~modelyard.errors.RateLimitError` or
    :class:`~modelyard.errors.PaymentRequiredError` to refuse the candidate before any
    upstream call (it is then skipped, not counted as an attempt).  ``after`` gets the attempt's usage
    (None on failure); for streams it runs when the stream ends.
    """

    async def before(self, dep: Deployment) -> Any: ...

    async def after(self, dep: Deployment, token: Any, usage: Usage | None, *, ok: bool) -> None: ...


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
    #: the upstream's Retry-After (seconds) of a 429/503/529
    retry_after: float | None = None
    #: when the attempt started (time.time_ns, for trace spans)
    start_ns: int = 0

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
    #: strategy auto: the tier chosen for the prompt (None on other routes)
    choice: TierChoice | None = None

    @property
    def fallback(self) -> bool:
        """True when the answer did not come from the first choice (a same-model retry is not a fallback)."""
        return self.deployment.name != self.first_choice


def _input_tokens(req: ChatRequest) -> int:
    return estimate_tokens(req) - (req.max_tokens or 256)


def _begins_with_reasoning(head: list[ChatChunk]) -> bool:
    """Whether a stream's first token (contracts "First token") is reasoning."""
    for chunk in head:
        if chunk.raw is not None:  # a pass-through chunk holds no reasoning
            if chunk.has_output():
                return False
            continue
        for d in chunk.choices:
            if d.has_output():
                return bool(d.reasoning or d.redacted_reasoning)
    return False


def _unknown_usage(exc: BaseException, req: ChatRequest) -> Usage | None:
    """What a failed non-streamed attempt is charged: the input estimate when the upstream had the
    request and was working on it (the client left, or a timeout after the request was sent: the
    provider bills it), nothing when it answered with an error or was never reached."""
    sent = isinstance(exc, asyncio.CancelledError) or (
        isinstance(exc, UpstreamTimeoutError) and exc.phase not in ("connect", "load", "deadline")
    )
    if not sent:
        return None
    n_in = _input_tokens(req)
    return Usage(n_in, 0, n_in, estimated=True)


def _rejected_usage(req: ChatRequest, usage: Usage | None, texts: list[str]) -> Usage:
    """What an answer the gateway did not serve (an output validator or a judge rejected it, or a
    stream held back whole failed after its output began) is charged: the provider bills it all the
    same.  The upstream's usage when it came, else estimated input + the output (4 characters a token)."""
    if usage is not None:
        return usage
    n_in = _input_tokens(req)
    n_out = -(-sum(len(t) for t in texts) // 4)
    return Usage(n_in, n_out, n_in + n_out, estimated=True)


def _held_back_usage(exc: BaseException, req: ChatRequest, head: list[ChatChunk]) -> Usage | None:
    """What a streamed attempt that failed before anything was served is charged: as a non-streamed
    one (:func:`_unknown_usage`) while nothing came, as a rejected answer once output came."""
    usage = next((c.usage for c in reversed(head) if c.usage is not None), None)
    texts = [c.content for ch in head for c in ch.choices if c.content]
    if usage is None and not texts:
        return _unknown_usage(exc, req)
    return _rejected_usage(req, usage, texts)


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


def estimate_embedding_tokens(req: EmbeddingRequest) -> int:
    """A fast estimate of an embedding request's tokens (about 4 characters a token), for rate limits."""
    return sum(len(x) // 4 + 1 if isinstance(x, str) else len(x) for x in req.input)


def _error_class(exc: ModelyardError) -> str:
    if isinstance(exc, UpstreamError):
        return exc.kind
    return type(exc).__name__.removesuffix("Error").lower()


def _status_of(exc: ModelyardError) -> int | None:
    upstream = getattr(exc, "upstream_status", None)
    return int(upstream) if upstream is not None else None


#: a request refused by the fleet's concurrency limit looks again after this long, doubling up to
#: _SHARED_POLL_MAX_S while it keeps being refused (with jitter, so waiters do not move in step)
_SHARED_POLL_S = 0.02
_SHARED_POLL_MAX_S = 0.16


class Router:
    """Tries a plan's candidates in order until one answers, within the route's limits."""

    def __init__(self, policy: RetryPolicy | None = None, shared: Coordinator | None = None) -> None:
        self.policy = policy or RetryPolicy()
        #: limits and breakers shared with the other replicas (state: redis://; None: this process only)
        self.shared = shared

    # -- the attempt loop -----------------------------------------------------------------

    async def run(
        self, plan: Plan, est_tokens: int, call: Any, attempts: list[Attempt] | None = None
    ) -> tuple[Any, RouteResult, Slot]:
        """Run ``call(deployment, remaining_s, attempt)`` over the candidates; return its value, the
        result and the held slot.

        ``call`` may set ``attempt.usage`` when it fails: what the failed attempt was charged (the
        same figure its budgets settled). ``attempts``: an empty list the attempts are appended to
        as they end, for a caller that must record them when it is cancelled (the cancelled attempt
        is appended too, as ``client_closed``); a failure carries them in its ``records``. The
        caller releases the slot (for streams, when the stream ends).
        """
        route = plan.route
        candidates = plan.candidates
        if not candidates:
            if plan.local_only:
                raise ServiceUnavailableError(
                    f"local_only is enforced and route {route.name!r} has no local model "
                    f"(left out: {', '.join(plan.excluded) or 'none'}); nothing was sent to a cloud provider"
                )
            raise ServiceUnavailableError(f"route {route.name!r} has no model to try")
        deadline = time.monotonic() + plan.timeout_s if plan.timeout_s else None
        result = RouteResult(
            route=route.name,
            deployment=candidates[0],
            attempts=[] if attempts is None else attempts,
            first_choice=candidates[0].name,
        )
        queue = _health_ordered(candidates)
        tries: dict[str, int] = {}
        skipped: list[str] = []
        last: ModelyardError | None = None
        rejected: RateLimitError | PaymentRequiredError | None = None
        while queue and len(result.attempts) < plan.max_attempts:
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
            attempt = Attempt(number, dep.name, dep.provider.name, ok=False, latency_ms=0.0, start_ns=time.time_ns())
            start = time.perf_counter()
            try:
                value = await call(dep, remaining, attempt)
            except (RateLimitError, PaymentRequiredError) as exc:
                # Refused by modelyard before any upstream call (a budget, max_cost): not an attempt; next candidate.
                dep.state.stats.finish()
                dep.state.breaker.release_probe()
                slot.release(0)
                if dep in queue:
                    queue.remove(dep)
                rejected = exc
                continue
            except ModelyardError as exc:
                elapsed = (time.perf_counter() - start) * 1000
                result.upstream_s += elapsed / 1000
                dep.state.stats.finish()
                slot.release(0)
                last = exc
                attempt.latency_ms = elapsed
                attempt.error_class = _error_class(exc)
                attempt.status = _status_of(exc)
                attempt.message = exc.message
                attempt.retry_after = getattr(exc, "retry_after", None)
                result.attempts.append(attempt)
                decision = self.policy.decide(exc, dep, tries[dep.name], route, deadline)
                if isinstance(exc, UpstreamValidationError):
                    dep.state.stats.record_rejection()  # a quality figure (/v1/status), not a health signal
                if decision.counts_against_model:
                    dep.state.stats.record(ok=False, latency_ms=elapsed, error=exc.message)
                    dep.state.breaker.record_failure()
                else:
                    dep.state.breaker.release_probe()
                await self._apply(decision, dep, queue)
                if decision.final:
                    raise decision.final_error or exc from None
                continue
            except BaseException as exc:
                dep.state.stats.finish()
                dep.state.breaker.release_probe()
                slot.release(0)
                # cancelled (the client left) with the upstream at work: recorded, with what the call
                # charged, for the caller that passed ``attempts``
                attempt.latency_ms = (time.perf_counter() - start) * 1000
                if isinstance(exc, asyncio.CancelledError):
                    attempt.error_class = "client_closed"
                    attempt.message = "cancelled while the upstream was working on it"
                else:
                    attempt.error_class = type(exc).__name__
                result.attempts.append(attempt)
                raise
            dep.provider.traffic_ok_at = time.monotonic()  # a chat_probe health check can skip
            attempt.ok = True
            attempt.latency_ms = (time.perf_counter() - start) * 1000
            result.attempts.append(attempt)
            result.deployment = dep
            return value, result, slot
        if rejected is not None and not result.attempts:
            raise rejected
        raise self._exhausted(plan, result, last, skipped)

    async def _acquire(
        self,
        queue: list[Deployment],
        est_tokens: int,
        deadline: float | None,
        skipped: list[str],
    ) -> tuple[Deployment | None, Slot | None]:
        """A candidate and its slot (see :meth:`_acquire_once`); with shared limits, waits while
        the fleet's limits refuse every candidate that had room here, within the queue timeout."""
        began = time.monotonic()
        poll = _SHARED_POLL_S
        while True:
            refused: list[tuple[Deployment, Admission]] = []
            dep, slot = await self._acquire_once(queue, est_tokens, deadline, skipped, refused)
            if dep is not None or not refused:
                return dep, slot
            budget = max(d.state.limiter.queue_timeout_s for d, _ in refused) - (time.monotonic() - began)
            if deadline is not None:
                budget = min(budget, deadline - time.monotonic())
            waits: list[float] = []
            for _, a in refused:
                if a.reason == "concurrency":
                    waits.append(poll * (0.5 + random.random()))  # a slot frees when a request ends
                else:  # rpm or tpm: when the window admits it; never (None) for more than tpm
                    waits.append(math.inf if a.retry_after is None else a.retry_after)
            wait = min(waits)
            if wait > budget and all(a.reason == "concurrency" for _, a in refused) and budget > 0.001:
                wait = budget  # one last look when the queue timeout ends
            if wait > budget:
                d, a = refused[0]
                blocker = {"concurrency": "max_concurrency"}.get(a.reason or "", a.reason or "limit")
                raise RateLimitError(
                    f"model {d.name!r}: the fleet's {blocker} limit is reached (shared across replicas); retry later",
                    retry_after=a.retry_after if a.reason != "concurrency" else 1.0,
                )
            await asyncio.sleep(wait)
            poll = min(poll * 2, _SHARED_POLL_MAX_S)

    async def _acquire_once(
        self,
        queue: list[Deployment],
        est_tokens: int,
        deadline: float | None,
        skipped: list[str],
        refused: list[tuple[Deployment, Admission]],
    ) -> tuple[Deployment | None, Slot | None]:
        """The first candidate whose breaker allows a call and that has capacity now; else wait on the first one."""
        shared = self.shared
        waitable: Deployment | None = None
        for dep in list(queue):
            breaker = dep.state.breaker
            if shared is not None:
                shared.watch(dep)
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
            if shared is not None and not await self._shared(dep, slot, est_tokens, queue, skipped, refused):
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
            return await self._acquire_once(queue, est_tokens, deadline, skipped, refused)
        if not waitable.state.breaker.allow():
            slot.release(0)
            queue.remove(waitable)
            skipped.append(waitable.name)
            return await self._acquire_once(queue, est_tokens, deadline, skipped, refused)
        if shared is not None and not await self._shared(waitable, slot, est_tokens, queue, skipped, refused):
            return await self._acquire_once(
                [d for d in queue if d is not waitable], est_tokens, deadline, skipped, refused
            )
        return waitable, slot

    async def _shared(
        self,
        dep: Deployment,
        slot: Slot,
        est_tokens: int,
        queue: list[Deployment],
        skipped: list[str],
        refused: list[tuple[Deployment, Admission]],
    ) -> bool:
        """The fleet's side of a local grant: one replica probes a half-open breaker, and the
        model's shared limits admit the request (the admission is released with the slot).
        False (slot given back) when the fleet says no."""
        shared = self.shared
        assert shared is not None
        breaker = dep.state.breaker
        if breaker.state == "half_open" and not await shared.claim_probe(dep):
            slot.release(0)
            breaker.release_probe()
            queue.remove(dep)
            skipped.append(dep.name)  # another replica is probing it
            return False
        limiter = dep.state.limiter
        admission = await shared.admit(
            f"m:{dep.name}",
            rpm=limiter.rpm,
            tpm=limiter.tpm,
            max_concurrency=limiter.max_concurrency,
            est_tokens=est_tokens,
        )
        if not admission.granted:
            slot.release(0)
            breaker.release_probe()
            refused.append((dep, admission))
            return False
        if admission.lease:
            slot.on_release = lambda tokens: shared.release(admission, tokens)
        return True

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
        self, plan: Plan, result: RouteResult, last: ModelyardError | None, skipped: list[str]
    ) -> ModelyardError:
        route = plan.route
        final = self.policy.final_error(last, result.attempts)
        if final is not None:
            return final
        attempts = [a.public() for a in result.attempts]
        attempts += [{"model": name, "error": "circuit_open", "status": None, "message": None} for name in skipped]
        local = (
            f" local_only was enforced: no cloud model was tried (left out: {', '.join(plan.excluded)})."
            if plan.local_only and plan.excluded
            else ""
        )
        # when a candidate frees: the shortest breaker cooldown, the earliest upstream Retry-After
        by_name = {d.name: d for d in plan.candidates}
        cooldowns = [by_name[n].state.breaker.retry_after() for n in skipped if n in by_name]
        waits = [w for w in (*cooldowns, *(a.retry_after for a in result.attempts)) if w is not None]
        retry_after = min(waits) if waits else None
        if not result.attempts:
            if isinstance(last, RateLimitError):
                return last
            return AllAttemptsFailedError(
                f"no model of route {route.name!r} can take the request now "
                f"({', '.join(skipped) or 'none'} unavailable: circuit open); try again shortly.{local}",
                attempts=attempts,
                last=ServiceUnavailableError("circuit open"),
                records=result.attempts,
                retry_after=retry_after,
            )
        summary = "; ".join(f"{a.model}: {a.error_class}{f' {a.status}' if a.status else ''}" for a in result.attempts)
        # every candidate refused for rate limits (and none skipped for a breaker): 429, so clients back off
        rate_limited = not skipped and all(a.status == 429 for a in result.attempts)
        return AllAttemptsFailedError(
            f"all {len(result.attempts)} attempts on route {route.name!r} failed ({summary}). "
            f"Last error: {last.message if last else 'unknown'}.{local}",
            attempts=attempts,
            last=last,
            records=result.attempts,
            rate_limited=rate_limited,
            retry_after=retry_after if rate_limited or isinstance(last, UpstreamStatusError) else None,
        )

    # -- the three kinds of call --------------------------------------------------------------

    async def chat(
        self,
        route: Route,
        req: ChatRequest,
        opts: RequestOptions,
        hooks: AttemptHooks | None = None,
        *,
        choice: TierChoice | None = None,
        judge: Judge | None = None,
        order: Sequence[Deployment] | None = None,
        attempts: list[Attempt] | None = None,
    ) -> tuple[ChatResponse, RouteResult]:
        """``choice``: an auto route's tier (its order replaces the strategy's); ``order``: the
        candidates' order decided by the gateway (a canary first); ``judge``: scores each answer
        before it is served (a rejection fails over like a validator's); ``attempts``: see :meth:`run`."""
        order = choice.order if choice is not None else order
        plan = plan_for(route, opts, stream=False, needs=chat_needs(req), order=order)
        validators = _validators(route, req)

        async def call(dep: Deployment, remaining: float | None, attempt: Attempt) -> ChatResponse:
            token = await hooks.before(dep) if hooks is not None else None
            try:
                response = await dep.provider.chat(req, dep.upstream, _call_options(dep, remaining))
            except BaseException as exc:
                # one figure for the budgets and the attempt's usage record
                attempt.usage = _unknown_usage(exc, req)
                if hooks is not None:
                    await hooks.after(dep, token, attempt.usage, ok=False)
                raise
            if validators or judge is not None:
                texts = [c.message.text() for c in response.choices if not c.message.tool_calls]
                try:
                    _validate(validators, texts, dep)
                    if judge is not None and texts:
                        await judge(dep, texts)
                except BaseException:
                    # rejected (or given up while judged): the model answered and its provider bills it
                    attempt.usage = _rejected_usage(req, response.usage, texts)
                    if hooks is not None:
                        await hooks.after(dep, token, attempt.usage, ok=False)
                    raise
            if hooks is not None:
                await hooks.after(dep, token, response.usage, ok=True)
            return response

        response, result, slot = await self.run(plan, estimate_tokens(req), call, attempts)
        result.choice = choice
        _settle(result, slot, response.usage, latency_ms=None)
        return response, result

    async def stream(
        self,
        route: Route,
        req: ChatRequest,
        opts: RequestOptions,
        hooks: AttemptHooks | None = None,
        *,
        choice: TierChoice | None = None,
        judge: Judge | None = None,
        order: Sequence[Deployment] | None = None,
        attempts: list[Attempt] | None = None,
    ) -> RoutedStream:
        """As :meth:`chat`; the judge scores only streams held back whole (routes with validators).
        An attempt that fails before anything is served is charged as a non-streamed one, or as a
        rejected answer once output came (``_held_back_usage``; ``attempts``: see :meth:`run`)."""
        order = choice.order if choice is not None else order
        plan = plan_for(
            route, opts, stream=True, needs=chat_needs(req), reasoning=req.asks_for_reasoning(), order=order
        )
        validators = _validators(route, req)
        routed = await self._stream_plan(plan, req, validators, hooks, judge if validators else None, attempts)
        routed.result.choice = choice
        if plan.fallback and (req.n or 1) == 1 and any(d.config.supports_prefill for d in plan.candidates):
            # only then is the partial answer kept (RoutedStream.chunks): it grows with the answer
            routed.continuation = self._continuation(plan, req, routed, hooks)
        return routed

    async def _stream_plan(
        self,
        plan: Plan,
        req: ChatRequest,
        validators: list[Validator],
        hooks: AttemptHooks | None,
        judge: Judge | None = None,
        attempts: list[Attempt] | None = None,
    ) -> RoutedStream:
        started: dict[str, float] = {}
        tokens: dict[str, Any] = {}

        async def call(
            dep: Deployment, remaining: float | None, attempt: Attempt
        ) -> tuple[list[ChatChunk], AsyncIterator[ChatChunk]]:
            token = await hooks.before(dep) if hooks is not None else None
            started["t"] = time.perf_counter()
            head: list[ChatChunk] = []
            try:
                iterator = await _open_stream(dep, req, remaining, validators, plan.route.config.ttft_timeout_s, head)
                if judge is not None and not any(c.tool_calls for ch in head for c in ch.choices):
                    try:
                        await judge(dep, ["".join(c.content or "" for ch in head for c in ch.choices)])
                    except BaseException:
                        await _aclose(iterator)
                        raise
            except BaseException as exc:
                # one figure for the budgets and the attempt's usage record (as a non-streamed call)
                attempt.usage = _held_back_usage(exc, req, head)
                if hooks is not None:
                    await hooks.after(dep, token, attempt.usage, ok=False)
                raise
            tokens["t"] = token
            return head, iterator

        (head, tail), result, slot = await self.run(plan, estimate_tokens(req), call, attempts)
        ttft_ms = (time.perf_counter() - started["t"]) * 1000
        result.attempts[-1].ttft_ms = ttft_ms
        on_finish = None
        if hooks is not None:
            dep, token = result.deployment, tokens.get("t")

            async def on_finish(ok: bool, usage: Usage | None) -> None:
                await hooks.after(dep, token, usage, ok=ok)

        return RoutedStream(
            result=result,
            head=head,
            tail=tail,
            slot=slot,
            started=started["t"],
            ttft_ms=ttft_ms,
            reasoning=req.asks_for_reasoning() or _begins_with_reasoning(head),
            on_finish=on_finish,
            input_tokens=_input_tokens(req),
        )

    def _continuation(
        self, plan: Plan, req: ChatRequest, original: RoutedStream, hooks: AttemptHooks | None
    ) -> Continuation:
        async def continue_stream(error: ModelyardError, partial: str) -> RoutedStream | None:
            failed = original.result.deployment
            candidates = [d for d in plan.candidates if d.config.supports_prefill and d is not failed]
            if not candidates or not partial:
                return None
            follow_req = replace(req, messages=[*req.messages, Message(role="assistant", content=partial)])
            follow_plan = replace(plan, candidates=candidates, max_attempts=min(2, len(candidates)))
            try:
                follow = await self._stream_plan(follow_plan, follow_req, [], hooks)
            except ModelyardError:
                return None  # the client sees the original failure, not the continuation's rejection
            original.result.attempts.extend(follow.result.attempts)
            return follow

        return continue_stream

    async def embed(
        self,
        route: Route,
        req: EmbeddingRequest,
        opts: RequestOptions,
        hooks: AttemptHooks | None = None,
        attempts: list[Attempt] | None = None,
    ) -> tuple[EmbeddingResponse, RouteResult]:
        """A failed embedding call charges nothing (``attempts``: see :meth:`run`)."""
        plan = plan_for(route, opts, stream=False, needs=EMBEDDING_NEEDS)

        async def call(dep: Deployment, remaining: float | None, attempt: Attempt) -> EmbeddingResponse:
            token = await hooks.before(dep) if hooks is not None else None
            try:
                response = await dep.provider.embed(req, dep.upstream, _call_options(dep, remaining))
            except BaseException:
                if hooks is not None:
                    await hooks.after(dep, token, None, ok=False)
                raise
            if hooks is not None:
                await hooks.after(dep, token, response.usage, ok=True)
            return response

        response, result, slot = await self.run(plan, estimate_embedding_tokens(req), call, attempts)
        _settle(result, slot, response.usage, latency_ms=None)
        return response, result


def _settle(result: RouteResult, slot: Slot, usage: Usage | None, latency_ms: float | None) -> None:
    """A non-streaming success: figures, breaker and slot."""
    dep = result.deployment
    attempt = result.attempts[-1]
    attempt.usage = usage
    result.upstream_s += attempt.latency_ms / 1000
    dep.state.stats.finish()
    dep.state.stats.record(ok=True, latency_ms=attempt.latency_ms)
    dep.state.breaker.record_success()
    slot.release(usage.total_tokens if usage else None)


async def _open_stream(
    dep: Deployment,
    req: ChatRequest,
    remaining: float | None,
    validators: list[Validator],
    route_ttft: float | None,
    head: list[ChatChunk],
) -> AsyncIterator[ChatChunk]:
    """Open the upstream stream and hold it back in ``head`` until its first content (or whole, with
    validators); the rest of the stream.  ``head`` keeps what came when it fails."""
    iterator = dep.provider.stream(req, dep.upstream, _call_options(dep, remaining)).__aiter__()
    ttft: float | None = first_token_limit(dep, reasoning=req.asks_for_reasoning(), route_override=route_ttft).seconds
    if remaining is not None:
        ttft = min(ttft, remaining) if ttft is not None else remaining
    opened = time.monotonic()
    try:
        async with asyncio.timeout(ttft):
            ended = await _read_head(iterator, head)
        if validators and not ended:
            # held back whole: only the first token is bound by the first-token limit, the rest by
            # the stall timeout and the request's time left (a long answer is not "no first token")
            left = None if remaining is None else max(0.0, remaining - (time.monotonic() - opened))
            await _read_rest(iterator, head, dep, left)
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
    if validators and not any(c.tool_calls for ch in head for c in ch.choices):
        # Validated streams are held back whole: nothing reaches the client until the answer passed.
        try:
            _validate(validators, ["".join(c.content or "" for ch in head for c in ch.choices)], dep)
        except BaseException:
            await _aclose(iterator)
            raise
    return iterator


async def _read_head(iterator: AsyncIterator[ChatChunk], head: list[ChatChunk]) -> bool:
    """Read until the first chunk with output; whether the stream ended (before or with it)."""
    while True:
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return True
        head.append(chunk)
        if chunk.has_output():
            return False


async def _read_rest(
    iterator: AsyncIterator[ChatChunk], head: list[ChatChunk], dep: Deployment, left: float | None
) -> None:
    """Read the rest of a stream held back whole: each chunk within the model's stall timeout, the
    whole within ``left`` (the request's time left; None: unbounded)."""
    stall = dep.stall_timeout_s
    try:
        async with asyncio.timeout(left):
            while True:
                try:
                    async with asyncio.timeout(stall):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise stalled(dep, stall) from None
                head.append(chunk)
    except TimeoutError:
        raise UpstreamTimeoutError(
            f"{dep.provider.name}: the answer of {dep.name!r} did not end within the request's time left",
            provider=dep.provider.name,
            model=dep.name,
        ) from None


def _validators(route: Route, req: ChatRequest) -> list[Validator]:
    if not route.config.validators:
        return []
    schema = route.config.json_schema
    if schema is None and req.response_format is not None and req.response_format.type == "json_schema":
        schema = req.response_format.schema
    if "json_schema" in route.config.validators and schema is not route.config.json_schema:
        return build_validators(route.config.validators, json_schema=schema)
    return route.validators


def _validate(validators: list[Validator], texts: list[str], dep: Deployment) -> None:
    for text in texts:
        for validator in validators:
            try:
                validator(text)
            except ValidationFailed as exc:
                raise UpstreamValidationError(
                    f"the answer of {dep.name!r} failed validation: {exc.reason}",
                    provider=dep.provider.name,
                    model=dep.name,
                ) from None


def _health_ordered(candidates: list[Deployment]) -> list[Deployment]:
    """Candidates whose provider fails its active health check go last (still tried if nothing else works)."""
    if all(d.provider.health_state.ok for d in candidates):
        return list(candidates)
    healthy = [d for d in candidates if d.provider.health_state.ok]
    return healthy + [d for d in candidates if not d.provider.health_state.ok]


def _call_options(dep: Deployment, remaining: float | None) -> CallOptions:
    if remaining is None or remaining >= dep.call.timeout_s:
        return dep.call
    return CallOptions(
        timeout_s=max(0.001, remaining),
        connect_timeout_s=min(dep.call.connect_timeout_s, remaining),
        reasoning=dep.call.reasoning,
    )


async def _aclose(iterator: AsyncIterator[ChatChunk]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream stream must not mask the real error
            pass
