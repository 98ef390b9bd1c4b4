"""Routing strategies: each orders a route's pool, best candidate first.

A strategy returns *every* pool member (the router falls through the list on failure), never
mutates the pool, and only reads the :class:`Candidate` properties.  Keep one instance per
route: :class:`RoundRobin` keeps its own counter, :class:`Random` and :class:`Weighted` their
own ``random.Random`` (seedable for tests).  Asyncio only: no locking.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar, Protocol, TypeVar

__all__ = [
    "STRATEGIES",
    "Auto",
    "Candidate",
    "Cost",
    "Latency",
    "LeastBusy",
    "Priority",
    "Random",
    "RoundRobin",
    "Strategy",
    "Weighted",
    "make_strategy",
]


class Candidate(Protocol):
    """What a strategy may look at."""

    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def ttft_ms(self) -> float | None: ...
    @property
    def ttft_reasoning_ms(self) -> float | None: ...
    @property
    def est_cost_usd(self) -> float | None: ...


C = TypeVar("C", bound=Candidate)


class Strategy(ABC):
    name: ClassVar[str]

    def __init__(self, *, seed: int | None = None) -> None:  # noqa: B027 - optional hook, not abstract
        """``seed`` is used by the random strategies and ignored by the others."""

    @abstractmethod
    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        """All members of ``pool``, best first."""

    def preview(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        """The order a request would get now, without changing the strategy's state (rotation,
        random draws): for ``/v1/estimate``.  The stateless strategies' preview is their order."""
        return self.order(pool, stream=stream, reasoning=reasoning)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RoundRobin(Strategy):
    """Rotate the starting position by one on every call."""

    name = "round_robin"

    def __init__(self, *, seed: int | None = None) -> None:
        self._next = 0

    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        if not pool:
            return []
        start = self._next % len(pool)
        self._next = start + 1
        return [*pool[start:], *pool[:start]]

    def preview(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        if not pool:
            return []
        start = self._next % len(pool)
        return [*pool[start:], *pool[:start]]


class Random(Strategy):
    """A uniformly random order."""

    name = "random"

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        ordered = list(pool)
        self._rng.shuffle(ordered)
        return ordered

    def preview(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        return list(pool)  # any order is as likely; no draw is spent


class Weighted(Strategy):
    """Weighted random order without replacement; weight 0 members come last, in pool order.

    Each member with a positive weight draws an exponential variate of rate ``weight`` and the
    smallest draw goes first, so member *i* is first with probability ``w_i / sum(w)`` and the
    rest of the order follows the same rule among the remaining members.
    """

    name = "weighted"

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        keyed: list[tuple[float, int, C]] = []
        zero: list[C] = []
        for i, c in enumerate(pool):
            w = c.weight
            if w > 0:  # also False for NaN
                key = 0.0 if math.isinf(w) else self._rng.expovariate(w)
                keyed.append((key, i, c))
            else:
                zero.append(c)
        keyed.sort(key=lambda t: (t[0], t[1]))
        return [c for _, _, c in keyed] + zero

    def preview(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        """Heaviest first (the most likely order); no draw is spent."""
        return sorted(pool, key=lambda c: -c.weight if c.weight > 0 else math.inf)


class LeastBusy(Strategy):
    """Fewest requests in flight first; ties keep pool order."""

    name = "least_busy"

    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        return sorted(pool, key=lambda c: c.in_flight)


class Latency(Strategy):
    """Lowest time-to-first-token (streams) or latency first; never-measured members first (to explore).
    A reasoning stream ranks by the first-token time of reasoning requests, kept apart (contracts)."""

    name = "latency"

    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        def key(c: C) -> tuple[int, float]:
            value = (c.ttft_reasoning_ms if reasoning else c.ttft_ms) if stream else c.latency_ms
            return (0, 0.0) if value is None else (1, value)

        return sorted(pool, key=key)


class Cost(Strategy):
    """Cheapest estimated cost first; unknown cost last; ties keep pool order."""

    name = "cost"

    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        def key(c: C) -> tuple[int, float]:
            cost = c.est_cost_usd
            return (1, 0.0) if cost is None else (0, cost)

        return sorted(pool, key=key)


class Priority(Strategy):
    """Pool order, as configured."""

    name = "priority"

    def order(self, pool: Sequence[C], *, stream: bool = False, reasoning: bool = False) -> list[C]:
        return list(pool)


class Auto(Priority):
    """``strategy: auto``: the pipeline classifies each prompt and the plan follows the chosen
    tier (routing.auto); without a prompt (a preview) the pool's order, cheapest tier first."""

    name = "auto"


STRATEGIES: Mapping[str, type[Strategy]] = MappingProxyType(
    {cls.name: cls for cls in (RoundRobin, Random, Weighted, LeastBusy, Latency, Cost, Priority, Auto)}
)


def make_strategy(name: str, *, seed: int | None = None) -> Strategy:
    """A new strategy instance for the config name ``name`` (ValueError if unknown)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown routing strategy {name!r}; expected one of: {', '.join(STRATEGIES)}") from None
    return cls(seed=seed)
