"""A comparison's figures: per model, the summary (winner, best for cost, speed, accuracy) and
the recommendations against the current model, each with its confidence."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from modelyard.compare.confidence import bootstrap_diff, overlap, wilson
from modelyard.compare.graders import Grade

__all__ = ["ModelFigures", "Sample", "figures", "recommend", "summary"]


@dataclass(slots=True)
class Sample:
    model: str
    prompt_id: str
    iteration: int
    ok: bool
    latency_ms: float
    ttft_ms: float | None
    cost_usd: float
    answer: str
    grade: Grade | None
    error: str | None = None

    @property
    def score(self) -> float | None:
        """The sample's score; a failed call scores 0 when the run grades answers."""
        if self.grade is not None:
            return self.grade.score
        return None

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out["answer"] = self.answer[:2000]
        out["grade"] = asdict(self.grade) if self.grade is not None else None
        return out


@dataclass(slots=True)
class ModelFigures:
    model: str
    requests: int
    successes: int
    success_rate: float
    latency_avg_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_avg_ms: float | None
    #: the mean score (None: no grader)
    accuracy: float | None
    #: the share of prompts whose iterations all got the same verdict (None: one iteration, no grader)
    consistency: float | None
    accurate: int
    partial: int
    failed: int
    total_cost_usd: float
    cost_per_request_usd: float | None
    cost_per_accurate_usd: float | None


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(len(s) - 1, int(k) + 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 2)


def _one(model: str, samples: Sequence[Sample], iterations: int) -> ModelFigures:
    ok = [s for s in samples if s.ok]
    lat = [s.latency_ms for s in ok]
    ttft = [s.ttft_ms for s in ok if s.ttft_ms is not None]
    graded = [s for s in samples if s.grade is not None]
    verdicts = [s.grade.verdict for s in graded if s.grade is not None]
    accurate, partial = verdicts.count("accurate"), verdicts.count("partial")
    failed = len(samples) - accurate - partial if graded else len(samples) - len(ok)
    accuracy = round(sum(s.grade.score for s in graded if s.grade) / len(samples), 4) if graded else None
    consistency = None
    if graded and iterations > 1:
        by_prompt: dict[str, set[str]] = {}
        for s in samples:
            by_prompt.setdefault(s.prompt_id, set()).add(s.grade.verdict if s.grade else "failed")
        consistency = round(sum(1 for v in by_prompt.values() if len(v) == 1) / len(by_prompt), 4)
    total = sum(s.cost_usd for s in samples)
    return ModelFigures(
        model=model,
        requests=len(samples),
        successes=len(ok),
        success_rate=round(len(ok) / len(samples), 4) if samples else 0.0,
        latency_avg_ms=round(statistics.fmean(lat), 2) if lat else None,
        latency_p50_ms=_pct(lat, 0.5),
        latency_p95_ms=_pct(lat, 0.95),
        ttft_p50_ms=_pct(ttft, 0.5),
        ttft_avg_ms=round(statistics.fmean(ttft), 2) if ttft else None,
        accuracy=accuracy,
        consistency=consistency,
        accurate=accurate,
        partial=partial,
        failed=failed,
        total_cost_usd=round(total, 8),
        cost_per_request_usd=round(total / len(samples), 8) if samples else None,
        cost_per_accurate_usd=round(total / accurate, 8) if accurate else None,
    )


def figures(models: Sequence[str], samples: Sequence[Sample], iterations: int) -> dict[str, ModelFigures]:
    return {m: _one(m, [s for s in samples if s.model == m], iterations) for m in models}


def _weighted(figs: Mapping[str, ModelFigures], weights: Mapping[str, float]) -> dict[str, float]:
    """Each model's weighted score in 0..1: accuracy / the best, the cheapest / cost, the fastest / p50."""
    live = {m: f for m, f in figs.items() if f.successes}
    if not live:
        return {}
    best_acc = max((f.accuracy or 0.0) for f in live.values())
    costs = [f.cost_per_request_usd for f in live.values() if f.cost_per_request_usd]
    speeds = [f.latency_p50_ms for f in live.values() if f.latency_p50_ms]
    w = dict(weights)
    if best_acc <= 0:
        w["accuracy"] = 0.0  # nothing graded: accuracy says nothing
    total = sum(w.values()) or 1.0
    out = {}
    for m, f in live.items():
        acc = (f.accuracy or 0.0) / best_acc if best_acc > 0 else 0.0
        cheap = (min(costs) / f.cost_per_request_usd) if costs and f.cost_per_request_usd else 1.0
        fast = (min(speeds) / f.latency_p50_ms) if speeds and f.latency_p50_ms else 0.0
        score = (w.get("accuracy", 0) * acc + w.get("cost", 0) * cheap + w.get("speed", 0) * fast) / total
        out[m] = round(score * f.success_rate, 4)
    return out


def summary(figs: Mapping[str, ModelFigures], weights: Mapping[str, float]) -> dict[str, Any]:
    scores = _weighted(figs, weights)
    live = [f for f in figs.values() if f.successes]

    def best(key: Any) -> str | None:
        ranked = sorted(live, key=key)
        return ranked[0].model if ranked else None

    graded = [f for f in live if f.accuracy is not None]
    return {
        "winner": max(scores, key=lambda m: (scores[m], -list(figs).index(m))) if scores else None,
        "scores": scores,
        "weights": dict(weights),
        "best_for_accuracy": (
            sorted(graded, key=lambda f: (-(f.accuracy or 0), f.cost_per_request_usd or 0))[0].model if graded else None
        ),
        "best_for_cost": best(lambda f: (f.cost_per_request_usd or 0.0, -(f.accuracy or 0))),
        "best_for_speed": best(lambda f: (f.latency_p50_ms or float("inf"), f.cost_per_request_usd or 0.0)),
    }


