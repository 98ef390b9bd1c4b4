"""Closed-loop HTTP load generator (its own process): C connections, each sending the next request as soon as
the previous answer is complete, for a warm-up and then a fixed measured window.

    python bench/loadgen.py --url http://127.0.0.1:4000/v1/chat/completions -c 64 -d 10 [--stream] [--pid PID]

Prints one JSON object: rps, latency percentiles (ms), TTFT percentiles for streams (time to the first SSE
event with non-empty ``content``), errors (by kind), the target's CPU ms per request (utime+stime over the
process tree of ``--pid``, read from /proc at the window edges), the load generator's own CPU ms per request
and how busy the whole machine was.

Engines: ``raw`` (default: asyncio protocol + httptools, about 5x cheaper in CPU than an aiohttp client, which
matters on 2 cores) and ``aiohttp`` (ClientSession; to cross-check). Both use uvloop when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs

CONTENT_RE = re.compile(rb'"content"\s*:\s*"(?!")')
DONE = b"[DONE]"


@dataclass
class Stats:
    win_start: float = 0.0
    win_end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    warmup_errors: int = 0
    sent: int = 0

    def record(self, t0: float, t1: float, ttft: float | None) -> None:
        if self.win_start <= t1 <= self.win_end:
            self.latencies.append(t1 - t0)
            if ttft is not None:
                self.ttfts.append(ttft - t0)

    def error(self, kind: str, t1: float) -> None:
        if self.win_start <= t1 <= self.win_end:
            self.errors[kind] = self.errors.get(kind, 0) + 1
        elif t1 < self.win_start:
            self.warmup_errors += 1


class RawConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``request()`` writes prebuilt bytes and waits for the full answer."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.started = 0.0
        self.ttft: float | None = None
        self.tail = b""
        self.done = False
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError("connection lost"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.abort()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def on_message_begin(self) -> None:
        self.ttft = None
        self.tail = b""
        self.done = False
        self.body = []

    def on_body(self, body: bytes) -> None:
        if self.stream:
            buf = self.tail + body
            if self.ttft is None and CONTENT_RE.search(buf):
                self.ttft = time.perf_counter()
            if not self.done and DONE in buf:
                self.done = True
            self.tail = buf[-64:]
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive():
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, payload: bytes) -> tuple[int, bool]:
        """(status, answer looked complete and valid)."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.started = time.perf_counter()
        self.transport.write(payload)
        status = await self.waiter
        self.started = 0.0
        if self.stream:
            return status, self.done and self.ttft is not None
        return status, b'"choices"' in b"".join(self.body)


