"""Slow readers: N concurrent streams whose clients read slowly, against a gateway in front of the mock upstream.

    python bench/slow_readers.py --url http://127.0.0.1:4000/v1/chat/completions --api-key KEY \
        --mock-port 9000 --pid GATEWAY_PID [--streams 100] [--rate 1024] [--duration 20]

Each client opens a raw TCP connection with a small ``SO_RCVBUF`` (set before connecting, so the window
stays small), sends one streaming chat request for a long answer and then reads the socket at ``--rate``
bytes/s (a few hundred bytes every 0.25 s). The mock is switched to its flow mode first (every stream
written frame by frame, each write waiting for the transport to drain, with per-stream counters of the bytes
the kernel accepted) and to ``--chunks`` chunks of about ``--chunk-bytes`` characters, so one answer
(~2 MB by default) is far larger than what the socket buffers on the way can hold.

It measures:

* the gateway's RSS (its process tree) just before the clients connect and every second while they read:
  a gateway that buffers what the client has not read yet grows by (answer size x streams);
* how far the upstream got ahead of the client: per stream, the frames (= SSE events) the mock managed to
  hand to the kernel minus the events the client has read, in upstream bytes, minus what sits in the
  kernel's socket queues on the way (``/proc/net/tcp``: the mock's send queues, the gateway's receive queues
  from the mock, the gateway's send queues to the clients, the clients' receive queues). What is left is
  what the gateway holds in user space (its HTTP client's buffer, its own queues, its server's write buffer);
* the verdict ``not_read_ahead``: that held figure is at most ``--max-held-mib`` (1 MiB) per stream, i.e. the
  upstream is no further ahead of the client than the kernel's buffers plus 1 MiB;
* after the clients hang up, whether the upstream streams were closed too (a gateway that keeps reading an
  abandoned upstream leaks work).

Prints one JSON object. The mock's behaviour is restored (flow off, default chunks) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import resource
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs

TICK = 0.25
MIB = 2**20


@dataclass
class Reader:
    status: int = 0
    bytes_read: int = 0
    events: int = 0
    error: str = ""
    closed_by_peer: bool = False


def _mock(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body or {}).encode() if method == "POST" else None)
        resp = conn.getresponse()
        data: dict[str, Any] = json.loads(resp.read() or b"{}")
        if resp.status != 200:
            raise RuntimeError(f"mock {path}: {resp.status} {data}")
        return data
    finally:
        conn.close()


def tcp_queues(mock_port: int, gw_port: int) -> dict[str, int]:
    """Bytes in the kernel's socket queues along the slow streams' path (IPv4 loopback, /proc/net/tcp)."""
    out = {"mock_send": 0, "gw_upstream_recv": 0, "gw_send": 0, "client_recv": 0}
    try:
        lines = open("/proc/net/tcp").read().splitlines()[1:]  # noqa: SIM115 - one short read
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) < 5 or f[3] != "01":  # ESTABLISHED only
            continue
        lport, rport = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        tx, rx = (int(x, 16) for x in f[4].split(":"))
        if lport == mock_port:
            out["mock_send"] += tx
        elif rport == mock_port:
            out["gw_upstream_recv"] += rx
        elif lport == gw_port:
            out["gw_send"] += tx
        elif rport == gw_port:
            out["client_recv"] += rx
    return out


async def read_slowly(
    host: str, port: int, request: bytes, rate: int, rcvbuf: int, mss: int, stop: asyncio.Event, r: Reader
) -> socket.socket | None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    with contextlib.suppress(OSError):  # an Internet-sized MSS: loopback's 64 KiB one lets the gateway's send
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)  # buffer autotune to tcp_wmem's 4 MiB
    sock.setblocking(False)
    per_tick = max(1, int(rate * TICK))
    tail = b""
    try:
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, request)
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, per_tick), timeout=TICK * 4)
            except TimeoutError:
                continue
            if not data:
                r.closed_by_peer = True
                break
            if not r.status and data.startswith(b"HTTP/1.1 "):
                with contextlib.suppress(ValueError):
                    r.status = int(data[9:12])
            r.bytes_read += len(data)
            buf = tail + data
            r.events += buf.count(b"data: ")
            tail = buf[-5:]
            if tail.count(b"data: "):
                tail = b""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)
    except OSError as exc:
        r.error = f"{type(exc).__name__}: {exc}"
    return sock


def calibrate(host: str, port: int, request: bytes, mock_port: int) -> float | None:
    """Bytes the client gets per upstream byte (the gateway re-encodes events): one whole stream, read fast."""
    got, head, tail = 0, b"", b""
    try:
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(request)
            while chunk := sock.recv(1 << 16):
                got += len(chunk)
                head = head or chunk[:12]
                tail = (tail + chunk)[-5:]
                if tail == b"0\r\n\r\n":
                    break
    except OSError:
        return None
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    streams = _mock(mock_port, "GET", "/_mock/stats").get("streams", [])
    total = sum(s["bytes_total"] for s in streams)
    return got / total if total and got else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = json.dumps(
        {
            "model": args.model,
            "messages": [{"role": "user", "content": "Write a very long story, please."}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 100_000,
        }
    ).encode()
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nAuthorization: Bearer {args.api_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    old = _mock(args.mock_port, "POST", "/_mock/config", {})
    _mock(args.mock_port, "POST", "/_mock/config", {"flow": 1, "chunks": args.chunks, "chunk_bytes": args.chunk_bytes})
    _mock(args.mock_port, "POST", "/_mock/stats/reset")
    ratio = calibrate(host, port, request, args.mock_port)
    _mock(args.mock_port, "POST", "/_mock/stats/reset")
    tree = procs.process_tree(args.pid) if args.pid else []
    rss_before = procs.rss_bytes(tree) / MIB if tree else None
    readers = [Reader() for _ in range(args.streams)]
    stop = asyncio.Event()
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    tasks = [
        asyncio.create_task(read_slowly(host, port, request, args.rate, args.rcvbuf, args.mss, stop, r))
        for r in readers
    ]
    try:
        while time.monotonic() - t0 < args.duration:
            await asyncio.sleep(1.0)
            if args.pid:
                tree = procs.process_tree(args.pid)
                samples.append((round(time.monotonic() - t0, 1), round(procs.rss_bytes(tree) / MIB, 1)))
        # the figures at the end of the window, taken while every client is still connected
        queues = tcp_queues(args.mock_port, port)
        mock_stats = _mock(args.mock_port, "GET", "/_mock/stats")
        reads = [(r.bytes_read, r.events) for r in readers]
    finally:
        stop.set()
        socks = await asyncio.gather(*tasks, return_exceptions=True)
        for s in socks:
            if isinstance(s, socket.socket):
                s.close()
    await asyncio.sleep(args.settle)
    after = _mock(args.mock_port, "GET", "/_mock/stats")
    _mock(
        args.mock_port,
        "POST",
        "/_mock/config",
        {"flow": 0, "chunks": old.get("chunks", 20), "chunk_bytes": old.get("chunk_bytes", 0)},
    )
    return summarize(args, readers, reads, mock_stats, after, queues, rss_before, samples, ratio)


def summarize(
    args: argparse.Namespace,
    readers: list[Reader],
    reads: list[tuple[int, int]],
    mock_stats: dict[str, Any],
    after: dict[str, Any],
    queues: dict[str, int],
    rss_before: float | None,
    samples: list[tuple[float, float]],
    ratio: float | None,
) -> dict[str, Any]:
    streams = mock_stats.get("streams", [])
    n = len(streams)
    statuses: dict[str, int] = {}
    for r in readers:
        key = str(r.status or (r.error.split(":")[0] if r.error else "no answer"))
        statuses[key] = statuses.get(key, 0) + 1
    read_bytes = sum(b for b, _ in reads)
    up_written = sum(s["bytes_written"] for s in streams)
    answer = statistics.median(s["bytes_total"] for s in streams) if streams else None
    # everything in the client's bytes (the gateway re-encodes events; ``ratio`` from one stream read fast)
    conv = ratio or 1.0
    ahead = up_written * conv - read_bytes
    kernel = (queues["mock_send"] + queues["gw_upstream_recv"]) * conv + queues["gw_send"] + queues["client_recv"]
    held = (ahead - kernel) / n if n else None
    peak = max((s[1] for s in samples), default=None)
    growth = peak - rss_before if peak is not None and rss_before is not None else None
    finished = sum(1 for s in streams if s.get("done"))
    left_open = sum(1 for s in after.get("streams", []) if not s.get("closed") and not s.get("done"))
    # the bar: the upstream is at most (kernel buffers + max_held_mib) ahead of the client. Whether a whole
    # answer got written is reported, not judged: the gateway's receive buffers from the upstream autotune up to
    # tcp_rmem's maximum (tens of MiB), so a kernel can hold a whole answer whatever the gateway does
    not_ahead = None if held is None else held <= args.max_held_mib * MIB
    per = len(readers) or 1
    return {
        "streams": args.streams,
        "upstream_streams": n,
        "statuses": statuses,
        "duration_s": args.duration,
        "rate_bytes_per_s": args.rate,
        "rcvbuf": args.rcvbuf,
        "mss": args.mss,
        "chunks": args.chunks,
        "answer_bytes": answer,
        "bytes_ratio_client_per_upstream": round(ratio, 4) if ratio else None,
        "rss_before_mb": round(rss_before, 1) if rss_before is not None else None,
        "rss_peak_mb": peak,
        "rss_growth_mb": round(growth, 1) if growth is not None else None,
        "rss_samples": samples,
        "client_read_bytes_per_stream": round(read_bytes / per, 1),
        "upstream_written_bytes_per_stream": round(up_written / n, 1) if n else None,
        "upstream_written_bytes_max": max((s["bytes_written"] for s in streams), default=None),
        "upstream_finished": finished,
        "upstream_ahead_bytes_per_stream": round(ahead / n, 1) if n else None,
        "kernel_queued_bytes_per_stream": round(kernel / n, 1) if n else None,
        "kernel_queues": queues,
        "gateway_held_bytes_per_stream": round(held, 1) if held is not None else None,
        "max_held_mib": args.max_held_mib,
        "not_read_ahead": not_ahead,
        "upstream_left_open_after_close": left_open,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the gateway's chat completions URL (loopback only)")
    ap.add_argument("--api-key", default="sk-bench")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--mock-port", type=int, required=True, help="port of bench/mock_upstream.py")
    ap.add_argument("--pid", type=int, default=0, help="root pid of the gateway (RSS of its tree)")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--rate", type=int, default=1024, help="bytes per second each client reads")
    ap.add_argument("--rcvbuf", type=int, default=4096, help="SO_RCVBUF of each client socket")
    ap.add_argument("--mss", type=int, default=1400, help="TCP_MAXSEG of each client socket")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--chunks", type=int, default=2000, help="chunks per answer")
    ap.add_argument("--chunk-bytes", type=int, default=1000, help="characters of text per chunk")
    ap.add_argument("--max-held-mib", type=float, default=1.0, help="bar: user-space bytes held per stream")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after hanging up before the last check")
    args = ap.parse_args()
    if not (urlsplit(args.url).hostname or "").startswith("127."):
        ap.error("only loopback targets")
    with contextlib.suppress(ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
