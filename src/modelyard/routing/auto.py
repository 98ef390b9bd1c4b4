"""The ``auto`` strategy: each prompt's tier, from the shipped classifier, the quality floor and the budget.

For every request on an ``auto`` route the pipeline classifies the prompt
(:mod:`modelyard.classify`) and :func:`choose` picks a tier:

1. the first tier whose ``max_complexity`` the prompt's complexity does not exceed (the last
   tier takes the rest);
2. while that tier is below the last and its expected quality, ``1 - p_hard`` (the probability
   that a cheap model answers as well as the strong one), is under ``min_expected_quality``:
   the next tier up;
3. when ``max_cost_usd`` applies and no model of the chosen tier fits it: the most capable tier
   below it with a model that fits (the answer is cheaper than asked for, and the reason says so).

The plan then tries the chosen tier's models in their configured order, then the tiers above it
(escalation: a validator's rejection or a judge's low score moves the request up), then the tiers
below it, most capable first (failover when everything above is down).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelyard.config.schema import JudgeConfig

if TYPE_CHECKING:  # the classifier is loaded by the runtime when a config has an auto route
    from modelyard.classify.model import Classification, Classifier
    from modelyard.routing.deployment import Deployment

__all__ = ["AutoRoute", "Tier", "TierChoice", "choose"]


@dataclass(slots=True, frozen=True)
class Tier:
    name: str
    max_complexity: float
    #: model names: a request resolves them against its route's pool (enabled models, and an
    #: organisation's own provider where it brought its own key)
    models: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class AutoRoute:
    """An auto route's tiers, its classifier and its judge."""

    tiers: tuple[Tier, ...]
    classifier: Classifier
    min_expected_quality: float
    judge: JudgeConfig | None = None

    def tier_of(self, model: str) -> str | None:
        for tier in self.tiers:
            if model in tier.models:
                return tier.name
        return None


@dataclass(slots=True, frozen=True)
class TierChoice:
    """The tier picked for one prompt, why, and the order the plan follows."""

    tier: str
    complexity: float
    p_hard: float
    task: str
    reason: str
    order: tuple[Deployment, ...]


def choose(
    auto: AutoRoute,
    c: Classification,
    pool: Sequence[Deployment],
    *,
    max_cost_usd: float | None = None,
    estimate: Callable[[Deployment], float | None] | None = None,
) -> TierChoice:
    """The tier for a prompt classified as ``c`` (see the module docstring for the rules)."""
    by_name = {d.name: d for d in pool}
    resolved = [(t, tuple(by_name[m] for m in t.models if m in by_name)) for t in auto.tiers]
    live = [(t, deps) for t, deps in resolved if deps] or resolved
    tiers = [_Live(t.name, t.max_complexity, deps) for t, deps in live]
    last = len(tiers) - 1
    i = next((k for k, t in enumerate(tiers) if c.complexity <= t.max_complexity), last)
    reason = (
        f"complexity {c.complexity:.2f} <= {tiers[i].max_complexity:g}"
        if i < last
        else f"complexity {c.complexity:.2f}" + (f" > {tiers[i - 1].max_complexity:g}" if i else "")
    )
    floor = auto.min_expected_quality
    while i < last and c.cheap_quality < floor:
        i += 1
        reason = f"expected quality {c.cheap_quality:.2f} < min_expected_quality {floor:g}"
    if max_cost_usd is not None and estimate is not None and not _fits(tiers[i], max_cost_usd, estimate):
        cheaper = next((k for k in range(i - 1, -1, -1) if _fits(tiers[k], max_cost_usd, estimate)), None)
        if cheaper is not None:
            reason = f"{reason}; tier {tiers[i].name} does not fit max_cost_usd {max_cost_usd:g}"
            i = cheaper
    order = [*tiers[i].models]
    for t in tiers[i + 1 :]:
        order += [d for d in t.models if d not in order]
    for t in reversed(tiers[:i]):
        order += [d for d in t.models if d not in order]
    return TierChoice(
        tier=tiers[i].name, complexity=c.complexity, p_hard=c.p_hard, task=c.task, reason=reason, order=tuple(order)
    )


@dataclass(slots=True, frozen=True)
class _Live:
    name: str
    max_complexity: float
    models: tuple[Deployment, ...]


def _fits(tier: _Live, max_cost_usd: float, estimate: Callable[[Deployment], float | None]) -> bool:
    for dep in tier.models:
        usd = estimate(dep)
        if usd is None or usd <= max_cost_usd:
            return True
    return False
