"""The prompt classifier's latency (#17: p99 <= 2 ms per prompt up to 2,000 tokens, one core).

    python bench/classify.py [--samples 400] [--json]

Prompts of about 50, 500 and 2,000 tokens (English text at ~4 characters a token, plus a
few-shot multiple-choice prompt like RouterBench's), each classified ``--samples`` times in one
process pinned to one core; p50 and p99 per length.  Run by ``make bench`` (bench/run.py) and
alone by ``make bench-classify``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelyard.classify.model import Classifier  # noqa: E402

BAR_MS = 2.0


def _text(tokens: int, seed: int) -> str:
    words = (ROOT / "README.md").read_text(encoding="utf-8").split() + (ROOT / "docs" / "routing.md").read_text(
        encoding="utf-8"
    ).split()
    rng = random.Random(seed)
    out: list[str] = []
    chars = 0
    while chars < tokens * 4:
        w = rng.choice(words)
        out.append(w)
        chars += len(w) + 1
        if rng.random() < 0.02:
            out.append("\n\n")
    return " ".join(out)


def _few_shot(seed: int) -> str:
    rng = random.Random(seed)
    blocks = []
    for _ in range(5):
        q = _text(40, rng.randrange(1 << 30))
        blocks.append(f"{q}?\nA) {rng.random():.3f}\nB) {rng.random():.3f}\nC) no\nD) yes\nAnswer:\nB")
    return "\n\n".join(blocks)[:-1]


def measure(samples: int = 400) -> dict[str, Any]:
    """p50/p99 (ms) per prompt length; the loading time of the weights."""
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    t0 = time.perf_counter()
    clf = Classifier.load()
    load_ms = (time.perf_counter() - t0) * 1000
    cases = {"50 tokens": 50, "500 tokens": 500, "2,000 tokens": 2000}
    result: dict[str, Any] = {"load_ms": round(load_ms, 1), "samples": samples, "bar_p99_ms": BAR_MS, "lengths": {}}
    prompts = {name: [_text(n, seed) for seed in range(20)] for name, n in cases.items()}
    prompts["few-shot (RouterBench-like)"] = [_few_shot(seed) for seed in range(20)]
    for name, texts in prompts.items():
        for t in texts[:5]:
            clf.classify(t)  # warm
        times = []
        for i in range(samples):
            text = texts[i % len(texts)]
            start = time.perf_counter()
            clf.classify(text)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        result["lengths"][name] = {
            "chars": round(statistics.mean(len(t) for t in texts)),
            "p50_ms": round(times[len(times) // 2], 3),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        }
    result["met"] = all(v["p99_ms"] <= BAR_MS for v in result["lengths"].values())
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Prompt classifier, one core, {result['samples']} prompts per length "
        f"(weights load in {result['load_ms']} ms):",
        "",
        "| prompt | characters | p50 | p99 | bar (p99) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, v in result["lengths"].items():
        ok = "met" if v["p99_ms"] <= result["bar_p99_ms"] else "**not met**"
        lines.append(f"| {name} | {v['chars']:,} | {v['p50_ms']:.2f} ms | {v['p99_ms']:.2f} ms | {ok} (<= 2 ms) |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    result = measure(args.samples)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
