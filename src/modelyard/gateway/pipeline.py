"""The request pipeline: the one place that knows what serving a request means.

Every front end (the HTTP server, the in-process SDK, later comparison runs) hands the pipeline a
request in the internal shape, the caller's :class:`~modelyard.gateway.auth.Principal` and the
parsed :class:`~modelyard.routing.options.RequestOptions`; the pipeline does the rest, in order:

1. pin the current runtime (a reload while the request runs leaves it on the config it started on);
2. resolve the route: the ``route`` option, the ``default`` alias, a route, a model or
   ``provider:model``, then the task map;
3. check the caller's access (allowed routes and models) and the key's own rpm/tpm;
4. open the request's accounting (cost estimate, budget reservations, ``max_cost_usd``);
5. answer from the response cache when the route caches and the entry is there;
6. route (attempts, failover, validators), then settle the budgets and write one usage record;
7. store a cacheable answer.

The front ends only translate: their wire format in, :class:`Served` / :class:`ServedStream` /
:class:`ServedEmbeddings` out.  A stream's cleanup (upstream, runtime pin, usage record, cache)
runs exactly once in :meth:`ServedStream.aclose`, whether the stream ended, failed, or its reader
left early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from modelyard.accounting.budgets import Scope
from modelyard.accounting.pricing import cost, estimate_embedding_input_tokens
from modelyard.accounting.service import Accountant, RequestAccounting
from modelyard.cache.base import CachedResponse, ResponseCache, assemble_response, cache_key, replay_chunks
from modelyard.config.schema import JudgeConfig
from modelyard.errors import ClientClosedError, InvalidRequestError, ModelyardError
from modelyard.gateway.auth import ANONYMOUS, Authenticator, Principal
from modelyard.gateway.auto import RequestJudge, choose_tier
from modelyard.gateway.experiments import ShadowRunner, canary_order, shadow_request
from modelyard.ids import IdFactory
from modelyard.routing.auto import TierChoice
from modelyard.routing.deployment import Deployment, Route
from modelyard.routing.options import RequestOptions
from modelyard.routing.router import Attempt, Router, RouteResult, estimate_embedding_tokens, estimate_tokens
from modelyard.routing.streams import RoutedStream
from modelyard.runtime import Runtime, RuntimeHolder
from modelyard.scrub import use as use_scrubber
from modelyard.types import ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, Usage

if TYPE_CHECKING:
    from modelyard.observability.tracing import RequestSpan, Tracing

__all__ = ["Pipeline", "PipelineServices", "Served", "ServedEmbeddings", "ServedStream", "resolve_route"]


class PipelineServices(Protocol):
    """What the pipeline uses of a gateway's services (the server's ``Services``, the SDK's too)."""

    @property
    def auth(self) -> Authenticator: ...

    @property
    def accountant(self) -> Accountant: ...

    @property
    def cache(self) -> ResponseCache: ...


def resolve_route(rt: Runtime, model: str, opts: RequestOptions) -> Route:
    """The route a request asks for: the ``route`` option over the body's model, ``default`` (or no
    model at all) as the configured default route, then the task map."""
    target = opts.route or model
    if not target:  # a chat body without a model: the default route, when one is configured
        if not rt.default_route:
            raise InvalidRequestError(
                "you must provide a model parameter: a route, a model, or provider:model (see GET /v1/models); "
                "or the operator sets default_route",
                param="model",
                code="missing_required_parameter",
            )
        target = rt.default_route
    if target == "default" and "default" not in rt.routes and rt.default_route:
        target = rt.default_route
    route = rt.resolve(target)
    return rt.for_task(route, opts.task) if opts.task else route


def _refuse_unpriced_adhoc(route: Route, accountant: Accountant, principal: Principal) -> None:
    """D5: an ad-hoc ``provider:model`` with no price, under a USD budget of the caller, would be
    served and counted as $0, walking around the budget: refuse it (400) before anything is sent."""
    dep = route.pool[0]
    free = dep.config.free if dep.config.free is not None else dep.provider.is_local
    if free or dep.price is not None:
        return
    budget = accountant.usd_budget_for(Scope(principal.org_id, principal.key_id, route.name, dep.name))
    if budget is not None:
        raise InvalidRequestError(
            f"{route.name!r} has no price, and the USD budget {budget!r} applies to this request: its cost "
            "could not be counted. Use a configured model, or ask the operator to configure this one with "
            "a price (input_cost_per_mtok/output_cost_per_mtok) or free: true",
            param="model",
            code="model_not_priced",
        )


