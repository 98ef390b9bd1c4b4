"""CPU per chunk of the stream path in one process, without sockets: each adapter's real
``stream()`` decoding the bench mock's bytes for its wire format (handed over by a transport that
replays them), and the OpenAI front end's framing of what comes out (the pass-through's forwarder
for plain OpenAI-format chunks, the encoder for everything else).

    .venv/bin/python bench/stream_cpu.py [--chunks 200] [--per-read 1] [--repeats 7]

Sockets, HTTP and the per-request work (auth, routing, budgets, records) are left out on purpose:
they are the same for every format, and the end-to-end cells of ``make bench`` measure them among
much noise on a busy 2-core machine.  This isolates what one chunk costs in each format.
``--per-read``: upstream events per socket read (1: each arrives on its own, the worst case for
the pass-through; a fast upstream delivers many per read).  Medians over repeats; the ratio is to
the OpenAI-format pass-through; the minimum is the least disturbed sample.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mock_upstream

from modelyard.config.schema import AnthropicProviderConfig, GeminiProviderConfig, OpenAIProviderConfig
from modelyard.providers import build_provider
from modelyard.providers.base import CallOptions
from modelyard.testing.replay import ReplayTransport
from modelyard.types import ChatRequest, Message
from modelyard.wire.openai import ChunkEncoder, Forwarder


def _event_bytes(frame: bytes) -> bytes:
    """The mock frames each event as an HTTP chunk (``len\\r\\n...\\r\\n``): the event's bytes."""
    head, _, rest = frame.partition(b"\r\n")
    return rest[: int(head, 16)]


def _pieces(frames: list[bytes], per_read: int) -> list[bytes]:
    events = [e for e in (_event_bytes(f) for f in frames) if e]
    return [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]


async def _one(provider: Any, req: ChatRequest, call: CallOptions) -> int:
    forward = Forwarder("bench", "chatcmpl-1").frames
    encode = ChunkEncoder("bench", "chatcmpl-1", 1).encode
    n = 0
    async for chunk in provider.stream(req, "m", call):
        if chunk.raw is not None:
            frame = forward(chunk.raw)
            n += len(chunk.raw)
        else:
            frame = encode(chunk)
            n += 1
        assert frame
    return n


def _setup(kind: str, chunks: int, per_read: int) -> tuple[Any, ChatRequest]:
    if kind == "openai":
        frames = mock_upstream.stream_frames("m", 10, chunks, True)
        config: dict[str, Any] = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}
    elif kind == "anthropic":
        frames = mock_upstream.anthropic_frames("m", 10, chunks)
        config = {"kind": "anthropic", "base_url": "http://127.0.0.1:9", "api_key": "sk-x"}
    else:
        frames = mock_upstream.gemini_frames("m", 10, chunks, True)
        config = {"kind": "gemini", "base_url": "http://127.0.0.1:9", "api_key": "k"}
    schema = {"openai": OpenAIProviderConfig, "anthropic": AnthropicProviderConfig, "gemini": GeminiProviderConfig}
    provider = build_provider(kind, schema[kind].model_validate(config))
    provider._client = ReplayTransport(_pieces(frames, per_read))
    return provider, ChatRequest(model="m", messages=[Message(role="user", content="hi")], stream=True)


def measure(kinds: list[str], chunks: int, per_read: int, repeats: int, streams: int) -> dict[str, list[float]]:
    """CPU microseconds per chunk for each format: ``repeats`` samples, the formats interleaved."""
    setups = {k: _setup(k, chunks, per_read) for k in kinds}
    call = CallOptions(timeout_s=60)
    loop = asyncio.new_event_loop()
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        for _ in range(repeats):
            for kind, (provider, req) in setups.items():
                t0 = time.process_time()
                for _ in range(streams):
                    loop.run_until_complete(_one(provider, req, call))
                samples[kind].append((time.process_time() - t0) / streams / chunks * 1e6)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=200, help="content chunks per stream")
    ap.add_argument("--per-read", type=int, default=1, help="upstream events per socket read")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved samples per format")
    ap.add_argument("--streams", type=int, default=30, help="streams per sample")
    args = ap.parse_args()
    samples = measure(["openai", "anthropic", "gemini"], args.chunks, args.per_read, args.repeats, args.streams)
    print(
        f"{args.chunks} chunks per stream, {args.per_read} upstream event(s) per read, {args.repeats} interleaved "
        "samples (min: the least disturbed; median)"
    )
    base_min, base_med = min(samples["openai"]), statistics.median(samples["openai"])
    for kind, xs in samples.items():
        lo, med = min(xs), statistics.median(xs)
        print(
            f"  {kind:10s} {lo:6.2f} us/chunk min ({lo / base_min:4.2f}x)  {med:6.2f} median ({med / base_med:4.2f}x)"
        )


if __name__ == "__main__":
    main()
