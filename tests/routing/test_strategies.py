from __future__ import annotations

import typing
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.config import schema
from modelyard.routing.strategies import (
    STRATEGIES,
    Cost,
    Latency,
    LeastBusy,
    Priority,
    Random,
    RoundRobin,
    Strategy,
    Weighted,
    make_strategy,
)


@dataclass(eq=False)
class Cand:
    name: str
    weight: float = 1.0
    in_flight: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    ttft_reasoning_ms: float | None = None
    est_cost_usd: float | None = None

    def __repr__(self) -> str:
        return self.name


def names(ordered: list[Cand]) -> list[str]:
    return [c.name for c in ordered]


def pool_of(n: int) -> list[Cand]:
    return [Cand(chr(ord("a") + i)) for i in range(n)]


def test_registry_matches_config_names() -> None:
    assert set(STRATEGIES) == set(typing.get_args(schema.Strategy))
    for key, cls in STRATEGIES.items():
        assert cls.name == key
        strategy = make_strategy(key, seed=1)
        assert isinstance(strategy, cls)
        assert isinstance(strategy, Strategy)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        STRATEGIES["x"] = RoundRobin  # type: ignore[index]


def test_make_strategy_unknown_name() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        make_strategy("fastest")


def test_make_strategy_returns_fresh_instances() -> None:
    a, b = make_strategy("round_robin"), make_strategy("round_robin")
    assert a is not b
    pool = pool_of(3)
    assert names(a.order(pool)) == ["a", "b", "c"]
    assert names(a.order(pool)) == ["b", "c", "a"]
    assert names(b.order(pool)) == ["a", "b", "c"]  # its own counter


def test_round_robin_rotates() -> None:
    rr = RoundRobin()
    pool = pool_of(3)
    seen = [names(rr.order(pool)) for _ in range(4)]
    assert seen == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_round_robin_copes_with_pool_changes() -> None:
    rr = RoundRobin()
    rr.order(pool_of(5))
    rr.order(pool_of(5))
    rr.order(pool_of(5))
    assert sorted(names(rr.order(pool_of(2)))) == ["a", "b"]
    assert rr.order([]) == []
    firsts = Counter(rr.order(pool_of(2))[0].name for _ in range(10))
    assert firsts == {"a": 5, "b": 5}


def test_random_is_seedable_and_covers_every_position() -> None:
    pool = pool_of(4)
    a, b = Random(seed=7), Random(seed=7)
    runs_a = [names(a.order(pool)) for _ in range(20)]
    runs_b = [names(b.order(pool)) for _ in range(20)]
    assert runs_a == runs_b
    firsts = Counter(names(a.order(pool))[0] for _ in range(4000))
    assert set(firsts) == {"a", "b", "c", "d"}
    assert all(800 < n < 1200 for n in firsts.values())


def test_weighted_follows_weights() -> None:
    pool = [Cand("a", weight=1), Cand("b", weight=3), Cand("c", weight=6)]
    w = Weighted(seed=3)
    firsts = Counter(w.order(pool)[0].name for _ in range(10_000))
    assert 800 < firsts["a"] < 1200
    assert 2700 < firsts["b"] < 3300
    assert 5600 < firsts["c"] < 6400
    # second place, given c went first, follows the remaining weights 1:3
    seconds = Counter(o[1].name for o in (w.order(pool) for _ in range(10_000)) if o[0].name == "c")
    total = seconds["a"] + seconds["b"]
    assert 0.2 < seconds["a"] / total < 0.3


def test_weighted_zero_weights_go_last_in_pool_order() -> None:
    pool = [Cand("z1", weight=0), Cand("a", weight=1), Cand("z2", weight=0), Cand("b", weight=5)]
    w = Weighted(seed=1)
    for _ in range(200):
        ordered = names(w.order(pool))
        assert sorted(ordered[:2]) == ["a", "b"]
        assert ordered[2:] == ["z1", "z2"]
    assert names(w.order([Cand("x", weight=0), Cand("y", weight=0)])) == ["x", "y"]


def test_weighted_is_seedable() -> None:
    pool = [Cand("a", weight=1), Cand("b", weight=2), Cand("c", weight=3)]
    a, b = Weighted(seed=11), Weighted(seed=11)
    assert [names(a.order(pool)) for _ in range(30)] == [names(b.order(pool)) for _ in range(30)]