def _output_chars(routed: RoutedStream) -> int:
    """The answer's characters received (the routed streams count them as they pass)."""
    n = routed.output_chars
    follow = routed.continued_by
    while follow is not None:
        n += follow.output_chars
        follow = follow.continued_by
    return n


def _closed() -> ClientClosedError:
    return ClientClosedError("the client closed the connection before the answer started")


def _cost(dep: Deployment, usage: Usage | None) -> float:
    return cost(dep.price, usage) if usage is not None else 0.0


def _failed_usd(rt: Runtime, attempts: list[Attempt]) -> float:
    """What the attempts that failed before the answer were charged (an answer a validator or the
    judge rejected, ...): part of the request's cost, as in its usage record."""
    usd = 0.0
    if len(attempts) < 2:  # the answer's own attempt only: the common case
        return usd
    for a in attempts:
        if not a.ok and a.usage is not None:
            dep = rt.models.get(a.model)
            if dep is not None:
                usd += _cost(dep, a.usage)
    return usd


@dataclass(slots=True)
class Served:
    """A finished chat answer and how it was obtained."""

    request_id: str
    response: ChatResponse
    #: the configured model that answered (the cached answer's model on a hit)
    model: str
    #: the provider that answered; ``cache`` on a hit
    provider: str
    route: str
    attempts: list[Attempt]
    fallback: bool
    overhead_ms: float
    #: ``hit``, ``miss``, ``bypass``, or None when the route does not cache
    cache: str | None
    cost_usd: float
    #: strategy auto: the tier chosen for the prompt (headers X-Modelyard-Tier/-Complexity/-Tier-Reason)
    tier: TierChoice | None = None
    tier_reason: str | None = None


@dataclass(slots=True)
class ServedEmbeddings:
    request_id: str
    response: EmbeddingResponse
    model: str
    provider: str
    route: str
    attempts: list[Attempt]
    fallback: bool
    overhead_ms: float
    cost_usd: float


