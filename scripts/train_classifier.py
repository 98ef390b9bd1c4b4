"""Train and evaluate modelyard's prompt classifier on RouterBench (../shared/data/routerbench) only.

    python scripts/train_classifier.py [--data DIR] [--out src/modelyard/classify/weights.json]
                                       [--report docs/classifier-eval.json]

The label of a prompt is "hard": the strong model (gpt-4-1106-preview) scored higher on it than the
cheapest model (mistral-7b-chat, the lowest total cost of the 11).  A logistic regression over
modelyard.classify.features is fitted with numpy (L2 strength picked by 5-fold cross-validation on
the training splits), then evaluated on the test splits, and leave-one-task-out (train on two
tasks' training splits, test on the third task's test split).  Each evaluation is a deferral
curve: the hardest-looking k % of prompts go to the strong model, the rest to the cheap one, for k
from 0 to 100; its APGR (average share of the quality gap recovered) is compared with random
routing and a prompt-length heuristic at the same strong-call rates.  The script never reads any
other benchmark's labels.  numpy is needed here only, never at inference.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelyard.classify.features import DENSE, Features, extract  # noqa: E402
from modelyard.classify.model import Classifier  # noqa: E402

STRONG = "gpt-4-1106-preview"
CHEAP = "mistralai/mistral-7b-chat"
TASKS = ("arc_challenge", "mbpp", "winograde")
MIN_DF = 3
#: standardised dense values are clipped to +-CLIP (as modelyard.classify.model does)
CLIP = 3.0
RATES = np.linspace(0.0, 1.0, 101)


@dataclass
class Row:
    task: str
    text: str
    q_strong: float
    q_cheap: float
    c_strong: float
    c_cheap: float

    @property
    def hard(self) -> bool:
        return self.q_strong > self.q_cheap


def load(data: Path, task: str, split: str) -> list[Row]:
    csv.field_size_limit(1 << 30)
    rows: list[Row] = []
    with (data / f"{task}_{split}.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            try:
                vals = [float(r[k]) for k in (STRONG, CHEAP, f"{STRONG}|total_cost", f"{CHEAP}|total_cost")]
            except ValueError:
                continue  # a model's answer is missing on this prompt
            try:
                parts = ast.literal_eval(r["prompt"])
                text = "\n\n".join(str(p) for p in parts) if isinstance(parts, list) else str(parts)
            except (ValueError, SyntaxError):
                text = r["prompt"]
            rows.append(Row(task, text, *vals))
    return rows


class Design:
    """The vocabulary (words seen in >= MIN_DF training prompts) and the dense scaling."""

    def __init__(self, feats: list[Features]) -> None:
        self.vocab: dict[tuple[str, str], int] = {}
        for ns in ("words", "tail", "pairs"):
            df = Counter(tok for f in feats for tok in getattr(f, ns))
            for tok, n in sorted(df.items()):
                if n >= MIN_DF:
                    self.vocab[(ns, tok)] = len(self.vocab)
        dense = np.array([f.dense for f in feats], dtype=np.float64)
        self.mean = dense.mean(axis=0)
        self.scale = dense.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        # the task one-hots stay 0/1: a task rare in training must not become a huge standardised value
        first_task = DENSE.index("task_code")
        self.mean[first_task:] = 0.0
        self.scale[first_task:] = 1.0

    @property
    def width(self) -> int:
        return len(self.vocab) + len(DENSE)

    def matrix(self, feats: list[Features]) -> np.ndarray:
        x = np.zeros((len(feats), self.width), dtype=np.float32)
        for i, f in enumerate(feats):
            for ns in ("words", "tail", "pairs"):
                bag = getattr(f, ns)
                if not bag:
                    continue
                v = 1.0 / math.sqrt(len(bag))
                for tok in bag:
                    j = self.vocab.get((ns, tok))
                    if j is not None:
                        x[i, j] = v
            x[i, len(self.vocab) :] = np.clip((np.array(f.dense) - self.mean) / self.scale, -CLIP, CLIP)
        return x


def fit(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 600) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by full-batch Adam."""
    w = np.zeros(x.shape[1], dtype=x.dtype)  # the design's dtype: a float64 w would copy x every step
    y = y.astype(x.dtype)
    b = math.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6))
    m_w, v_w, m_b, v_b = np.zeros_like(w), np.zeros_like(w), 0.0, 0.0
    lr, b1, b2 = 0.05, 0.9, 0.999
    n = len(y)
    for t in range(1, iters + 1):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = (p - y).astype(x.dtype)
        gw = (x.T @ g) / n + l2 * w
        gb = float(g.mean())
        m_w = b1 * m_w + (1 - b1) * gw
        v_w = b2 * v_w + (1 - b2) * gw * gw
        m_b = b1 * m_b + (1 - b1) * gb
        v_b = b2 * v_b + (1 - b2) * gb * gb
        w -= (lr * (m_w / (1 - b1**t)) / (np.sqrt(v_w / (1 - b2**t)) + 1e-8)).astype(x.dtype)
        b -= lr * (m_b / (1 - b1**t)) / (math.sqrt(v_b / (1 - b2**t)) + 1e-8)
    return w, b


