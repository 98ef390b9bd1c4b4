"""Per-request accounting: cost, budgets (reserve before, settle after), usage records, metrics.

:class:`Accountant` is built once per process from the config and swapped pieces on reload.
:class:`RequestAccounting` is the per-request part: it is the router's attempt hooks (budgets
are reserved per attempt, for the model actually tried, and settled with the actual cost) and
it turns the router's result into one :class:`RequestRecord` and its :class:`AttemptRecord` rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from modelyard.accounting.budgets import BudgetEvent, BudgetLedger, Reservation, Scope, target_of
from modelyard.accounting.pricing import (
    Price,
    cost,
    estimate_input_tokens,
    worst_case_cost,
    worst_case_output_tokens,
)
from modelyard.errors import MaxCostExceededError, ModelyardError
from modelyard.routing.deployment import Deployment
from modelyard.storage.records import AttemptRecord, RequestRecord
from modelyard.transport import Transport, make_transport
from modelyard.types import ChatRequest, Usage

if TYPE_CHECKING:
    from modelyard.accounting.writer import UsageWriter
    from modelyard.routing.router import Attempt, RouteResult
    from modelyard.runtime import Runtime

__all__ = ["Accountant", "MaxCostExceededError", "MetricsSink", "RequestAccounting", "probe_record"]


def probe_record(
    dep: Deployment | None,
    provider: str,
    upstream: str,
    usage: Usage | None,
    latency_ms: float,
    *,
    ok: bool,
    route: str,
) -> RequestRecord:
    """A probe as a usage record (``source: probe``, charged to no organisation and no budget): a
    model's probe before a config change (``route: probe``) or a provider's chat probe, its health
    check (``route: health``).  Priced as the configured model ``dep`` (None: not configured, $0)."""
    return RequestRecord(
        ts=datetime.now(UTC),
        request_id=f"probe-{uuid.uuid4().hex[:20]}",
        route=route,
        model=dep.name if dep is not None else upstream,
        provider=provider,
        tokens_in=usage.prompt_tokens if usage else 0,
        tokens_out=usage.completion_tokens if usage else 0,
        cost_usd=cost(dep.price, usage) if dep is not None and usage else 0.0,
        latency_ms=latency_ms,
        success=ok,
        error_class=None if ok else "probe_failed",
        source="probe",
    )


log = logging.getLogger("modelyard.accounting")


class MetricsSink(Protocol):
    """Where finished requests are counted (``modelyard.observability.metrics.Metrics``, a layer above)."""

    def observe(self, rec: RequestRecord, attempts: Sequence[AttemptRecord], overhead_ms: float | None) -> None: ...


@dataclass(slots=True)
class _Estimate:
    model: str
    usd: float


class Accountant:
    """Prices, the budget ledger, the usage writer, metrics and budget webhooks, for one process."""

    def __init__(
        self,
        *,
        ledger: BudgetLedger | None = None,
        writer: UsageWriter | None = None,
        metrics: MetricsSink | None = None,
        event_sink: Callable[[BudgetEvent], Any] | None = None,
    ) -> None:
        self.ledger = ledger
        self.has_budgets = False
        self.writer = writer
        self.metrics = metrics
        self.event_sink = event_sink
        self._http: Transport | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.events: list[BudgetEvent] = []

    def usd_budget_for(self, scope: Scope) -> str | None:
        """The name of a USD budget that applies to a request of ``scope``, or None."""
        ledger = self.ledger
        if ledger is None or not self.has_budgets:
            return None
        for b in getattr(ledger, "budgets", ()):
            if b.limit_usd is not None and target_of(b, scope) is not None:
                return str(b.name)
        return None

    def request(
        self,
        req: ChatRequest | None,
        *,
        rt: Runtime,
        route: str,
        org_id: str | None = None,
        key_id: str | None = None,
        task: str | None = None,
        stream: bool = False,
        max_cost_usd: float | None = None,
        request_id: str | None = None,
        input_tokens: int | None = None,
        source: str = "production",
    ) -> RequestAccounting:
        """The accounting of one request; ``input_tokens`` for requests that are not chats
        (embeddings); ``source``: production, canary, shadow, comparison or probe (contracts)."""
        return RequestAccounting(
            self,
            rt=rt,
            req=req,
            request_id=request_id or f"req_{uuid.uuid4().hex}",
            route=route,
            org_id=org_id,
            key_id=key_id,
            task=task,
            stream=stream,
            max_cost_usd=max_cost_usd,
            _input_estimate=input_tokens,
            source=source,
        )

    # -- budget events ------------------------------------------------------------------------

    def on_events(self, events: Sequence[BudgetEvent]) -> None:
        for event in events:
            log.warning("budget %s (%s, %s): %s", event.budget, event.scope, event.period, event.message)
            self.events.append(event)
            del self.events[:-1000]
            if self.event_sink is not None:
                self.event_sink(event)
            if event.webhook:
                self._spawn(self._post_webhook(event))

    async def _post_webhook(self, event: BudgetEvent) -> None:
        if self._http is None:
            # any URL, the environment's proxies honoured (the fast client when none are set)
            self._http = make_transport(headers={"User-Agent": "modelyard", "Content-Type": "application/json"})
        body = {
            "type": f"budget.{event.kind}",
            "budget": event.budget,
            "scope": event.scope,
            "period": event.period,
            "threshold": event.threshold,
            "fraction": event.fraction,
            "message": event.message,
        }
        try:
            resp, lease = await self._http.send("POST", str(event.webhook), body=orjson.dumps(body), timeout_s=10.0)
            try:
                await resp.read()
            finally:
                lease.release()
            if resp.status >= 300:
                log.warning("budget webhook for %s answered %d", event.budget, resp.status)
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("budget webhook for %s failed: %s", event.budget, type(exc).__name__)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- records --------------------------------------------------------------------------------

    def submit(self, record: RequestRecord, attempts: Sequence[AttemptRecord], overhead_ms: float | None) -> None:
        if self.writer is not None:
            self.writer.submit(record, attempts)
        if self.metrics is not None:
            self.metrics.observe(record, attempts, overhead_ms)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        if self.writer is not None:
            await self.writer.aclose()
        if self.ledger is not None:
            await self.ledger.aclose()


@dataclass(slots=True)
class RequestAccounting:
    """The accounting of one request: the router's attempt hooks, then its records."""

    acct: Accountant
    rt: Runtime
    req: ChatRequest | None
    request_id: str
    route: str
    org_id: str | None
    key_id: str | None
    task: str | None
    stream: bool
    max_cost_usd: float | None
    started: float = field(default_factory=time.perf_counter)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    _input_estimate: int | None = None
    _cheapest: _Estimate | None = None
    #: production, canary, shadow, comparison or probe (contracts: usage record ``source``)
    source: str = "production"
    #: strategy auto: the tier chosen for the prompt, its complexity and why (set by the pipeline)
    tier: str | None = None
    complexity: float | None = None
    tier_reason: str | None = None
    #: the judge's last score of an answer, and what judging cost (counted in the request's cost)
    judge_score: float | None = None
    judge_cost_usd: float = 0.0

    # -- attempt hooks (the router calls these) --------------------------------------------------

    def _estimate(self, dep: Deployment) -> tuple[Price | None, int, int, float]:
        price = dep.price
        if self._input_estimate is None:
            self._input_estimate = estimate_input_tokens(self.req) if self.req is not None else 0
        n_in = self._input_estimate
        n_out = worst_case_output_tokens(self.req, dep.config, n_in) if self.req is not None else 0
        return price, n_in, n_out, worst_case_cost(price, n_in, n_out)

    def estimate_usd(self, dep: Deployment) -> float | None:
        """The worst-case cost of this request on ``dep`` (None when ``dep`` has no price)."""
        price, _, _, usd = self._estimate(dep)
        return None if price is None else usd

    def add_judge_cost(self, usd: float) -> None:
        self.judge_cost_usd += usd

    async def before(self, dep: Deployment) -> Reservation | None:
        if self.max_cost_usd is None and not self.acct.has_budgets:
            return None
        _, n_in, n_out, usd = self._estimate(dep)
        if self.max_cost_usd is not None and usd > self.max_cost_usd:
            if self._cheapest is None or usd < self._cheapest.usd:
                self._cheapest = _Estimate(dep.name, usd)
            cheapest = self._cheapest
            raise MaxCostExceededError(
                f"no model fits max_cost_usd={self.max_cost_usd:g}: the cheapest estimate is "
                f"${cheapest.usd:.6f} ({cheapest.model}, {n_in} input tokens, up to {n_out} output tokens); "
                "raise max_cost_usd or lower max_tokens",
                param="modelyard.max_cost_usd",
            )
        ledger = self.acct.ledger
        if ledger is None or not self.acct.has_budgets:
            return None
        scope = Scope(self.org_id, self.key_id, self.route, dep.name, self.source)
        return await ledger.reserve(scope, usd=usd, tokens=n_in + n_out)

    async def after(self, dep: Deployment, token: Any, usage: Usage | None, *, ok: bool) -> None:
        if not isinstance(token, Reservation) or self.acct.ledger is None:
            return
        try:
            # settled whenever there is usage: the upstream's, or (ok=False) the estimate of what a
            # call that ended early produced (see RoutedStream and the router); released otherwise
            if usage is not None:
                events = await self.acct.ledger.settle(token, usd=cost(dep.price, usage), tokens=usage.total_tokens)
                if events:
                    self.acct.on_events(events)
            else:
                await self.acct.ledger.release(token)
        except ModelyardError as exc:  # the state store is down: the reservation expires on its own
            log.warning("budget settle failed for %s: %s", self.request_id, exc.message)

    # -- records -----------------------------------------------------------------------------------

    def _dep(self, name: str) -> Deployment | None:
        dep = self.rt.models.get(name)
        if dep is not None:
            return dep
        try:
            return self.rt.resolve(name).pool[0]
        except ModelyardError:
            return None

    def _attempt_row(self, a: Attempt, first_choice: str) -> AttemptRecord:
        dep = self._dep(a.model)
        usage = a.usage
        estimated = bool(usage and usage.estimated)
        usd = cost(dep.price, usage) if dep is not None and usage is not None else 0.0
        return AttemptRecord(
            ts=self.ts,
            request_id=self.request_id,
            attempt_number=a.number,
            route=self.route,
            model=a.model,
            provider=a.provider,
            org_id=self.org_id,
            key_id=self.key_id,
            task=self.task,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            tokens_cached=usage.cached_tokens if usage else 0,
            cost_usd=usd,
            cost_estimated=estimated,
            latency_ms=a.latency_ms,
            ttft_ms=a.ttft_ms,
            success=a.ok,
            error_class=a.error_class,
            status=a.status,
            fallback=a.model != first_choice,
            stream=self.stream,
            error_message=a.message[:300] if not a.ok and a.message else None,
        )

    def finish(
        self,
        result: RouteResult | None,
        *,
        attempts: Sequence[Attempt] = (),
        usage: Usage | None = None,
        output_chars: int | None = None,
        error: ModelyardError | None = None,
        ttft_ms: float | None = None,
        overhead_ms: float | None = None,
        cache_hit_model: str | None = None,
        reasoning: bool = False,
    ) -> RequestRecord:
        """Build and submit the records of a finished request (answered, failed or served from cache)."""
        all_attempts = list(result.attempts if result is not None else attempts)
        first = result.first_choice if result is not None else (all_attempts[0].model if all_attempts else "")
        rows = [self._attempt_row(a, first) for a in all_attempts]
        estimated = False
        if error is None and cache_hit_model is None and usage is None and self.req is not None:
            # the provider reported no usage: count it ourselves, and say so
            n_in = self._input_estimate or estimate_input_tokens(self.req)
            n_out = max(0, (output_chars or 0) // 4)
            usage = Usage(n_in, n_out, n_in + n_out, estimated=True)
            estimated = True
        if error is None and rows and usage is not None and not rows[-1].tokens_in and not rows[-1].tokens_out:
            dep = self._dep(rows[-1].model)
            rows[-1].tokens_in, rows[-1].tokens_out = usage.prompt_tokens, usage.completion_tokens
            rows[-1].cost_usd = cost(dep.price, usage) if dep is not None else 0.0
            rows[-1].cost_estimated = estimated
        answering = result.deployment if result is not None and error is None else None
        model = cache_hit_model or (answering.name if answering else (rows[-1].model if rows else ""))
        provider = answering.provider.name if answering else (rows[-1].provider if rows else "")
        total_cost = 0.0 if cache_hit_model else sum(r.cost_usd for r in rows)
        total_cost += self.judge_cost_usd
        baseline = self._baseline(usage) if usage is not None and error is None else None
        record = RequestRecord(
            ts=self.ts,
            request_id=self.request_id,
            route=self.route,
            model=model,
            provider=provider,
            org_id=self.org_id,
            key_id=self.key_id,
            task=self.task,
            # without the answer's usage (a failure, a call given up): what its attempts were charged
            tokens_in=usage.prompt_tokens if usage else sum(r.tokens_in for r in rows),
            tokens_out=usage.completion_tokens if usage else sum(r.tokens_out for r in rows),
            tokens_cached=usage.cached_tokens if usage else sum(r.tokens_cached for r in rows),
            cost_usd=total_cost,
            baseline_cost_usd=baseline,
            cost_estimated=estimated or any(r.cost_estimated for r in rows),
            latency_ms=(time.perf_counter() - self.started) * 1000,
            ttft_ms=ttft_ms,
            success=error is None,
            error_class=None if error is None else (error.code or type(error).__name__),
            status=200 if error is None else error.status,
            fallback=bool(result is not None and result.fallback),
            attempts=len(rows),
            cache_hit=cache_hit_model is not None,
            stream=self.stream,
            reasoning=reasoning
            or (usage is not None and usage.reasoning_tokens > 0)
            or (self.req is not None and self.req.asks_for_reasoning()),
            source=self.source,
            tier=self.tier,
            complexity=self.complexity,
            tier_reason=self.tier_reason[:200] if self.tier_reason else None,
            judge_score=self.judge_score,
            judge_cost_usd=self.judge_cost_usd,
        )
        self.acct.submit(record, rows, overhead_ms)
        return record

    def _baseline(self, usage: Usage) -> float | None:
        route = self.rt.routes.get(self.route)
        name = route.config.baseline_model if route is not None else None
        if name is None:
            return None
        dep = self.rt.models.get(name)
        return cost(dep.price, usage) if dep is not None else None
