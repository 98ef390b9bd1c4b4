"""The per-request counters and histograms of GET /metrics, read back with Prometheus' own parser."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelyard.config.loader import parse_config
from modelyard.observability.metrics import ADHOC, Metrics
from modelyard.runtime import Runtime
from modelyard.storage.records import AttemptRecord, RequestRecord

CONFIG = """
providers:
  up: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-test}
models:
  m1: {provider: up, model: gpt-4o-mini}
  m2: {provider: up, model: gpt-4o}
routes:
  chat: {models: [m1], fallbacks: [m2]}
"""


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _record(**kw: object) -> RequestRecord:
    base: dict[str, object] = {"ts": datetime.now(UTC), "request_id": "r", "route": "chat", "model": "m1"}
    base.update(provider="up", status=200)
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def _attempt(model: str, ok: bool, error: str | None = None) -> AttemptRecord:
    return AttemptRecord(
        ts=datetime.now(UTC), request_id="r", attempt_number=1, route="chat", model=model, provider="up",
        success=ok, error_class=error,
    )  # fmt: skip


def test_counters_and_histograms_add_up_in_the_exposition() -> None:
    rt = Runtime(parse_config(yaml.safe_load(CONFIG), env={}))
    metrics = Metrics(lambda: rt)
    seen: list[RequestRecord] = []
    metrics.listeners.append(seen.append)
    first = _record(tokens_in=10, tokens_out=5, cost_usd=0.25, latency_ms=3.0, ttft_ms=1.0)
    metrics.observe(first, [_attempt("m1", True)], overhead_ms=0.2)
    failed_over = _record(model="m2", fallback=True, tokens_in=7, cost_usd=0.5, latency_ms=40.0)
    metrics.observe(failed_over, [_attempt("m1", False, "timeout"), _attempt("m2", True)], overhead_ms=0.03)
    metrics.observe(_record(model="up:other", route="up:other", latency_ms=7000.0), [], overhead_ms=None)
    assert seen == [first, failed_over, seen[2]]

    s = _samples(metrics)
    labels = (("cache", "miss"), ("fallback", "false"), ("model", "m1"), ("route", "chat"), ("status", "200"))
    assert s[("modelyard_requests_total", labels)] == 1
    assert s[("modelyard_requests_total", (("cache", "miss"), ("fallback", "true"), ("model", "m2"),
                                           ("route", "chat"), ("status", "200")))] == 1  # fmt: skip
    # a provider:model request is counted under one bounded label, not its own name
    assert s[("modelyard_requests_total", (("cache", "miss"), ("fallback", "false"), ("model", ADHOC),
                                           ("route", ADHOC), ("status", "200")))] == 1  # fmt: skip
    assert s[("modelyard_tokens_total", (("model", "m1"), ("type", "input")))] == 10
    assert s[("modelyard_tokens_total", (("model", "m2"), ("type", "input")))] == 7
    assert ("modelyard_tokens_total", (("model", "m2"), ("type", "output"))) not in s
    assert s[("modelyard_cost_usd_total", (("model", "m2"), ("org", ""), ("route", "chat")))] == 0.5
    assert s[("modelyard_fallbacks_total", (("route", "chat"),))] == 1
    assert s[("modelyard_attempts_total", (("model", "m1"), ("outcome", "timeout"), ("provider", "up")))] == 1
    assert s[("modelyard_attempts_total", (("model", "m2"), ("outcome", "ok"), ("provider", "up")))] == 1

    # histogram buckets are cumulative, "le" is inclusive, the sum and count follow
    m1 = (("model", "m1"), ("route", "chat"))
    assert s[("modelyard_request_latency_seconds_bucket", (("le", "0.005"), *m1))] == 1  # 3 ms
    m2 = (("model", "m2"), ("route", "chat"))
    assert s[("modelyard_request_latency_seconds_bucket", (("le", "0.025"), *m2))] == 0
    assert s[("modelyard_request_latency_seconds_bucket", (("le", "0.05"), *m2))] == 1  # 40 ms
    assert s[("modelyard_request_latency_seconds_bucket", (("le", "+Inf"), *m2))] == 1
    adhoc = (("model", ADHOC), ("route", ADHOC))
    assert s[("modelyard_request_latency_seconds_bucket", (("le", "5.0"), *adhoc))] == 0
    assert s[("modelyard_request_latency_seconds_bucket", (("le", "10.0"), *adhoc))] == 1  # 7 s
    assert s[("modelyard_request_latency_seconds_count", m2)] == 1
    assert abs(s[("modelyard_request_latency_seconds_sum", m2)] - 0.04) < 1e-12
    assert s[("modelyard_ttft_seconds_count", m1)] == 1
    assert ("modelyard_ttft_seconds_count", m2) not in s  # no first token: not observed
    assert s[("modelyard_overhead_seconds_bucket", (("le", "0.0001"),))] == 1  # 0.03 ms
    assert s[("modelyard_overhead_seconds_bucket", (("le", "0.00025"),))] == 2  # 0.2 ms, cumulative
    assert s[("modelyard_overhead_seconds_count", ())] == 2
    # an exact bound counts in its own bucket (le: less than or equal)
    metrics.observe(_record(latency_ms=10.0), [], overhead_ms=None)
    assert _samples(metrics)[("modelyard_request_latency_seconds_bucket", (("le", "0.01"), *m1))] == 2