def log_loss(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    p = np.clip(1 / (1 + np.exp(-(x @ w + b))), 1e-9, 1 - 1e-9)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def pick_l2(x: np.ndarray, y: np.ndarray, seed: int = 7) -> float:
    rng = np.random.default_rng(seed)
    folds = rng.permutation(len(y)) % 5
    best, best_loss = 1e-2, math.inf
    for l2 in (1e-3, 1e-2, 3e-2, 1e-1):
        losses = []
        for k in range(5):
            tr, te = folds != k, folds == k
            w, b = fit(x[tr], y[tr], l2, iters=300)
            losses.append(log_loss(x[te], y[te], w, b))
        loss = float(np.mean(losses))
        print(f"  l2={l2:g}: cross-validated log loss {loss:.4f}", file=sys.stderr)
        if loss < best_loss:
            best, best_loss = l2, loss
    return best


def train(rows: list[Row]) -> dict[str, object]:
    feats = [extract(r.text) for r in rows]
    design = Design(feats)
    x = design.matrix(feats)
    y = np.array([1.0 if r.hard else 0.0 for r in rows])
    l2 = pick_l2(x, y)
    w, b = fit(x, y, l2)
    scores = x @ w + b
    bags: dict[str, dict[str, float]] = {"words": {}, "tail": {}, "pairs": {}}
    for (ns, tok), j in design.vocab.items():
        if abs(w[j]) >= 1e-4:
            bags[ns][tok] = round(float(w[j]), 5)
    k = len(design.vocab)
    return {
        "version": 1,
        "bias": round(b, 6),
        **bags,
        "dense": {
            "names": list(DENSE),
            "mean": [round(float(v), 6) for v in design.mean],
            "scale": [round(float(v), 6) for v in design.scale],
            "weight": [round(float(v), 6) for v in w[k:]],
        },
        "quantiles": [round(float(v), 6) for v in np.quantile(scores, np.linspace(0, 1, 101))],
        "meta": {
            "trained_on": "RouterBench zero-shot slices (arc_challenge, mbpp, winograde) training splits",
            "label": f"{STRONG} scored higher than {CHEAP}",
            "strong": STRONG,
            "cheap": CHEAP,
            "l2": l2,
            "train_rows": len(rows),
            "hard_share": round(float(y.mean()), 4),
        },
    }


def curve(order: np.ndarray, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    """Quality and cost of sending the first k of ``order`` (indices, hardest first) to the strong model."""
    qs = np.array([r.q_strong for r in rows])
    qc = np.array([r.q_cheap for r in rows])
    cs = np.array([r.c_strong for r in rows])
    cc = np.array([r.c_cheap for r in rows])
    n = len(rows)
    quality, spend = [], []
    for rate in RATES:
        k = round(rate * n)
        strong = np.zeros(n, dtype=bool)
        strong[order[:k]] = True
        quality.append(float(np.where(strong, qs, qc).mean()))
        spend.append(float(np.where(strong, cs, cc).sum()))
    return np.array(quality), np.array(spend)


def apgr(quality: np.ndarray, rows: list[Row]) -> float:
    q_strong = float(np.mean([r.q_strong for r in rows]))
    q_cheap = float(np.mean([r.q_cheap for r in rows]))
    pgr = (quality - q_cheap) / (q_strong - q_cheap)
    return float(np.trapezoid(pgr, RATES)) if hasattr(np, "trapezoid") else float(np.trapz(pgr, RATES))


def evaluate(clf: Classifier, rows: list[Row], seed: int = 11) -> dict[str, object]:
    q_strong = float(np.mean([r.q_strong for r in rows]))
    scores = np.array([clf.score(r.text) for r in rows])
    lengths = np.array([len(r.text) for r in rows], dtype=np.float64)
    rng = np.random.default_rng(seed)
    result: dict[str, object] = {
        "rows": len(rows),
        "strong_quality": round(q_strong, 4),
        "cheap_quality": round(float(np.mean([r.q_cheap for r in rows])), 4),
        "hard_share": round(float(np.mean([r.hard for r in rows])), 4),
    }
    random_quality = np.mean([curve(rng.permutation(len(rows)), rows)[0] for _ in range(200)], axis=0)
    policies = {
        "classifier": curve(np.argsort(-scores, kind="stable"), rows)[0],
        "length": curve(np.argsort(-lengths, kind="stable"), rows)[0],
        "random": random_quality,
    }
    for name, quality in policies.items():
        result[name] = {
            "apgr": round(apgr(quality, rows), 4),
            "kept_at": {
                f"{int(r * 100)}%": round(float(quality[round(r * 100)] / q_strong), 4) for r in (0.2, 0.5, 0.8)
            },
        }
    # what a strong-call rate costs, as a share of sending everything to the strong model (any policy)
    spend = curve(np.argsort(-scores, kind="stable"), rows)[1]
    result["cost_share_at"] = {
        f"{int(r * 100)}%": round(float(spend[round(r * 100)] / spend[-1]), 4) for r in (0.2, 0.5, 0.8)
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routerbench")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "modelyard" / "classify" / "weights.json")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "classifier-eval.json")
    args = ap.parse_args()
    train_rows = {t: load(args.data, t, "train") for t in TASKS}
    test_rows = {t: load(args.data, t, "test") for t in TASKS}
    print("training on all three training splits", file=sys.stderr)
    doc = train([r for t in TASKS for r in train_rows[t]])
    args.out.write_bytes(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())
    clf = Classifier(doc)
    report: dict[str, object] = {"strong": STRONG, "cheap": CHEAP, "test": {}, "leave_one_task_out": {}}
    test = report["test"]
    assert isinstance(test, dict)
    for t in TASKS:
        test[t] = evaluate(clf, test_rows[t])
    test["all"] = evaluate(clf, [r for t in TASKS for r in test_rows[t]])
    loto = report["leave_one_task_out"]
    assert isinstance(loto, dict)
    for held in TASKS:
        print(f"leave one task out: {held}", file=sys.stderr)
        other = Classifier(train([r for t in TASKS if t != held for r in train_rows[t]]))
        loto[held] = evaluate(other, test_rows[held])
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