def build_request(url: str, body: bytes, api_key: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: */*\r\nAuthorization: Bearer {api_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


async def raw_worker(host: str, port: int, payload: bytes, stream: bool, stats: Stats, conns: list[RawConn]) -> None:
    loop = asyncio.get_running_loop()
    conn: RawConn | None = None
    while True:
        t0 = time.perf_counter()
        if t0 >= stats.win_end:
            break
        if conn is None or conn.closed:
            try:
                _, conn = await loop.create_connection(lambda: RawConn(stream), host, port)
                conns.append(conn)
            except OSError as exc:
                stats.error(f"connect: {type(exc).__name__}", time.perf_counter())
                conn = None
                await asyncio.sleep(0.05)
                continue
            t0 = time.perf_counter()
        stats.sent += 1
        try:
            status, ok = await conn.request(payload)
        except Exception as exc:
            stats.error(f"{type(exc).__name__}", time.perf_counter())
            conn.abort()
            conn = None
            await asyncio.sleep(0.001)
            continue
        t1 = time.perf_counter()
        if status == 200 and ok:
            stats.record(t0, t1, conn.ttft)
        else:
            stats.error(f"http {status}" if status != 200 else "incomplete answer", t1)
            await asyncio.sleep(0.001)


async def watchdog(conns: list[RawConn], timeout: float, stop: asyncio.Event) -> None:
    """Abort requests running longer than ``timeout`` (cheaper than one timer per request)."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        now = time.perf_counter()
        for c in conns:
            if c.started and now - c.started > timeout:
                c._fail(TimeoutError("request timeout"))
                c.abort()


async def aiohttp_worker(session: Any, url: str, body: bytes, key: str, stream: bool, stats: Stats) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    while True:
        t0 = time.perf_counter()
        if t0 >= stats.win_end:
            break
        stats.sent += 1
        ttft: float | None = None
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if stream:
                    done, tail = False, b""
                    async for chunk in resp.content.iter_any():
                        buf = tail + chunk
                        if ttft is None and CONTENT_RE.search(buf):
                            ttft = time.perf_counter()
                        done = done or DONE in buf
                        tail = buf[-64:]
                    ok = done and ttft is not None
                else:
                    ok = b'"choices"' in await resp.read()
                status = resp.status
        except Exception as exc:
            stats.error(type(exc).__name__, time.perf_counter())
            await asyncio.sleep(0.001)
            continue
        t1 = time.perf_counter()
        if status == 200 and ok:
            stats.record(t0, t1, ttft)
        else:
            stats.error(f"http {status}" if status != 200 else "incomplete answer", t1)
            await asyncio.sleep(0.001)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k] * 1000, 3)


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def request_body(model: str, stream: bool) -> bytes:
    """The chat completion every bench client sends (a short prompt, a 64-token cap)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in a short sentence, please."},
        ],
        "stream": stream,
        "max_tokens": 64,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    body = request_body(args.model, args.stream)
    now = time.perf_counter()
    stats = Stats(win_start=now + args.warmup, win_end=now + args.warmup + args.duration)
    edges: dict[str, Any] = {}

    async def sample_edges() -> None:
        await asyncio.sleep(max(0.0, stats.win_start - time.perf_counter()))
        tree = procs.process_tree(args.pid) if args.pid else []
        aux = procs.process_tree(args.aux_pid) if args.aux_pid else []
        edges["aux0"] = procs.cpu_seconds(aux)
        edges["start"] = (procs.cpu_seconds(tree), procs.machine_cpu(), own_cpu(), time.perf_counter())
        await asyncio.sleep(max(0.0, stats.win_end - time.perf_counter()))
        tree = procs.process_tree(args.pid) if args.pid else []
        edges["end"] = (procs.cpu_seconds(tree), procs.machine_cpu(), own_cpu(), time.perf_counter())
        edges["aux1"] = procs.cpu_seconds(procs.process_tree(args.aux_pid) if args.aux_pid else [])
        edges["rss"] = procs.rss_bytes(tree)

    sampler = asyncio.create_task(sample_edges())
    stop = asyncio.Event()
    session: Any = None
    if args.engine == "raw":
        host, port, payload = build_request(args.url, body, args.api_key)
        conns: list[RawConn] = []
        dog = asyncio.create_task(watchdog(conns, args.timeout, stop))
        tasks = [asyncio.create_task(raw_worker(host, port, payload, args.stream, stats, conns)) for _ in range(args.c)]
    else:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.c, force_close=False),
            timeout=aiohttp.ClientTimeout(total=args.timeout),
        )
        conns = []
        dog = asyncio.create_task(stop.wait())
        tasks = [
            asyncio.create_task(aiohttp_worker(session, args.url, body, args.api_key, args.stream, stats))
            for _ in range(args.c)
        ]
    await sampler
    # Requests still in flight at the window's end do not count; give them a moment, then drop them.
    _, pending = await asyncio.wait(tasks, timeout=min(args.timeout, 5.0))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await dog
    for c in conns:
        c.abort()
    if session is not None:
        await session.close()

    (cpu0, (busy0, tot0, task0), own0, t0), (cpu1, (busy1, tot1, task1), own1, t1) = edges["start"], edges["end"]
    window = t1 - t0
    ok = len(stats.latencies)
    errors = sum(stats.errors.values())
    done = ok + errors
    busy = (busy1 - busy0) / (tot1 - tot0) if tot1 > tot0 else 0.0
    cores = os.cpu_count() or 1
    target_util = (cpu1 - cpu0) / window if args.pid and window > 0 else 0.0
    aux_util = (edges["aux1"] - edges["aux0"]) / window if window > 0 and args.aux_pid != args.pid else 0.0
    # what neither the target, the load generator nor the mock used: other people's work on a shared machine
    tasks = (task1 - task0) / (tot1 - tot0) if tot1 > tot0 else 0.0
    other = tasks * cores - target_util - (own1 - own0) / max(window, 1e-9) - aux_util
    return {
        "url": args.url,
        "engine": args.engine,
        "connections": args.c,
        "stream": args.stream,
        "duration_s": round(window, 3),
        "requests": ok,
        "rps": round(ok / window, 1) if window > 0 else 0.0,
        "p50_ms": pct(stats.latencies, 50),
        "p90_ms": pct(stats.latencies, 90),
        "p99_ms": pct(stats.latencies, 99),
        "max_ms": pct(stats.latencies, 100),
        "ttft_p50_ms": pct(stats.ttfts, 50) if args.stream else None,
        "ttft_p99_ms": pct(stats.ttfts, 99) if args.stream else None,
        "errors": errors,
        "error_kinds": stats.errors,
        "warmup_errors": stats.warmup_errors,
        "target_cpu_ms_per_req": round((cpu1 - cpu0) * 1000 / done, 4) if args.pid and done else None,
        "target_cpu_util": round((cpu1 - cpu0) / window, 3) if args.pid and window > 0 else None,
        "loadgen_cpu_ms_per_req": round((own1 - own0) * 1000 / done, 4) if done else None,
        "loadgen_cpu_util": round((own1 - own0) / window, 3) if window > 0 else None,
        "machine_busy": round(busy, 3) if tot1 > tot0 else None,
        "mock_cpu_util": round(aux_util, 3) if args.aux_pid else None,
        "other_cores": round(max(0.0, other), 2),
        "target_rss_mb": round(edges["rss"] / 2**20, 1) if args.pid else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="full URL of the chat completions endpoint (loopback only)")
    ap.add_argument("-c", type=int, default=16, help="concurrent connections (closed loop)")
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured window, seconds")
    ap.add_argument("-w", "--warmup", type=float, default=2.0, help="warm-up before the window, seconds")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--api-key", default="sk-bench")
    ap.add_argument("--pid", type=int, default=0, help="root pid of the target, for CPU per request")
    ap.add_argument("--aux-pid", type=int, default=0, help="pid of the mock upstream (its CPU is reported too)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    ap.add_argument("--engine", choices=["raw", "aiohttp"], default="raw")
    args = ap.parse_args()
    host = urlsplit(args.url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        ap.error("load tests only target loopback addresses")
    with contextlib.suppress(ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        uvloop = None
    result = uvloop.run(run(args)) if uvloop is not None else asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
