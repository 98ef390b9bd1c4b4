"""Prometheus metrics (``GET /metrics``), in a registry owned by the app (no global registry).

Counters and histograms are updated once per finished request from its usage records; gauges
(breaker states, in flight, queue lengths, provider health, budget use, usage-writer backlog)
are read from the live runtime at scrape time.  With ``--workers N`` each worker has its own
registry: scrape each worker, or run one worker per replica.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelyard.routing.health import model_health
from modelyard.runtime import Runtime
from modelyard.storage.records import AttemptRecord, RequestRecord

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_BREAKER = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_HEALTH = {"healthy": 0.0, "degraded": 1.0, "unhealthy": 2.0}


class _LiveCollector(Collector):
    def __init__(self, runtime: Callable[[], Runtime], extra: Callable[[], dict[str, Any]]) -> None:
        self._runtime = runtime
        self._extra = extra

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read live at scrape time only (registration must not call collect)

    def collect(self) -> Iterator[Metric]:
        rt = self._runtime()
        breaker = GaugeMetricFamily(
            "modelyard_breaker_state", "Circuit state: 0 closed, 1 half-open, 2 open", labels=["model"]
        )
        health = GaugeMetricFamily("modelyard_model_health", "0 healthy, 1 degraded, 2 unhealthy", labels=["model"])
        in_flight = GaugeMetricFamily("modelyard_in_flight", "Requests in flight per model", labels=["model"])
        queue = GaugeMetricFamily("modelyard_queue_length", "Requests waiting per model", labels=["model"])
        for name, dep in rt.models.items():
            breaker.add_metric([name], _BREAKER.get(dep.state.breaker.state, 0.0))
            health.add_metric([name], _HEALTH[model_health(dep)])
            in_flight.add_metric([name], dep.state.limiter.in_flight)
            queue.add_metric([name], dep.state.limiter.queue_length)
        provider = GaugeMetricFamily(
            "modelyard_provider_healthy", "1 when the provider passes its health checks", labels=["provider"]
        )
        for name, p in rt.providers.items():
            provider.add_metric([name], 1.0 if p.health_state.ok else 0.0)
        yield from (breaker, health, in_flight, queue, provider)
        extra = self._extra()
        backlog = extra.get("usage_backlog")
        if backlog is not None:
            yield GaugeMetricFamily("modelyard_usage_backlog", "Usage records not yet in the store", value=backlog)
        budgets = extra.get("budgets") or []
        if budgets:
            used = GaugeMetricFamily(
                "modelyard_budget_used_fraction", "Budget use (used / limit)", labels=["budget", "scope"]
            )
            org_labels = rt.config.server.metrics_org_labels
            for b in budgets:
                scope = str(b.get("scope_key") or "")
                if not org_labels:  # "key:key_123" -> "key": no tenant ids unless asked for
                    scope = scope.split(":", 1)[0]
                used.add_metric([b["name"], scope], float(b.get("fraction") or 0.0))
            yield used
        version = GaugeMetricFamily("modelyard_config_version", "The live config version", value=rt.version)
        yield version


#: the label of every model or route that is not in the config (``provider:model`` requests)
ADHOC = "adhoc"


#: one counter's series: labels -> value (a missing series starts at 0)
_Series = defaultdict[tuple[str, ...], float]
#: one histogram's series: labels -> [count per bucket (not cumulative; the last is +Inf)..., sum]
_Buckets = dict[tuple[str, ...], list[float]]


class _Counts(Collector):
    """The per-request counters and histograms, kept as plain numbers and rendered at scrape time.

    prometheus_client's own Counter and Histogram take a lock and check their state on every
    update, about eleven a request (docs/performance.md, round five).  Here an update is one dict
    operation on the event loop's thread; a scrape (another thread) copies each dict first, which
    the GIL makes atomic.
    """

    def __init__(self) -> None:
        self._counters: list[tuple[str, str, list[str], _Series]] = []
        self._histograms: list[tuple[str, str, list[str], list[str], _Buckets]] = []

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> _Series:
        series: _Series = defaultdict(float)
        self._counters.append((name, doc, list(labels), series))
        return series

    def histogram(self, name: str, doc: str, labels: Sequence[str], buckets: tuple[float, ...]) -> _Buckets:
        series: _Buckets = {}
        names = [floatToGoString(b) for b in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._histograms.append((name, doc, list(labels), names, series))
        return series

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        for name, doc, labels, series in self._counters:
            family = CounterMetricFamily(name, doc, labels=labels)
            for values, total in list(series.items()):
                family.add_metric(list(values), total)
            yield family
        for name, doc, labels, les, buckets in self._histograms:
            hist = HistogramMetricFamily(name, doc, labels=labels)
            for values, counts in list(buckets.items()):
                counts = list(counts)
                cumulative, running = [], 0.0
                for le, n in zip(les, counts, strict=False):
                    running += n
                    cumulative.append((le, running))
                hist.add_metric(list(values), cumulative, counts[-1])
            yield hist


def _observe(series: _Buckets, labels: tuple[str, ...], bounds: tuple[float, ...], v: float) -> None:
    counts = series.get(labels)
    if counts is None:
        counts = series[labels] = [0.0] * (len(bounds) + 2)
    counts[bisect_left(bounds, v)] += 1  # the first bucket whose bound is >= v (Prometheus' le)
    counts[-1] += v


class Metrics:
    def __init__(self, runtime: Callable[[], Runtime], extra: Callable[[], dict[str, Any]] | None = None) -> None:
        #: called with every finished request's record (the alert watcher's error rates and latencies)
        self.listeners: list[Callable[[RequestRecord], None]] = []
        self.registry = CollectorRegistry(auto_describe=True)
        self._runtime = runtime
        c = _Counts()
        self.requests = c.counter(
            "modelyard_requests", "Client requests", ["route", "model", "status", "fallback", "cache"]
        )
        self.attempts = c.counter("modelyard_attempts", "Upstream attempts", ["model", "provider", "outcome"])
        self.latency = c.histogram(
            "modelyard_request_latency_seconds", "Request latency", ["route", "model"], _LATENCY_BUCKETS
        )
        self.ttft = c.histogram(
            "modelyard_ttft_seconds", "Time to first token (streams)", ["route", "model"], _LATENCY_BUCKETS
        )
        self.overhead = c.histogram(
            "modelyard_overhead_seconds", "Time spent in modelyard itself", [], _OVERHEAD_BUCKETS
        )
        self.tokens = c.counter("modelyard_tokens", "Tokens", ["model", "type"])
        self.cost = c.counter("modelyard_cost_usd", "Cost in USD", ["model", "route", "org"])
        self.savings = c.counter("modelyard_savings_usd", "Savings against the route's baseline model", ["route"])
        self.fallbacks = c.counter("modelyard_fallbacks", "Answers not from the first choice", ["route"])
        self.registry.register(c)
        self.registry.register(_LiveCollector(runtime, extra or dict))

    def observe(self, rec: RequestRecord, attempts: Sequence[AttemptRecord], overhead_ms: float | None) -> None:
        status = str(rec.status or (200 if rec.success else 500))
        rt = self._runtime()
        # labels are bounded: configured names, or one "adhoc" bucket for provider:model requests
        # (every client-chosen string would be a new time series forever)
        model = rec.model if rec.model in rt.models else ADHOC
        route = rec.route if rec.route in rt.routes or rec.route in rt.models else ADHOC
        org = (rec.org_id or "") if rt.config.server.metrics_org_labels else ""
        fallback = "true" if rec.fallback else "false"
        self.requests[(route, model, status, fallback, "hit" if rec.cache_hit else "miss")] += 1
        pair = (route, model)
        _observe(self.latency, pair, _LATENCY_BUCKETS, rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            _observe(self.ttft, pair, _LATENCY_BUCKETS, rec.ttft_ms / 1000)
        if overhead_ms is not None:
            _observe(self.overhead, (), _OVERHEAD_BUCKETS, max(0.0, overhead_ms) / 1000)
        if rec.tokens_in > 0:
            self.tokens[(model, "input")] += rec.tokens_in
        if rec.tokens_out > 0:
            self.tokens[(model, "output")] += rec.tokens_out
        if rec.tokens_cached > 0:
            self.tokens[(model, "cached")] += rec.tokens_cached
        if rec.cost_usd > 0:
            self.cost[(model, route, org)] += rec.cost_usd
        if rec.baseline_cost_usd is not None and rec.baseline_cost_usd > rec.cost_usd:
            self.savings[(route,)] += rec.baseline_cost_usd - rec.cost_usd
        if rec.fallback:
            self.fallbacks[(route,)] += 1
        for a in attempts:
            a_model = a.model if a.model in rt.models else ADHOC
            self.attempts[(a_model, a.provider, "ok" if a.success else (a.error_class or "error"))] += 1
        for listener in self.listeners:
            listener(rec)

    def render(self) -> bytes:
        return generate_latest(self.registry)