def test_least_busy() -> None:
    pool = [Cand("a", in_flight=3), Cand("b", in_flight=1), Cand("c", in_flight=1), Cand("d", in_flight=0)]
    assert names(LeastBusy().order(pool)) == ["d", "b", "c", "a"]


def test_latency_uses_latency_or_ttft_and_explores_unknown_first() -> None:
    pool = [
        Cand("slow", latency_ms=900, ttft_ms=100),
        Cand("fast", latency_ms=200, ttft_ms=400),
        Cand("new"),
        Cand("mid", latency_ms=500, ttft_ms=None),
    ]
    assert names(Latency().order(pool)) == ["new", "fast", "mid", "slow"]
    assert names(Latency().order(pool, stream=True)) == ["new", "mid", "slow", "fast"]


def test_a_reasoning_stream_ranks_by_reasoning_first_tokens() -> None:
    """A model quick to answer plainly may think long: reasoning streams rank by their own figure."""
    pool = [
        Cand("thinks-long", ttft_ms=80, ttft_reasoning_ms=4000),
        Cand("thinks-short", ttft_ms=300, ttft_reasoning_ms=900),
    ]
    assert names(Latency().order(pool, stream=True)) == ["thinks-long", "thinks-short"]
    assert names(Latency().order(pool, stream=True, reasoning=True)) == ["thinks-short", "thinks-long"]
    assert names(Latency().preview(pool, stream=True, reasoning=True)) == ["thinks-short", "thinks-long"]


def test_latency_ties_keep_pool_order() -> None:
    pool = [Cand("a", latency_ms=5), Cand("b", latency_ms=5), Cand("c"), Cand("d")]
    assert names(Latency().order(pool)) == ["c", "d", "a", "b"]


def test_cost_cheapest_first_unknown_last() -> None:
    pool = [
        Cand("x"),
        Cand("pricey", est_cost_usd=0.01),
        Cand("free", est_cost_usd=0.0),
        Cand("cheap", est_cost_usd=0.001),
    ]
    assert names(Cost().order(pool)) == ["free", "cheap", "pricey", "x"]


def test_priority_keeps_pool_order_in_a_new_list() -> None:
    pool = pool_of(4)
    ordered = Priority().order(pool)
    assert ordered == pool
    assert ordered is not pool


def test_strategies_accept_tuples() -> None:
    pool = tuple(pool_of(3))
    for key in STRATEGIES:
        assert sorted(names(make_strategy(key).order(pool))) == ["a", "b", "c"]


CANDS = st.lists(
    st.builds(
        Cand,
        name=st.text(min_size=1, max_size=3),
        weight=st.sampled_from([0.0, 0.5, 1.0, 2.0, 10.0]),
        in_flight=st.integers(0, 5),
        latency_ms=st.none() | st.floats(0, 5000),
        ttft_ms=st.none() | st.floats(0, 5000),
        est_cost_usd=st.none() | st.floats(0, 1),
    ),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(pool=CANDS, key=st.sampled_from(sorted(STRATEGIES)), stream=st.booleans(), calls=st.integers(1, 4))
def test_every_strategy_returns_a_permutation(pool: list[Cand], key: str, stream: bool, calls: int) -> None:
    strategy = make_strategy(key, seed=0)
    before = list(pool)
    for _ in range(calls):
        ordered = strategy.order(pool, stream=stream)
        assert sorted(map(id, ordered)) == sorted(map(id, pool))
        assert pool == before  # the pool is not mutated


@settings(max_examples=100, deadline=None)
@given(pool=CANDS)
def test_sorting_strategies_are_ordered(pool: list[Cand]) -> None:
    busy = [c.in_flight for c in LeastBusy().order(pool)]
    assert busy == sorted(busy)
    costs = [c.est_cost_usd for c in Cost().order(pool)]
    known = [c for c in costs if c is not None]
    assert costs == sorted(known) + [None] * (len(costs) - len(known))
    lat = [c.latency_ms for c in Latency().order(pool)]
    unknown = lat.count(None)
    assert lat[:unknown] == [None] * unknown
    assert lat[unknown:] == sorted(x for x in lat if x is not None)
    weighted = Weighted(seed=0).order(pool)
    zeros = [c for c in pool if c.weight == 0]
    assert weighted[len(weighted) - len(zeros) :] == zeros