@dataclass(slots=True)
class ServedStream:
    """A started stream: iterate :meth:`chunks` once, then (always) :meth:`aclose`.

    ``aclose`` is idempotent and safe to call before, during or after iteration; it releases the
    upstream connection, the model slot and the runtime pin, settles the budgets and writes the
    usage record.
    """

    request_id: str
    model: str
    provider: str
    route: str
    attempts: list[Attempt]
    fallback: bool
    #: modelyard's own time up to the first byte of the answer
    overhead_ms: float
    cache: str | None
    _pipeline: Pipeline
    _rt: Runtime | None
    _routed: RoutedStream | None = None
    _hit: ChatResponse | None = None
    _acct: RequestAccounting | None = None
    _cache_key: str | None = None
    _cache_ttl: float | None = None
    _kept: list[ChatChunk] | None = None
    #: the error that ended the stream early, once it has
    error: ModelyardError | None = None
    _closed: bool = False
    _iterated: bool = False
    #: the request's trace span (tracing on), ended when the stream closes
    _span: RequestSpan | None = None
    #: strategy auto: the tier chosen for the prompt, and why
    tier: TierChoice | None = None
    tier_reason: str | None = None
    #: what judging the answer cost (strategy auto with a judge)
    _judge_usd: float = 0.0
    #: what the attempts that failed before this one were charged
    _failed_usd: float = 0.0

    @property
    def usage(self) -> Usage | None:
        if self._hit is not None:
            return self._hit.usage
        return self._routed.usage if self._routed is not None else None

    @property
    def ttft_ms(self) -> float | None:
        return self._routed.ttft_ms if self._routed is not None else None

    @property
    def continued_by(self) -> str | None:
        """The model that finished the answer after the first one broke mid-stream, if any."""
        follow = self._routed.continued_by if self._routed is not None else None
        return follow.result.deployment.name if follow is not None else None

    @property
    def cost_usd(self) -> float:
        if self._routed is None:
            return 0.0
        return _cost(self._routed.result.deployment, self._routed.usage) + self._judge_usd + self._failed_usd

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        """The answer's chunks in the internal shape; raises the error that ended it early."""
        if self._iterated:
            raise RuntimeError("a stream can be read once")
        self._iterated = True
        if self._hit is not None:
            for chunk in replay_chunks(self._hit):
                yield chunk
            return
        assert self._routed is not None
        kept = self._kept
        try:
            async for chunk in self._routed.chunks():
                if kept is not None:
                    kept.append(chunk)
                yield chunk
        except ModelyardError as exc:
            self.error = exc
            raise

    async def aclose(self) -> None:
        """Release everything the stream holds and record it (once; shielded from cancellation)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.shield(self._close())

    async def _close(self) -> None:
        routed = self._routed
        try:
            if routed is not None:
                await routed.abort()
                acct = self._acct
                if acct is not None:
                    acct.finish(
                        routed.result,
                        usage=routed.usage,
                        output_chars=_output_chars(routed),
                        error=self.error,
                        ttft_ms=routed.ttft_ms,
                        overhead_ms=self.overhead_ms,
                        reasoning=routed.reasoning,
                    )
                await self._store(routed)
        finally:
            if self._span is not None:
                self._end_span()
            if self._rt is not None:
                self._pipeline.holder.unpin(self._rt)
                self._rt = None

    def _end_span(self) -> None:
        tracing, span = self._pipeline.tracing, self._span
        self._span = None
        if tracing is None or span is None:
            return
        routed = self._routed
        attempts = routed.result.attempts if routed is not None else []
        if self.error is not None:
            tracing.fail(span, self.error, attempts)
            return
        usage = self.usage
        _end_span(
            tracing,
            span,
            self,
            attempts,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            cache=self.cache,
        )

    async def _store(self, routed: RoutedStream) -> None:
        services = self._pipeline.services
        kept = self._kept
        if (
            kept is None
            or services is None
            or self._cache_key is None
            or not self._cache_ttl
            or self.error is not None
            or routed.continued_by is not None
        ):
            return
        whole = assemble_response(kept, routed.usage)
        if whole is not None:
            await services.cache.set(
                self._cache_key, CachedResponse.of(whole, routed.result.deployment.name), self._cache_ttl
            )


@dataclass(slots=True)
class _Admitted:
    """A request past routing, access and accounting, before the router runs."""

    route: Route
    acct: RequestAccounting | None
    cache: str | None
    key: str | None
    #: strategy auto: the tier chosen for the prompt
    choice: TierChoice | None = None
    #: a canary's order (the candidate first), else None
    order: list[Deployment] | None = None
    #: a shadow call's judge (scores only)
    score_with: JudgeConfig | None = None

    def judge(self, router: Router, rt: Runtime, req: ChatRequest) -> RequestJudge | None:
        if self.score_with is not None:  # a shadow call: scored, never escalated
            return RequestJudge(router, rt, self.score_with, req, self.acct)
        auto = self.route.auto
        if self.choice is None or auto is None or auto.judge is None:
            return None
        return RequestJudge.for_auto(router, rt, self.route, req, self.choice, self.acct)


class Pipeline:
    """Serves requests for every front end; one per gateway (server process or SDK instance)."""

    def __init__(
        self,
        holder: RuntimeHolder,
        router: Router,
        services: PipelineServices | None,
        tracing: Tracing | None = None,
    ) -> None:
        self.holder = holder
        self.router = router
        self.services = services
        #: OpenTelemetry spans (None: tracing is off, and costs one check per request)
        self.tracing = tracing
        self.ids = IdFactory()
        #: shadow calls running in the background (routes.<name>.shadow)
        self.shadows = ShadowRunner()

    # -- who is calling -----------------------------------------------------------------------

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller of a request with these (lower-case) headers; anonymous without services."""
        services = self.services
        if services is None:
            return ANONYMOUS
        return await services.auth.authenticate(headers)

    # -- the steps every request takes --------------------------------------------------------

    def _admit(
        self,
        rt: Runtime,
        req: ChatRequest | None,
        model: str,
        opts: RequestOptions,
        principal: Principal,
        request_id: str,
        *,
        stream: bool,
        input_tokens: int | None = None,
        source: str = "production",
        pin: str | None = None,
        score_with: JudgeConfig | None = None,
    ) -> _Admitted:
        route = resolve_route(rt, model, opts)
        if pin is not None:  # a shadow call: the route's candidate model only
            route = rt.pinned(route, pin, principal.org_id)
        elif rt.org_providers:  # bring your own key: the organisation's own provider where it has one
            route = rt.for_org(route, principal.org_id)
        route = principal.admit(route)
        max_cost = opts.max_cost_usd if opts.max_cost_usd is not None else route.config.max_cost_usd
        order = None
        canary = route.config.canary
        if canary is not None and pin is None and req is not None and route.auto is None and source == "production":
            order = canary_order(rt, route, canary, req, opts, principal, request_id)
            source = "canary" if order is not None else source
        services = self.services
        if services is None:
            choice = choose_tier(route, req, None, max_cost) if route.auto is not None and req is not None else None
            return _Admitted(route, None, None, None, choice, order, score_with)
        if route.name not in rt.routes and route.name not in rt.models:
            _refuse_unpriced_adhoc(route, services.accountant, principal)
        acct = services.accountant.request(
            req,
            rt=rt,
            route=route.name,
            org_id=principal.org_id,
            key_id=principal.key_id,
            task=opts.task,
            stream=stream,
            max_cost_usd=max_cost,
            request_id=request_id,
            input_tokens=input_tokens,
            source=source,
        )
        choice = choose_tier(route, req, acct, max_cost) if route.auto is not None and req is not None else None
        if req is None or not route.config.cache_ttl_s:
            return _Admitted(route, acct, None, None, choice, order, score_with)
        if opts.cache is False or order is not None:  # a canary's answer is the canary's, never the cache's
            return _Admitted(route, acct, "bypass", None, choice, order, score_with)
        return _Admitted(route, acct, "miss", cache_key(req, route.name, principal.org_id), choice, order, score_with)

    async def _cached(self, key: str) -> CachedResponse | None:
        return await self.services.cache.get(key) if self.services is not None else None

    # -- chat ---------------------------------------------------------------------------------

    async def chat(
        self,
        req: ChatRequest,
        opts: RequestOptions,
        principal: Principal = ANONYMOUS,
        *,
        request_id: str | None = None,
        started: float | None = None,
        source: str = "production",
    ) -> Served:
        """One non-streaming completion. Raises :class:`ModelyardError` (with ``records``) on failure.
        ``source``: what the usage record says the request was (comparison runs say so)."""
        tracing = self.tracing
        if tracing is None:
            return await self._chat(req, opts, principal, request_id=request_id, started=started, source=source)
        span = _chat_span(tracing, req)
        with _failing(tracing, span):
            served = await self._chat(req, opts, principal, request_id=request_id, started=started, source=source)
        usage = served.response.usage
        _end_span(
            tracing,
            span,
            served,
            served.attempts,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            finish_reasons=[c.finish_reason for c in served.response.choices if c.finish_reason],
            cache=served.cache,
            answer=served.response.choices[0].message.text() if served.response.choices else None,
        )
        return served

    async def _chat(
        self,
        req: ChatRequest,
        opts: RequestOptions,
        principal: Principal = ANONYMOUS,
        *,
        request_id: str | None = None,
        started: float | None = None,
        source: str = "production",
        pin: str | None = None,
        score_with: JudgeConfig | None = None,
    ) -> Served:
        """One non-streaming completion. Raises :class:`ModelyardError` (with ``records``) on failure.
        ``pin`` and ``score_with``: a shadow call's model and judge."""
        t0 = started if started is not None else time.perf_counter()
        request_id = request_id or self.ids.new()
        acct: RequestAccounting | None = None
        key_slot = None
        tried: list[Attempt] = []  # the router's attempts as they end: recorded if the caller leaves
        async with self.holder.use() as rt:
            use_scrubber(rt.scrubber)
            try:
                admitted = self._admit(
                    rt, req, req.model, opts, principal, request_id, stream=False, source=source, pin=pin,
                    score_with=score_with,
                )  # fmt: skip
                acct = admitted.acct
                route = admitted.route
                if self.services is not None and source != "shadow":  # the gateway's own mirror: not the key's
                    key_slot = await self.services.auth.key_admit(principal, estimate_tokens(req))
                hit = await self._cached(admitted.key) if admitted.key is not None else None
                if hit is not None:
                    return self._serve_hit(hit, route, request_id, acct, t0)
                judge = admitted.judge(self.router, rt, req)
                response, result = await self.router.chat(
                    route, req, opts, acct, choice=admitted.choice, judge=judge, order=admitted.order, attempts=tried
                )
            except ModelyardError as exc:
                if acct is not None:
                    acct.finish(None, attempts=getattr(exc, "records", []), error=exc)
                raise
            except asyncio.CancelledError:
                if acct is not None:  # with the attempt in flight, charged as its budgets were
                    acct.finish(None, attempts=tried, error=_closed())
                raise
            finally:
                if key_slot is not None:
                    key_slot.release(None)
            overhead = (time.perf_counter() - t0 - result.upstream_s) * 1000
            if acct is not None:
                acct.finish(result, usage=response.usage, overhead_ms=overhead)
            ttl = opts.cache_ttl(route.config.cache_ttl_s, route.config.cache_max_ttl_s)
            if admitted.key is not None and self.services is not None and ttl:
                await self.services.cache.set(admitted.key, CachedResponse.of(response, result.deployment.name), ttl)
            served = self._served(request_id, response, result, overhead, admitted.cache)
            served.cost_usd += _failed_usd(rt, result.attempts)
            self._mirror(rt, route, req, opts, principal, request_id, source)
            if admitted.choice is not None:
                served.tier = admitted.choice
                served.tier_reason = _reason(admitted.choice, judge)
                served.cost_usd += judge.cost_usd if judge is not None else 0.0
            return served

    @staticmethod
    def _served(
        request_id: str, response: ChatResponse, result: RouteResult, overhead_ms: float, cache: str | None
    ) -> Served:
        dep = result.deployment
        return Served(
            request_id=request_id,
            response=response,
            model=dep.name,
            provider=dep.provider.name,
            route=result.route,
            attempts=result.attempts,
            fallback=result.fallback,
            overhead_ms=max(0.0, overhead_ms),
            cache=cache,
            cost_usd=_cost(dep, response.usage),
        )

    @staticmethod
    def _serve_hit(
        hit: CachedResponse, route: Route, request_id: str, acct: RequestAccounting | None, t0: float
    ) -> Served:
        response = hit.to_response()
        overhead = (time.perf_counter() - t0) * 1000
        if acct is not None:
            acct.finish(None, usage=response.usage, cache_hit_model=hit.model, overhead_ms=overhead)
        return Served(
            request_id=request_id,
            response=response,
            model=hit.model,
            provider="cache",
            route=route.name,
            attempts=[],
            fallback=False,
            overhead_ms=overhead,
            cache="hit",
            cost_usd=0.0,
        )

    def _mirror(
        self,
        rt: Runtime,
        route: Route,
        req: ChatRequest,
        opts: RequestOptions,
        principal: Principal,
        request_id: str,
        source: str,
    ) -> None:
        """Mirror an answered request to the route's shadow model, in the background."""
        cfg = route.config.shadow
        if cfg is None or source not in ("production", "canary"):
            return
        if not self.shadows.wanted(rt, route, cfg, req, opts, principal, request_id):
            return
        mirrored = shadow_request(req)
        shadow_opts = replace(opts, route=route.name, cache=False, fallback=False, task=None)

        def call() -> Awaitable[Served]:
            return self._chat(mirrored, shadow_opts, principal, source="shadow", pin=cfg.model, score_with=cfg.judge)

        self.shadows.mirror(route.name, cfg, call)

    # -- streams ------------------------------------------------------------------------------

    async def stream(
        self,
        req: ChatRequest,
        opts: RequestOptions,
        principal: Principal = ANONYMOUS,
        *,
        request_id: str | None = None,
        started: float | None = None,
        source: str = "production",
    ) -> ServedStream:
        """A streamed completion (see :meth:`_stream`); the trace span ends when the stream closes."""
        tracing = self.tracing
        if tracing is None:
            return await self._stream(req, opts, principal, request_id=request_id, started=started, source=source)
        span = _chat_span(tracing, req)
        with _failing(tracing, span):
            served = await self._stream(req, opts, principal, request_id=request_id, started=started, source=source)
        served._span = span
        return served

    async def _stream(
        self,
        req: ChatRequest,
        opts: RequestOptions,
        principal: Principal = ANONYMOUS,
        *,
        request_id: str | None = None,
        started: float | None = None,
        source: str = "production",
    ) -> ServedStream:
        """Start a streamed completion (held back until the first token, per the route).

        Raises :class:`ModelyardError` if no candidate could start; otherwise the caller owns the
        returned stream and must :meth:`~ServedStream.aclose` it.
        """
        t0 = started if started is not None else time.perf_counter()
        request_id = request_id or self.ids.new()
        acct: RequestAccounting | None = None
        key_slot = None
        tried: list[Attempt] = []  # the router's attempts as they end: recorded if the caller leaves
        holder = self.holder
        rt = holder.pin()  # until the stream's aclose: the stream outlives this call
        use_scrubber(rt.scrubber)
        try:
            admitted = self._admit(rt, req, req.model, opts, principal, request_id, stream=True, source=source)
            acct = admitted.acct
            route = admitted.route
            if self.services is not None:
                key_slot = await self.services.auth.key_admit(principal, estimate_tokens(req))
            hit = await self._cached(admitted.key) if admitted.key is not None else None
            if hit is not None:
                served = self._serve_hit(hit, route, request_id, acct, t0)
                holder.unpin(rt)
                return ServedStream(
                    request_id=request_id,
                    model=served.model,
                    provider="cache",
                    route=route.name,
                    attempts=[],
                    fallback=False,
                    overhead_ms=served.overhead_ms,
                    cache="hit",
                    _pipeline=self,
                    _rt=None,
                    _hit=served.response,
                )
            judge = admitted.judge(self.router, rt, req)
            routed = await self.router.stream(
                route, req, opts, acct, choice=admitted.choice, judge=judge, order=admitted.order, attempts=tried
            )
            self._mirror(rt, route, req, opts, principal, request_id, source)
        except BaseException as exc:
            if acct is not None and isinstance(exc, ModelyardError):
                acct.finish(None, attempts=getattr(exc, "records", []), error=exc)
            elif acct is not None and isinstance(exc, asyncio.CancelledError):
                acct.finish(None, attempts=tried, error=_closed())
            holder.unpin(rt)
            raise
        finally:
            if key_slot is not None:
                key_slot.release(None)
        result = routed.result
        elapsed = time.perf_counter() - t0
        upstream = result.upstream_s + (time.perf_counter() - routed.started)
        dep = result.deployment
        return ServedStream(
            request_id=request_id,
            model=dep.name,
            provider=dep.provider.name,
            route=result.route,
            attempts=result.attempts,
            fallback=result.fallback,
            overhead_ms=max(0.0, (elapsed - upstream) * 1000),
            cache=admitted.cache,
            _pipeline=self,
            _rt=rt,
            _routed=routed,
            _acct=acct,
            _cache_key=admitted.key,
            _cache_ttl=opts.cache_ttl(route.config.cache_ttl_s, route.config.cache_max_ttl_s),
            _kept=[] if admitted.key is not None else None,
            tier=admitted.choice,
            tier_reason=_reason(admitted.choice, judge) if admitted.choice is not None else None,
            _judge_usd=judge.cost_usd if judge is not None else 0.0,
            _failed_usd=_failed_usd(rt, routed.result.attempts),
        )

    # -- embeddings ---------------------------------------------------------------------------

    async def embed(
        self,
        req: EmbeddingRequest,
        opts: RequestOptions,
        principal: Principal = ANONYMOUS,
        *,
        request_id: str | None = None,
        started: float | None = None,
    ) -> ServedEmbeddings:
        tracing = self.tracing
        if tracing is None:
            return await self._embed(req, opts, principal, request_id=request_id, started=started)
        span = tracing.begin("embeddings", req.model, {})
        with _failing(tracing, span):
            served = await self._embed(req, opts, principal, request_id=request_id, started=started)
        _end_span(
            tracing, span, served, served.attempts, input_tokens=served.response.usage.prompt_tokens, output_tokens=None
        )
        return served

    async def _embed(
        self,
        req: EmbeddingRequest,
        opts: RequestOptions,
        principal: Principal = ANONYMOUS,
        *,
        request_id: str | None = None,
        started: float | None = None,
    ) -> ServedEmbeddings:
        t0 = started if started is not None else time.perf_counter()
        request_id = request_id or self.ids.new()
        acct: RequestAccounting | None = None
        key_slot = None
        tried: list[Attempt] = []  # the router's attempts as they end: recorded if the caller leaves
        async with self.holder.use() as rt:
            use_scrubber(rt.scrubber)
            try:
                admitted = self._admit(
                    rt,
                    None,
                    req.model,
                    opts,
                    principal,
                    request_id,
                    stream=False,
                    input_tokens=estimate_embedding_input_tokens(req),
                )
                acct = admitted.acct
                if self.services is not None:
                    key_slot = await self.services.auth.key_admit(principal, estimate_embedding_tokens(req))
                response, result = await self.router.embed(admitted.route, req, opts, acct, tried)
            except ModelyardError as exc:
                if acct is not None:
                    acct.finish(None, attempts=getattr(exc, "records", []), error=exc)
                raise
            except asyncio.CancelledError:
                if acct is not None:
                    acct.finish(None, attempts=tried, error=_closed())
                raise
            finally:
                if key_slot is not None:
                    key_slot.release(None)
        overhead = max(0.0, (time.perf_counter() - t0 - result.upstream_s) * 1000)
        if acct is not None:
            acct.finish(result, usage=response.usage, overhead_ms=overhead)
        dep = result.deployment
        return ServedEmbeddings(
            request_id=request_id,
            response=response,
            model=dep.name,
            provider=dep.provider.name,
            route=result.route,
            attempts=result.attempts,
            fallback=result.fallback,
            overhead_ms=overhead,
            cost_usd=_cost(dep, response.usage),
        )


