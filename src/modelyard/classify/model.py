"""The shipped prompt classifier: complexity in [0, 1], a tier and a task, in-process on CPU.

A logistic regression over :mod:`modelyard.classify.features`, trained by
``scripts/train_classifier.py`` on ``../shared/data/routerbench`` only (docs/routing.md has its
held-out figures).  It estimates ``p_hard``: the probability that the cheapest model answers a
prompt worse than the strong one.  ``complexity`` is the prompt's rank among the training prompts
by that estimate (0.8: harder-looking than 80 % of them), so a threshold reads as a share of
traffic: tiers ``cheap <= 0.5 < mid <= 0.8 < strong`` send about a fifth of training-like
prompts to the strong tier.  Inference is pure Python; the weights load once per process.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from modelyard.classify.features import DENSE, Features, extract

__all__ = ["DEFAULT_TIERS", "Classification", "Classifier", "ClassifierError"]

#: the default tiers of ``modelyard classify``: (name, highest complexity), the last one open
DEFAULT_TIERS: tuple[tuple[str, float], ...] = (("cheap", 0.5), ("mid", 0.8), ("strong", 1.0))


#: standardised dense values are clipped to this (as in training), so an unusual prompt cannot swing the score
_CLIP = 3.0


class ClassifierError(ValueError):
    """The weights file is missing or not a classifier of this version."""


@dataclass(slots=True, frozen=True)
class Classification:
    #: the prompt's rank among the training prompts, 0 (easiest) .. 1 (hardest)
    complexity: float
    #: the probability that the cheapest model answers worse than the strong one
    p_hard: float
    #: the rule-based task tag (modelyard.classify.tagger)
    task: str

    @property
    def cheap_quality(self) -> float:
        """The expected quality of a model below the strong tier, relative to the strong one."""
        return 1.0 - self.p_hard

    def tier(self, tiers: Sequence[tuple[str, float]] = DEFAULT_TIERS) -> str:
        """The first tier whose highest complexity this prompt does not exceed (the last one otherwise)."""
        for name, ceiling in tiers:
            if self.complexity <= ceiling:
                return name
        return tiers[-1][0]


class Classifier:
    """The weights of one trained classifier; :meth:`classify` is safe to call from any task."""

    __slots__ = ("_bias", "_dense", "_pairs", "_quantiles", "_tail", "_words", "meta")

    def __init__(self, doc: Mapping[str, Any]) -> None:
        try:
            if doc.get("version") != 1:
                raise ClassifierError(f"classifier weights of version {doc.get('version')!r}; this build reads 1")
            self._bias = float(doc["bias"])
            self._words: dict[str, float] = {str(k): float(v) for k, v in doc["words"].items()}
            self._tail: dict[str, float] = {str(k): float(v) for k, v in doc["tail"].items()}
            self._pairs: dict[str, float] = {str(k): float(v) for k, v in doc["pairs"].items()}
            dense = doc["dense"]
            if list(dense["names"]) != list(DENSE):
                raise ClassifierError("classifier weights were trained on other dense features")
            self._dense = [
                (float(m), float(s) or 1.0, float(w))
                for m, s, w in zip(dense["mean"], dense["scale"], dense["weight"], strict=True)
            ]
            self._quantiles = sorted(float(q) for q in doc["quantiles"])
            if len(self._quantiles) < 2:
                raise ClassifierError("classifier weights need at least two score quantiles")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ClassifierError(f"not a modelyard classifier weights file ({exc!r})") from None
        self.meta: dict[str, Any] = dict(doc.get("meta") or {})

    @classmethod
    def load(cls, path: str | Path | None = None) -> Classifier:
        """The shipped weights (``modelyard/classify/weights.json``), or those at ``path``."""
        try:
            if path is None:
                raw = resources.files("modelyard.classify").joinpath("weights.json").read_bytes()
            else:
                raw = Path(path).read_bytes()
            doc = orjson.loads(raw)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ClassifierError(f"cannot read classifier weights: {exc}") from None
        if not isinstance(doc, dict):
            raise ClassifierError("classifier weights must be a JSON object")
        return cls(doc)

    def score(self, text: str) -> float:
        """The logit of ``p_hard``."""
        return self._score(extract(text))

    def _score(self, f: Features) -> float:
        total = self._bias
        for bag, weights in ((f.words, self._words), (f.tail, self._tail), (f.pairs, self._pairs)):
            if bag:
                get = weights.get
                total += sum(get(tok, 0.0) for tok in bag) / math.sqrt(len(bag))
        for x, (mean, scale, w) in zip(f.dense, self._dense, strict=True):
            z = (x - mean) / scale
            total += (_CLIP if z > _CLIP else -_CLIP if z < -_CLIP else z) * w
        return total

    def classify(self, text: str) -> Classification:
        f = extract(text)
        s = self._score(f)
        return Classification(complexity=self.rank(s), p_hard=round(_sigmoid(s), 4), task=f.task)

    def rank(self, score: float) -> float:
        """The share of training prompts whose score is below ``score`` (interpolated), in [0, 1]."""
        q = self._quantiles
        if score <= q[0]:
            return 0.0
        if score >= q[-1]:
            return 1.0
        i = bisect.bisect_right(q, score)
        lo, hi = q[i - 1], q[i]
        frac = (score - lo) / (hi - lo) if hi > lo else 0.0
        return round((i - 1 + frac) / (len(q) - 1), 4)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