def _change(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or old == 0:
        return None
    return round(new / old - 1, 4)


def _describe(acc: float | None, cost: float | None, speed: float | None) -> str:
    parts = []
    if acc is not None:
        parts.append(f"{acc:+.0%} accuracy")
    if cost is not None:
        parts.append(f"{cost:+.0%} cost")
    if speed is not None:
        parts.append(f"{speed:.1f}x faster" if speed >= 1 else f"{1 / speed:.1f}x slower")
    return ", ".join(parts) or "no measured change"


def recommend(
    figs: Mapping[str, ModelFigures],
    samples: Sequence[Sample],
    weights: Mapping[str, float],
    current: str | None,
) -> list[dict[str, Any]]:
    """Switches worth making from ``current`` (default: the first model), best first, each with
    its expected change, reason, trade-offs and confidence; or one "keep" recommendation."""
    if not figs:
        return []
    if current is None or current not in figs:
        current = next(iter(figs))
    scores = _weighted(figs, weights)
    base = figs[current]
    by_model: dict[str, list[Sample]] = {}
    for s in samples:
        by_model.setdefault(s.model, []).append(s)
    out: list[dict[str, Any]] = []
    for m, f in figs.items():
        if m == current or not f.successes or scores.get(m, 0) <= scores.get(current, 0):
            continue
        acc = _change(f.accuracy, base.accuracy)
        cost = _change(f.cost_per_request_usd, base.cost_per_request_usd)
        speed = round(base.latency_p50_ms / f.latency_p50_ms, 2) if base.latency_p50_ms and f.latency_p50_ms else None
        evidence = _evidence(by_model.get(current, []), by_model.get(m, []), f, base)
        gains, losses = [], []
        for key, better, worse in (
            ("accuracy", (acc or 0) > 0, (acc or 0) < 0),
            ("cost", (cost or 0) < 0, (cost or 0) > 0),
            ("speed", (speed or 1) > 1, (speed or 1) < 1),
        ):
            if better:
                gains.append((key, evidence[key]["significant"]))
            if worse:
                losses.append((key, evidence[key]["significant"]))
        if base.accuracy is not None and f.accuracy is None:
            confidence = "low"
        elif gains and all(sig for _, sig in gains) and not any(sig for _, sig in losses):
            confidence = "high"
        elif any(sig for _, sig in gains):
            confidence = "medium"
        else:
            confidence = "low"
        out.append(
            {
                "model": m,
                "instead_of": current,
                "expected_change": {"accuracy": acc, "cost": cost, "speed": speed},
                "summary": _describe(acc, cost, speed),
                "reason": f"weighted score {scores[m]:.2f} against {scores.get(current, 0):.2f} for {current} "
                f"(better on {', '.join(k for k, _ in gains) or 'nothing measured'})",
                "trade_offs": [f"worse on {k}" + ("" if sig else " (within noise)") for k, sig in losses],
                "confidence": confidence,
                "evidence": evidence,
            }
        )
    out.sort(key=lambda r: -scores.get(r["model"], 0))
    if not out:
        out.append(
            {
                "model": current,
                "instead_of": current,
                "expected_change": {"accuracy": 0.0, "cost": 0.0, "speed": 1.0},
                "summary": "keep the current model",
                "reason": f"no model scores above {current} with these weights",
                "trade_offs": [],
                "confidence": "medium" if base.requests >= 30 else "low",
                "evidence": {},
            }
        )
    return out


def _evidence(a: Sequence[Sample], b: Sequence[Sample], fb: ModelFigures, fa: ModelFigures) -> dict[str, Any]:
    """Whether each difference is outside the noise: Wilson intervals of the accurate rate,
    bootstrap intervals of the mean latency and cost difference."""
    ev: dict[str, Any] = {}
    if fa.accuracy is not None and fb.accuracy is not None:
        ia = wilson(sum(s.score or 0 for s in a), len(a))
        ib = wilson(sum(s.score or 0 for s in b), len(b))
        ev["accuracy"] = {"current": ia, "candidate": ib, "significant": not overlap(ia, ib)}
    else:
        ev["accuracy"] = {"significant": False, "note": "no quality data"}
    la, lb = [s.latency_ms for s in a if s.ok], [s.latency_ms for s in b if s.ok]
    lat = bootstrap_diff(la, lb)
    ev["speed"] = {"latency_diff_ms_95": lat, "significant": _excludes_zero(lat, la, lb)}
    ca, cb = [s.cost_usd for s in a], [s.cost_usd for s in b]
    cost = bootstrap_diff(ca, cb)
    ev["cost"] = {"cost_diff_usd_95": cost, "significant": _excludes_zero(cost, ca, cb)}
    return ev


def _excludes_zero(interval: tuple[float, float] | None, xs: Sequence[float], ys: Sequence[float]) -> bool:
    """Whether a difference's interval leaves 0 out by more than float noise (relative to the means)."""
    if interval is None or not xs or not ys:
        return False
    eps = 1e-9 * max(abs(statistics.fmean(xs)), abs(statistics.fmean(ys)), 1e-12)
    return interval[0] > eps or interval[1] < -eps
