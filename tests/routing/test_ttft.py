"""The first-token timeout (#19 point 1): fixed where configured, else 3 x p95 of the last 200
first tokens clamped to [2 s, 30 s] once there are 20, reasoning requests apart; 10 s for a cloud
model and the load timeout + 10 s for a local one until then."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.config.loader import parse_config
from modelyard.routing.ttft import first_token_limit
from modelyard.runtime import Runtime


def runtime(**model: Any) -> Runtime:
    cfg = {
        "providers": {
            "p": {"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k"},
            "o": {"kind": "ollama", "base_url": "http://127.0.0.1:9"},
        },
        "models": {"m": {"provider": "p", **model}, "loc": {"provider": "o", "model": "llama3", "load_timeout_s": 40}},
        "routes": {"r": {"models": ["m"], "ttft_timeout_s": 7}},
    }
    return Runtime(parse_config(cfg, env={}))


def feed(rt: Runtime, values: list[float], *, reasoning: bool = False) -> None:
    stats = rt.models["m"].state.stats
    for v in values:
        stats.record(ok=True, latency_ms=v * 2, ttft_ms=v, reasoning=reasoning)


def test_a_cloud_model_without_history_gets_10_s() -> None:
    rt = runtime()
    limit = first_token_limit(rt.models["m"], reasoning=False)
    assert (limit.seconds, limit.source, limit.samples) == (10.0, "cloud default", 0)
    feed(rt, [100.0] * 19)
    assert first_token_limit(rt.models["m"], reasoning=False).source == "cloud default"


@pytest.mark.parametrize(("ms", "expected"), [(100.0, 2.0), (1000.0, 3.0), (5000.0, 15.0), (20000.0, 30.0)])
def test_with_20_samples_it_adapts_to_3x_p95_within_2_and_30_s(ms: float, expected: float) -> None:
    rt = runtime()
    feed(rt, [ms] * 25)
    limit = first_token_limit(rt.models["m"], reasoning=False)
    assert limit.source == "adaptive" and limit.seconds == pytest.approx(expected) and limit.samples == 25


def test_the_p95_of_the_last_200() -> None:
    rt = runtime()
    feed(rt, [50_000.0] * 100)  # old and slow: pushed out of the window
    feed(rt, [float(i) for i in range(1, 201)])  # p95 of 1..200 = 190.05 ms
    limit = first_token_limit(rt.models["m"], reasoning=False)
    assert limit.samples == 200 and limit.p95_ms == pytest.approx(190.05) and limit.seconds == 2.0
    feed(rt, [4000.0] * 20)  # the newest tail: 20 of 200 at 4 s -> p95 is 4 s
    assert first_token_limit(rt.models["m"], reasoning=False).seconds == pytest.approx(12.0)


def test_reasoning_requests_are_their_own_series() -> None:
    rt = runtime()
    feed(rt, [100.0] * 30)
    feed(rt, [8000.0] * 30, reasoning=True)
    assert first_token_limit(rt.models["m"], reasoning=False).seconds == 2.0
    assert first_token_limit(rt.models["m"], reasoning=True).seconds == pytest.approx(24.0)


def test_overrides_win() -> None:
    rt = runtime(ttft_timeout_s=4)
    feed(rt, [100.0] * 30)
    assert first_token_limit(rt.models["m"], reasoning=False).source == "model"
    assert first_token_limit(rt.models["m"], reasoning=False).seconds == 4
    route = first_token_limit(rt.models["m"], reasoning=False, route_override=rt.routes["r"].config.ttft_timeout_s)
    assert (route.seconds, route.source) == (7, "route")


def test_a_local_model_waits_for_its_load() -> None:
    rt = runtime()
    limit = first_token_limit(rt.models["loc"], reasoning=False)
    assert limit.seconds == 50.0 and limit.source.startswith("local default")  # load_timeout_s 40 + 10
