from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.routing.stats import ModelStats


def test_defaults() -> None:
    s = ModelStats()
    assert s.in_flight == 0
    assert s.latency_ms is None
    assert s.ttft_ms is None
    assert s.success_rate == 1.0
    assert s.requests == 0 and s.failures == 0
    assert s.last_error is None and s.last_error_at is None


def test_in_flight_counter() -> None:
    s = ModelStats()
    s.start()
    s.start()
    assert s.in_flight == 2
    s.finish()
    assert s.in_flight == 1
    s.finish()
    s.finish()  # an unbalanced finish does not go negative
    assert s.in_flight == 0


def test_latency_ewma() -> None:
    s = ModelStats(alpha=0.5)
    s.record(ok=True, latency_ms=100)
    assert s.latency_ms == 100
    s.record(ok=True, latency_ms=200)
    assert s.latency_ms == pytest.approx(150)
    s.record(ok=True, latency_ms=50)
    assert s.latency_ms == pytest.approx(100)


def test_ttft_ewma_only_when_given() -> None:
    s = ModelStats(alpha=0.2)
    s.record(ok=True, latency_ms=100)
    assert s.ttft_ms is None
    s.record(ok=True, latency_ms=100, ttft_ms=40)
    assert s.ttft_ms == 40
    s.record(ok=True, latency_ms=100, ttft_ms=90)
    assert s.ttft_ms == pytest.approx(50)


def test_reasoning_first_tokens_are_averaged_apart() -> None:
    s = ModelStats(alpha=0.5)
    s.record(ok=True, latency_ms=100, ttft_ms=40)
    s.record(ok=True, latency_ms=3000, ttft_ms=2000, reasoning=True)
    assert s.ttft_ms == 40 and s.ttft_reasoning_ms == 2000
    s.record(ok=True, latency_ms=3000, ttft_ms=1000, reasoning=True)
    assert s.ttft_ms == 40 and s.ttft_reasoning_ms == pytest.approx(1500)
    assert s.snapshot()["ttft_reasoning_ms"] == pytest.approx(1500)


def test_failures_do_not_move_latency() -> None:
    s = ModelStats()
    s.record(ok=True, latency_ms=100, ttft_ms=10)
    s.record(ok=False, latency_ms=30_000, ttft_ms=5, error="timeout")
    assert s.latency_ms == 100
    assert s.ttft_ms == 10


def test_errors_are_remembered() -> None:
    s = ModelStats()
    before = time.time()
    s.record(ok=False, latency_ms=5, error="connection refused")
    after = time.time()
    assert s.last_error == "connection refused"
    assert s.last_error_at is not None and before <= s.last_error_at <= after
    s.record(ok=True, latency_ms=5)
    assert s.last_error == "connection refused"  # a success does not clear it
    s.record(ok=False, latency_ms=5)
    assert s.last_error == "unknown error"
    assert s.requests == 3 and s.failures == 2


def test_success_rate_window_slides() -> None:
    s = ModelStats(window=4)
    for ok in (False, False, True, True):
        s.record(ok=ok, latency_ms=1)
    assert s.success_rate == 0.5
    s.record(ok=True, latency_ms=1)
    assert s.success_rate == 0.75
    s.record(ok=True, latency_ms=1)
    assert s.success_rate == 1.0
    s.record(ok=False, latency_ms=1)
    assert s.success_rate == 0.75


def test_snapshot() -> None:
    s = ModelStats()
    s.start()
    s.record(ok=True, latency_ms=12.5, ttft_ms=3)
    snap = s.snapshot()
    assert snap == {
        "in_flight": 1,
        "requests": 1,
        "failures": 0,
        "success_rate": 1.0,
        "latency_ms": 12.5,
        "ttft_ms": 3.0,
        "ttft_reasoning_ms": None,
        "last_error": None,
        "last_error_at": None,
        "rejected": 0,
        "judged": 0,
        "judge_score_avg": None,
    }


@pytest.mark.parametrize("kw", [{"alpha": 0.0}, {"alpha": 1.5}, {"window": 0}])
def test_invalid_arguments(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ModelStats(**kw)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    outcomes=st.lists(st.tuples(st.booleans(), st.floats(0, 10_000)), max_size=60),
    window=st.integers(1, 10),
    alpha=st.floats(0.01, 1.0),
)
def test_figures_match_a_recount(outcomes: list[tuple[bool, float]], window: int, alpha: float) -> None:
    s = ModelStats(alpha=alpha, window=window)
    for ok, latency in outcomes:
        s.record(ok=ok, latency_ms=latency, error=None if ok else "boom")
    recent = [ok for ok, _ in outcomes[-window:]]
    assert s.success_rate == pytest.approx(sum(recent) / len(recent) if recent else 1.0)
    assert s.requests == len(outcomes)
    assert s.failures == sum(1 for ok, _ in outcomes if not ok)
    good = [lat for ok, lat in outcomes if ok]
    if good:
        assert s.latency_ms is not None
        assert min(good) - 1e-6 <= s.latency_ms <= max(good) + 1e-6
    else:
        assert s.latency_ms is None
