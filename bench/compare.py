"""A comparison run at a realistic pace (#17: 4 models x 20 prompts x 3 iterations within 5 minutes).

    python bench/compare.py [--models 4] [--prompts 20] [--iterations 3] [--concurrency 8] [--json]

A fake OpenAI-compatible provider answers every model at 40 tokens a second after a first token of
0.3-1.0 s (each answer 20-80 tokens, so a call takes about 0.8-3 s), with scripted answers that
are right on a known share of the prompts; the run goes through the in-process gateway (the same
pipeline as the server, usage records in a throwaway SQLite file) and is graded with `contains`.
Reports the wall time and the figures.  Run by ``make bench`` (bench/run.py) and alone by
``make bench-compare``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelyard.compare.runner import ComparisonRun  # noqa: E402
from modelyard.compare.spec import ComparisonSpec, GraderSpec, parse_prompts  # noqa: E402
from modelyard.sdk import Gateway  # noqa: E402
from modelyard.testing import FakeOpenAI, Profile  # noqa: E402

BAR_S = 300.0
#: model -> (upstream, share of prompts it answers right)
MODELS = {"tiny": 0.55, "small": 0.7, "medium": 0.85, "large": 0.95, "xl": 0.97, "xxl": 0.98, "m7": 0.6, "m8": 0.8}


async def measure(models: int = 4, prompts: int = 20, iterations: int = 3, concurrency: int = 8) -> dict[str, Any]:
    rng = random.Random(17)
    names = list(MODELS)[:models]
    fake = FakeOpenAI().start_in_thread()
    try:
        items = []
        for i in range(prompts):
            text = f"Question {i}: what is the code word of item {i}?"
            answer = f"word{i}"
            items.append({"id": f"q{i}", "prompt": text, "expected": answer})
            for name in names:
                right = rng.random() < MODELS[name]
                filler = " ".join(["and"] * rng.randint(20, 80))
                fake.script(f"up-{name}", f"{answer if right else 'unsure'} {filler}", prompt=text)
        for name in names:
            fake.profile(f"up-{name}", Profile(ttft_s=(0.3, 1.0), tokens_per_s=40.0, tokens=50))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {
                "providers": {"fake": {"kind": "openai", "base_url": fake.base_url, "api_key": "sk-bench"}},
                "models": {
                    n: {
                        "provider": "fake",
                        "model": f"up-{n}",
                        "input_cost_per_mtok": 0.2 * (k + 1),
                        "output_cost_per_mtok": 0.8 * (k + 1),
                        "max_output_tokens": 256,
                    }
                    for k, n in enumerate(names)
                },
                "database": f"sqlite:///{tmp}/bench.db",
            }
            spec = ComparisonSpec(
                models=tuple(names),
                prompts=parse_prompts(items),
                iterations=iterations,
                concurrency=concurrency,
                graders=(GraderSpec.of("contains"),),
            )
            async with Gateway.from_config(cfg) as gw:
                run = ComparisonRun(spec, await gw.pipeline())
                run.check()
                t0 = time.perf_counter()
                result = await run.run()
                wall = time.perf_counter() - t0
    finally:
        fake.stop_thread()
    return {
        "models": models,
        "prompts": prompts,
        "iterations": iterations,
        "concurrency": concurrency,
        "calls": result["calls"]["done"],
        "wall_s": round(wall, 1),
        "bar_s": BAR_S,
        "met": wall <= BAR_S and result["status"] == "done",
        "status": result["status"],
        "figures": {
            m: {
                k: f[k] for k in ("accuracy", "latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "cost_per_request_usd")
            }
            for m, f in result["figures"].items()
        },
        "winner": result["summary"]["winner"],
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Comparison run, {r['models']} models x {r['prompts']} prompts x {r['iterations']} iterations "
        f"({r['calls']} calls, concurrency {r['concurrency']}) against fakes answering at 40 tokens/s after "
        f"0.3-1.0 s: **{r['wall_s']} s** (bar: within {r['bar_s']:.0f} s: {'met' if r['met'] else 'not met'}); "
        f"winner {r['winner']}.",
        "",
        "| model | accuracy | p50 | p95 | TTFT p50 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m, f in r["figures"].items():
        lines.append(
            f"| {m} | {f['accuracy']:.0%} | {f['latency_p50_ms']:.0f} ms | {f['latency_p95_ms']:.0f} ms "
            f"| {f['ttft_p50_ms']:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=4, choices=range(1, 9))
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = asyncio.run(measure(args.models, args.prompts, args.iterations, args.concurrency))
    print(json.dumps(r, indent=2) if args.json else markdown(r))
    return 0 if r["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
