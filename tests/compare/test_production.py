"""Recommendations from production usage (#17 point 2): from a seeded usage history (real SQLite
and PostgreSQL), the better model is named with its expected change; too little data says "not
enough data"; a candidate without a quality signal is never recommended on cost alone."""

from __future__ import annotations

import random

import pytest

from modelyard.compare.production import recommend_route
from modelyard.storage.evidence import ModelEvidence


def ev(model: str, n: int, ok: int, *, rejected: int = 0, latency: float = 500, cost: float = 0.01) -> ModelEvidence:
    rng = random.Random(0)  # the same spread for every model: only `latency` moves it
    lat = [latency * rng.uniform(0.8, 1.2) for _ in range(min(ok, 2000))]
    return ModelEvidence(model, n, ok, 0, rejected, 0, 0.0, cost * n, lat, [cost] * min(ok, 2000))


def test_too_little_traffic_is_not_enough_data() -> None:
    thin = recommend_route("r", "a", {"a": ev("a", 150, 150)}, validates=True)
    assert thin["status"] == "not_enough_data" and "a has 150 requests on r; 200 needed" in thin["reason"]
    alone = recommend_route("r", "a", {"a": ev("a", 900, 880), "b": ev("b", 120, 120)}, validates=True)
    assert alone["status"] == "not_enough_data" and "no other model has served 200" in alone["reason"]


def test_a_better_model_is_named_with_its_expected_change() -> None:
    evidence = {
        "a": ev("a", 1200, 1000, rejected=200, latency=800, cost=0.010),  # 83 % of its answers pass
        "b": ev("b", 1200, 1180, rejected=20, latency=400, cost=0.006),  # 98 % pass, faster, cheaper
    }
    out = recommend_route("r", "a", evidence, validates=True)
    assert out["status"] == "recommend"
    rec = out["recommendation"]
    assert rec["model"] == "b" and rec["instead_of"] == "a" and rec["confidence"] == "high"
    change = rec["expected_change"]
    assert change["quality"] == pytest.approx(1180 / 1200 - 1000 / 1200, abs=1e-4)
    assert change["cost"] == pytest.approx(-0.4) and change["speed"] == pytest.approx(2.0, rel=0.1)
    assert rec["summary"].startswith("+15.0 pts quality") and "-40% cost" in rec["summary"]
    assert rec["apply"] == {"method": "POST", "path": "/admin/routes/r/switch", "body": {"model": "b"}}
    assert out["models"]["a"]["quality"]["kind"] == "validator pass rate"


def test_cost_alone_without_a_quality_signal_is_not_a_recommendation() -> None:
    evidence = {"a": ev("a", 800, 790, cost=0.01), "b": ev("b", 800, 790, cost=0.001)}
    out = recommend_route("r", "a", evidence, validates=False)
    assert out["status"] == "no_quality_data" and "not recommended on cost or latency alone" in out["reason"]
    # a comparison that measured both gives the quality signal
    comparison = {"figures": {"a": {"accuracy": 0.80}, "b": {"accuracy": 0.82}}}
    with_cmp = recommend_route("r", "a", evidence, validates=False, comparisons=[comparison])
    assert with_cmp["status"] == "recommend" and with_cmp["recommendation"]["model"] == "b"
    assert with_cmp["models"]["b"]["quality"]["kind"] == "comparison accuracy"


def test_differences_within_the_intervals_are_not_enough_data() -> None:
    evidence = {
        "a": ev("a", 250, 240, rejected=10, latency=500, cost=0.01),
        "b": ev("b", 250, 242, rejected=8, latency=500, cost=0.01),
    }
    out = recommend_route("r", "a", evidence, validates=True)
    assert out["status"] == "not_enough_data" and "within the 95 % intervals" in out["reason"]


def test_a_worse_candidate_means_keep() -> None:
    evidence = {"a": ev("a", 900, 890, rejected=10), "b": ev("b", 900, 700, rejected=200, cost=0.001)}
    out = recommend_route("r", "a", evidence, validates=True)
    assert out["status"] == "keep" and out["candidates"][0]["reason"].startswith("b is worse on")
