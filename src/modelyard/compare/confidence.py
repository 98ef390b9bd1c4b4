"""95 % intervals for the figures recommendations rest on: Wilson for rates, bootstrap for means."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = ["bootstrap_diff", "overlap", "wilson"]

_Z = 1.959963984540054


def wilson(successes: float, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a rate (``successes`` may be fractional: scores summed)."""
    if n <= 0:
        return (0.0, 1.0)
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + _Z * _Z / n
    centre = (p + _Z * _Z / (2 * n)) / denom
    half = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def bootstrap_diff(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 1000, seed: int = 7
) -> tuple[float, float] | None:
    """The 95 % bootstrap interval of ``mean(b) - mean(a)`` (None when either side is empty)."""
    if not a or not b:
        return None
    rng = random.Random(seed)
    na, nb = len(a), len(b)
    diffs = []
    for _ in range(resamples):
        ma = sum(a[rng.randrange(na)] for _ in range(na)) / na
        mb = sum(b[rng.randrange(nb)] for _ in range(nb)) / nb
        diffs.append(mb - ma)
    diffs.sort()
    lo = diffs[int(0.025 * resamples)]
    hi = diffs[min(resamples - 1, int(0.975 * resamples))]
    return (lo, hi)