def _chat_span(tracing: Tracing, req: ChatRequest) -> RequestSpan:
    return tracing.begin("chat", req.model, _request_attrs(req), _prompt(req) if tracing.capture_content else None)


@contextmanager
def _failing(tracing: Tracing, span: RequestSpan) -> Iterator[None]:
    """Ends ``span`` as failed when the block raises a :class:`ModelyardError` (which goes on)."""
    try:
        yield
    except ModelyardError as exc:
        tracing.fail(span, exc, getattr(exc, "records", []))
        raise


def _end_span(
    tracing: Tracing,
    span: RequestSpan,
    served: Served | ServedStream | ServedEmbeddings,
    attempts: list[Attempt],
    **figures: Any,
) -> None:
    """Ends ``span`` with what answered (tokens, finish reasons, cache and answer in ``figures``)."""
    tracing.end(
        span,
        route=served.route,
        model=served.model,
        provider=served.provider,
        attempts=attempts,
        fallback=served.fallback,
        cost_usd=served.cost_usd,
        **figures,
    )


def _request_attrs(req: ChatRequest) -> dict[str, Any]:
    return {
        "gen_ai.request.max_tokens": req.max_tokens,
        "gen_ai.request.temperature": req.temperature,
        "gen_ai.request.top_p": req.top_p,
        "gen_ai.request.choice.count": req.n,
        "modelyard.stream": req.stream,
    }


def _reason(choice: TierChoice, judge: RequestJudge | None) -> str:
    """Why the tier: the choice's reason, and what the judge said when it could not score."""
    if judge is not None and judge.note:
        return f"{choice.reason}; {judge.note}"
    return choice.reason


def _prompt(req: ChatRequest) -> str:
    return "\n".join(f"{m.role}: {m.text()}" for m in req.messages)
