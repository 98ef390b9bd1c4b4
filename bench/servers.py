"""The server layer side by side: modelyard's app under uvicorn (as ``modelyard serve`` runs it and with other
settings) and under granian, and its upstream client (the home-made ``fast`` transport vs aiohttp).

    .venv/bin/python bench/servers.py                          # the server matrix, 3 interleaved repeats (~12 min)
    .venv/bin/python bench/servers.py --variants uvicorn,uvicorn-aiohttp      # the upstream client (~4 min)
    .venv/bin/python bench/servers.py --repeats 0 --checks shutdown,workers,backpressure,limits \
        --variants uvicorn,granian                             # the conditions a switch must keep (~3 min)
    .venv/bin/python bench/servers.py --list                   # the variants and what each runs

Every variant serves the same app (``modelyard.server.app.create_app``) with the bench config
(bench/modelyard.bench.yaml, rendered as bench/run.py renders it), a virtual key made through /admin, and
the one mock upstream (bench/mock_upstream.py, ``--chunks`` content chunks per stream). The load generator is
bench/loadgen.py (closed loop). Cells: json and stream at each ``--connections`` count, 0 ms upstream delay.

Each repeat runs every variant once per cell, back to back (the order rotated each repeat; the variants not
being measured are paused with SIGSTOP); ratios against ``--ref`` are taken within a repeat, then the median
over repeats is reported beside the medians of the figures themselves. CPU ms/request is utime+stime of the
server's whole process tree (granian's supervisor and worker, uvicorn's one process).

The checks (each on a fresh instance of a variant):

- ``shutdown``: 32 connections (json and stream; the mock answers after 50 ms and paces stream chunks by
  50 ms: a stream lasts about 1 s) against 1 worker, SIGTERM to the server's main process after 3 s; the
  clients go on until the server is gone. Counts the answers that arrived whole (and those in flight at the
  signal) against the rows in ``usage_requests`` for the load's key (plus lines in the spill file), and the
  requests in flight at the signal that failed. ``shutdown-w2``: the same with 2 workers.
- ``workers``: starts with 2 workers, 3 s of json load at 16 connections, CPU seconds per process of the tree.
- ``backpressure``: a stream from an upstream that sends 8 KiB events as fast as it may (it awaits
  ``drain()``, so it only gets ahead as far as the gateway reads), to a client that reads 64 KiB and then
  nothing for 8 s: what the upstream got out, the client got, and the server's RSS, sampled every second.
- ``limits``: a 70 KiB header, 200 headers, an idle keep-alive connection (15 s), a header block that never
  ends (15 s), a body that never ends (50 s): what the server answers, or how the connection ends; and a
  client that leaves 0.3 s into a 1.5 s upstream wait: the usage row recorded for it (cancelled or not).

Writes bench/results/servers-<stamp>.json and bench/results/servers-latest.md; logs in bench/build/logs/.
Child processes get ``PYTHONPATH=<this checkout>/src:bench`` (the harness checks modelyard is imported
from there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
import procs
import sysinfo
from targets import (
    BENCH,
    BUILD,
    MODELYARD_MASTER_KEY,
    ROOT,
    Target,
    admin,
    answers,
    imported_from,
    measure_idle,
    render,
)

SRC = ROOT / "src"
RESULTS = BENCH / "results"
GRANIAN = Path(sys.executable).parent / "granian"


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # serve | uvicorn | granian
    args: tuple[str, ...] = ()
    about: str = ""


VARIANTS = {
    v.name: v
    for v in (
        Variant("uvicorn", "serve", (), "`modelyard serve` as shipped: uvicorn, uvloop, modelyard's guarded httptools"),
        Variant("uvicorn-asyncio", "uvicorn", ("--loop", "asyncio"), "uvicorn, asyncio loop, guarded httptools"),
        Variant("uvicorn-httptools", "uvicorn", ("--http", "httptools"), "uvicorn, uvloop, uvicorn's own httptools"),
        Variant("uvicorn-h11", "uvicorn", ("--http", "h11"), "uvicorn, uvloop, h11 (pure Python parser)"),
        Variant("granian", "granian", ("--loop", "uvloop"), "granian 1 worker, uvloop, asyncio tasks"),
        Variant("granian-asyncio", "granian", ("--loop", "asyncio"), "granian 1 worker, asyncio loop"),
        Variant(
            "granian-rusttask",
            "granian",
            ("--loop", "uvloop", "--task-impl", "rust"),
            "granian 1 worker, uvloop, Rust task implementation",
        ),
        Variant(
            "granian-bp64",
            "granian",
            ("--loop", "uvloop", "--backpressure", "64"),
            "granian 1 worker, uvloop, at most 64 requests in the app at once",
        ),
        Variant(
            "granian-limits",
            "granian",
            ("--loop", "uvloop", "--http1-header-read-timeout", "10000", "--http1-buffer-size", "65536"),
            "granian 1 worker, uvloop, header read timeout 10 s and a 64 KiB HTTP/1 buffer (modelyard's limits)",
        ),
        Variant(
            "uvicorn-aiohttp",
            "serve",
            ("--transport", "aiohttp"),
            "`modelyard serve` with every provider on the aiohttp transport (not the home-made `fast` one)",
        ),
        Variant(
            "granian-aiohttp",
            "granian",
            ("--loop", "uvloop"),
            "granian 1 worker, uvloop, providers on the aiohttp transport",
        ),
    )
}
DEFAULT_VARIANTS = "uvicorn,uvicorn-asyncio,uvicorn-httptools,uvicorn-h11,granian,granian-asyncio,granian-rusttask"
FIELDS = ("rps", "p50_ms", "p99_ms", "ttft_p50_ms", "target_cpu_ms_per_req", "machine_busy", "other_cores")


def log(msg: str) -> None:
    print(f"[servers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{BENCH}"
    env.update(extra or {})
    return env


@dataclass
class Server:
    """One running instance of a variant (its own port, work folder, SQLite file)."""

    variant: Variant
    workers: int = 1
    target: Target = field(default_factory=lambda: Target("server"))
    key_id: str = ""
    workdir: Path = Path()

    @property
    def db(self) -> Path:
        return self.workdir / "modelyard.db"


def command(v: Variant, cfg: Path, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    if v.kind == "serve":
        cmd = [sys.executable, str(BENCH / "server_app.py"), "serve", "--config", str(cfg)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *v.args]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        return cmd, child_env()
    if v.kind == "uvicorn":
        if workers > 1:
            raise ValueError("the uvicorn launcher runs one worker (use a `serve` variant for --workers)")
        cmd = [sys.executable, str(BENCH / "server_app.py"), "uvicorn", "--config", str(cfg), "--port", str(port)]
        return cmd + list(v.args), child_env()
    env = child_env({"MODELYARD_CONFIG": str(cfg)})
    if v.name.endswith("-aiohttp"):
        env["MODELYARD_BENCH_TRANSPORT"] = "aiohttp"
    cmd = [str(GRANIAN), "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--http", "1", "--no-ws", "--log-level", "warning", "--workers", str(workers), *v.args]
    return [*cmd, "server_app:app"], env


def start(v: Variant, upstream: str, logdir: Path, workers: int = 1, tag: str = "", timeout: float = 45.0) -> Server:
    """Start ``v``, wait for its first 200, make an org and a virtual key. Raises RuntimeError with the reason."""
    s = Server(v, workers)
    t = s.target
    t.name, t.workers, t.port = v.name + tag, workers, procs.free_port()
    s.workdir = logdir / t.name
    s.workdir.mkdir(parents=True, exist_ok=True)
    cfg = render(
        BENCH / "modelyard.bench.yaml",
        s.workdir / "modelyard.yaml",
        PORT=str(t.port),
        UPSTREAM=upstream,
        MASTER_KEY=MODELYARD_MASTER_KEY,
        WORKDIR=str(s.workdir.resolve()),
    )
    cmd, env = command(v, cfg, t.port, workers)
    t.log = logdir / f"{t.name}.log"
    with t.log.open("a") as fh:
        fh.write(f"\n# {shlex.join(cmd)}\n")
    t0 = time.perf_counter()
    t.proc = procs.spawn(cmd, log=t.log, env=env, cwd=s.workdir)
    while not answers(t.port, MODELYARD_MASTER_KEY):
        if t.proc.poll() is not None:
            raise RuntimeError(f"{t.name} exited with {t.proc.returncode}: {procs.tail(t.log, 6)}")
        if time.perf_counter() - t0 > timeout:
            procs.stop(t.proc)
            raise RuntimeError(f"{t.name}: no 200 within {timeout:.0f}s: {procs.tail(t.log, 6)}")
        time.sleep(0.02)
    t.cold_start_s.append(round(time.perf_counter() - t0, 3))
    org = admin(t.port, "/admin/orgs", {"name": f"bench-{t.port}"})
    key = admin(
        t.port,
        "/admin/keys",
        {"org_id": org["id"], "name": "bench", "rpm": 10_000_000, "tpm": 10_000_000_000, "budget_usd": 100_000},
    )
    t.api_key, s.key_id = str(key["key"]), str(key["id"])
    t.status = "ok"
    return s


def set_mock(port: int, **cfg: float) -> None:
    from targets import post

    status, body = post(port, json.dumps(cfg).encode(), "", path="/_mock/config")
    if status != 200:
        raise RuntimeError(f"mock config failed: {status} {body[:200]!r}")


# -- the matrix ------------------------------------------------------------------------------------------------


def run_loadgen(s: Server, conns: int, stream: bool, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    t = s.target
    cmd = [sys.executable, str(BENCH / "loadgen.py"), "--url", t.url, "-c", str(conns), "-d", str(args.duration)]
    cmd += ["-w", str(args.warmup), "--pid", str(t.pid), "--api-key", t.api_key, "--aux-pid", str(args.mock_pid)]
    cmd += ["--stream"] if stream else []
    with (logdir / "loadgen.log").open("ab") as err:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, timeout=args.warmup + args.duration + 60)
    try:
        return dict(json.loads(out.stdout.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": f"load generator failed (exit {out.returncode}); see {logdir / 'loadgen.log'}"}


def alone(s: Server, servers: list[Server]) -> contextlib.AbstractContextManager[None]:
    """Pause every other server while ``s`` is measured."""
    return procs.paused(o.target.proc for o in servers if o is not s and o.target.proc is not None)


def run_matrix(servers: list[Server], args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    cells = [(mode, c) for mode in args.modes.split(",") for c in (int(x) for x in args.connections.split(","))]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        f"{m}/c{c}": {s.variant.name: [] for s in servers} for m, c in cells
    }
    for rep in range(args.repeats):
        for mode, conns in cells:
            key = f"{mode}/c{conns}"
            order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
            for s in order:
                if not s.target.alive():
                    log(f"{s.variant.name} is not running (exit {s.target.proc and s.target.proc.poll()}); skipped")
                    runs[key][s.variant.name].append({"error": "not running", "repeat": rep})
                    continue
                with alone(s, servers):
                    res = run_loadgen(s, conns, mode == "stream", args, logdir)
                res["repeat"] = rep
                runs[key][s.variant.name].append(res)
                if "error" in res:
                    log(f"[{rep + 1}/{args.repeats}] {key:<10} {s.variant.name:<18} {res['error']}")
                    continue
                log(
                    f"[{rep + 1}/{args.repeats}] {key:<10} {s.variant.name:<18} {res['rps']:>8} rps  "
                    f"p50 {res['p50_ms']}ms  cpu {res['target_cpu_ms_per_req']}ms/req  err {res['errors']}  "
                    f"busy {res['machine_busy']}"
                )
    return runs


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]], ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cell, by_variant in runs.items():
        base = {r["repeat"]: r for r in by_variant.get(ref, []) if "error" not in r}
        rows: dict[str, Any] = {}
        for name, rs in by_variant.items():
            good = [r for r in rs if "error" not in r]
            row: dict[str, Any] = {"repeats": len(good), "errors": sum(int(r.get("errors", 0)) for r in good)}
            for f in FIELDS:
                vals = [r[f] for r in good if r.get(f) is not None]
                row[f] = round(statistics.median(vals), 4) if vals else None
            for f, label in (("rps", "rps_ratio"), ("target_cpu_ms_per_req", "cpu_ratio"), ("p50_ms", "p50_ratio")):
                ratios = [r[f] / base[r["repeat"]][f] for r in good if r["repeat"] in base and base[r["repeat"]].get(f)]
                row[label] = round(statistics.median(ratios), 3) if ratios else None
                row[label + "s"] = [round(x, 3) for x in ratios]
            rows[name] = row
        out[cell] = rows
    return out


# -- the checks ------------------------------------------------------------------------------------------------


def usage_rows(s: Server) -> dict[str, int]:
    rows = 0
    if s.db.exists():
        with contextlib.closing(sqlite3.connect(s.db)) as db:
            rows = int(db.execute("SELECT count(*) FROM usage_requests WHERE key_id = ?", (s.key_id,)).fetchone()[0])
    spilled = 0
    for f in s.workdir.glob("usage-spill.jsonl*"):
        spilled += sum(1 for line in f.read_text(errors="replace").splitlines() if s.key_id in line)
    return {"rows": rows, "spilled": spilled}


async def _shutdown_load(s: Server, conns: int, sigterm_after: float, limit: float) -> dict[str, Any]:
    t = s.target
    body = json.dumps(
        {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, "stream": False}
    ).encode()
    sbody = json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": "hello"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    _, _, jpay = loadgen.build_request(t.url, body, t.api_key)
    _, _, spay = loadgen.build_request(t.url, sbody, t.api_key)
    counts: dict[str, int] = {}
    state = {"signalled": 0.0, "gone": 0.0, "last_ok": 0.0}
    loop = asyncio.get_running_loop()

    def bump(k: str) -> None:
        counts[k] = counts.get(k, 0) + 1

    def phase(sent_before: bool) -> str:
        """before: all before SIGTERM; in flight: sent before it, ended after it (a graceful server answers
        these whole); after: sent after it (refused or answered, either is fine)."""
        if not sent_before:
            return "after"
        return "in flight" if state["signalled"] else "before"

    async def worker(stream: bool) -> None:
        conn: loadgen.RawConn | None = None
        while not state["gone"]:
            sent_before = not state["signalled"]
            try:
                if conn is None or conn.closed:
                    _, conn = await loop.create_connection(lambda: loadgen.RawConn(stream), "127.0.0.1", t.port)
                status, ok = await asyncio.wait_for(conn.request(spay if stream else jpay), 35)
            except Exception as exc:  # refused, reset, timeout, a parser error: all counted by kind
                bump(f"{phase(sent_before)}: {type(exc).__name__}")
                if conn is not None:
                    conn.abort()
                conn = None
                await asyncio.sleep(0.05)
                continue
            if status == 200 and ok:
                late = " (in flight at SIGTERM)" if phase(sent_before) == "in flight" else ""
                bump(f"ok {'stream' if stream else 'json'}{late}")
                state["last_ok"] = time.monotonic() - state["signalled"] if state["signalled"] else 0.0
            else:
                bump(f"{phase(sent_before)}: http {status}{'' if ok else ' incomplete'}")
        if conn is not None:
            conn.abort()

    async def killer() -> None:
        await asyncio.sleep(sigterm_after)
        state["signalled"] = time.monotonic()
        os.kill(t.pid, signal.SIGTERM)
        deadline = time.monotonic() + limit
        while t.proc is not None and t.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        state["gone"] = time.monotonic()

    tasks = [asyncio.create_task(worker(i % 2 == 1)) for i in range(conns)]
    await killer()
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "counts": counts,
        "exit_s": round(state["gone"] - state["signalled"], 2),
        "last_ok_after_sigterm_s": round(state["last_ok"], 2),
    }


def check_shutdown(v: Variant, mock_port: int, logdir: Path, workers: int) -> dict[str, Any]:
    set_mock(mock_port, delay_ms=50, chunks=20, chunk_delay_ms=50)
    try:
        s = start(v, f"http://127.0.0.1:{mock_port}", logdir, workers, tag=f"-shutdown-w{workers}")
    except (RuntimeError, ValueError, OSError) as exc:
        return {"error": str(exc)}
    assert s.target.proc is not None
    try:
        time.sleep(1.0)
        res = asyncio.run(_shutdown_load(s, 32, 3.0, 40.0))
        if s.target.proc.poll() is None:
            res["still_running"] = True
            procs.stop(s.target.proc)
        res["returncode"] = s.target.proc.returncode
        answered = sum(n for k, n in res["counts"].items() if k.startswith("ok"))
        res.update(usage_rows(s))
        res["answered"] = answered
        res["lost"] = max(0, answered - res["rows"] - res["spilled"])
        res["in_flight_answered"] = sum(n for k, n in res["counts"].items() if "in flight" in k and k.startswith("ok"))
        res["in_flight_failed"] = sum(n for k, n in res["counts"].items() if k.startswith("in flight"))
        res["log_tail"] = procs.tail(s.target.log, 6) if s.target.log else ""
        return res
    finally:
        procs.stop(s.target.proc)
        set_mock(mock_port, delay_ms=0, chunks=20, chunk_delay_ms=0)


def check_workers(v: Variant, mock_port: int, logdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    try:
        s = start(v, f"http://127.0.0.1:{mock_port}", logdir, 2, tag="-w2")
    except (RuntimeError, ValueError, OSError) as exc:
        return {"error": str(exc)}
    assert s.target.proc is not None
    try:
        time.sleep(1.0)
        tree = procs.process_tree(s.target.pid)
        before = {p: procs.cpu_seconds([p]) for p in tree}
        res = run_loadgen(s, 16, False, argparse.Namespace(**{**vars(args), "duration": 3.0, "warmup": 0.5}), logdir)
        after = {p: procs.cpu_seconds([p]) for p in procs.process_tree(s.target.pid)}
        per = {str(p): round(after.get(p, 0.0) - before.get(p, 0.0), 2) for p in sorted(set(before) | set(after))}
        busy = [p for p, c in per.items() if c >= 0.2]
        return {
            "processes": len(after),
            "cpu_s_per_process": per,
            "serving_processes": len(busy),
            "rps": res.get("rps"),
            "errors": res.get("errors"),
            "error": res.get("error"),
        }
    finally:
        procs.stop(s.target.proc)


async def _backpressure(s: Server, up: dict[str, int], seconds: float) -> dict[str, Any]:
    t = s.target
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    _, _, payload = loadgen.build_request(t.url, body, t.api_key)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", t.port))
    await loop.sock_sendall(sock, payload)
    got = 0
    while got < 64 * 1024:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 16 * 1024), 10)
        if not chunk:
            break
        got += len(chunk)
    samples = []
    rss0 = procs.rss_bytes(procs.process_tree(t.pid))
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(1.0)
        rss = procs.rss_bytes(procs.process_tree(t.pid))
        samples.append(
            {
                "t": round(time.monotonic() - t0, 1),
                "upstream_sent_mb": round(up["sent"] / 2**20, 2),
                "rss_growth_mb": round((rss - rss0) / 2**20, 1),
            }
        )
    sock.close()
    return {"client_read_mb": round(got / 2**20, 3), "samples": samples}


async def _big_upstream(up: dict[str, int]) -> asyncio.Server:
    """Answers non-streaming chats at once; a stream is endless 8 KiB events, written only as fast as drained."""
    event = (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":{"content":"' + b"x" * 8192 + b'"},"finish_reason":null}]}\n\n'
    )
    frame = b"%x\r\n%s\r\n" % (len(event), event)
    answer = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                req = await reader.readexactly(length)
                if b'"stream":true' not in req.replace(b" ", b""):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(answer), answer)
                    )
                    await writer.drain()
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                while up["sent"] < 2**31:
                    writer.write(frame)
                    await writer.drain()
                    up["sent"] += len(frame)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # the gateway hung up, or the check is over
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", up["port"])


def check_backpressure(v: Variant, logdir: Path, seconds: float = 8.0) -> dict[str, Any]:
    up = {"sent": 0, "port": procs.free_port()}

    async def go() -> dict[str, Any]:
        server = await _big_upstream(up)
        s: Server | None = None
        try:
            s = await asyncio.to_thread(start, v, f"http://127.0.0.1:{up['port']}", logdir, 1, "-backpressure")
            return await _backpressure(s, up, seconds)
        finally:
            if s is not None and s.target.proc is not None:
                procs.stop(s.target.proc)
            server.close()

    try:
        return asyncio.run(go())
    except (RuntimeError, ValueError, OSError) as exc:
        return {"error": str(exc)}


def _raw_exchange(port: int, data: bytes, wait: float) -> str:
    """Send ``data``; the status line answered, or how the connection ended within ``wait`` seconds."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except OSError as exc:
            return f"send failed: {type(exc).__name__} after {time.monotonic() - t0:.1f}s"
        try:
            first = sock.recv(4096)
        except TimeoutError:
            return f"no answer, still open after {wait:.0f}s"
        except OSError as exc:
            return f"{type(exc).__name__} after {time.monotonic() - t0:.1f}s"
    if not first:
        return f"closed without an answer after {time.monotonic() - t0:.1f}s"
    return first.split(b"\r\n", 1)[0].decode(errors="replace")


def _idle_close(port: int, request: bytes, wait: float) -> str:
    """One whole request on a keep-alive connection, then silence: when (if) the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        first = sock.recv(65536)
        status = first.split(b"\r\n", 1)[0].decode(errors="replace")
        t0 = time.monotonic()
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            return f"{status}; still open {wait:.0f}s after the answer"
        except OSError as exc:
            return f"{status}; {type(exc).__name__} {time.monotonic() - t0:.1f}s after the answer"
        return f"{status}; closed {time.monotonic() - t0:.1f}s after the answer"


def check_limits(v: Variant, mock_port: int, logdir: Path) -> dict[str, Any]:
    try:
        s = start(v, f"http://127.0.0.1:{mock_port}", logdir, 1, tag="-limits")
    except (RuntimeError, ValueError, OSError) as exc:
        return {"error": str(exc)}
    assert s.target.proc is not None
    port, key = s.target.port, s.target.api_key
    body = b'{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    probes = {
        "header_70KiB": (_raw_exchange, (head + f"X-Big: {'a' * 70 * 1024}\r\n\r\n").encode() + body, 5),
        "headers_200": (
            _raw_exchange,
            (head + "".join(f"X-H{i}: v\r\n" for i in range(200)) + "\r\n").encode() + body,
            5,
        ),
        "keep_alive_idle_15s": (_idle_close, (head + "\r\n").encode() + body, 15),
        "header_never_ends_15s": (_raw_exchange, head.encode(), 15),
        "body_never_ends_50s": (_raw_exchange, (head + "\r\n").encode() + body[:10], 50),
    }
    try:
        with ThreadPoolExecutor(len(probes)) as pool:  # the slow ones wait side by side
            futures = {name: pool.submit(fn, port, data, wait) for name, (fn, data, wait) in probes.items()}
            out: dict[str, Any] = {name: f.result() for name, f in futures.items()}
        # a client that leaves while the upstream is still thinking (1.5 s): is its work cancelled?
        set_mock(mock_port, delay_ms=1500, chunks=20, chunk_delay_ms=0)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall((head + "\r\n").encode() + body)
            time.sleep(0.3)
        time.sleep(2.0)
        set_mock(mock_port, delay_ms=0, chunks=20, chunk_delay_ms=0)
        procs.stop(s.target.proc)  # graceful: the usage writer flushes
        with contextlib.closing(sqlite3.connect(s.db)) as db:
            row = db.execute(
                "SELECT status, error_class, round(latency_ms) FROM usage_requests WHERE key_id = ? "
                "ORDER BY ts DESC LIMIT 1",
                (s.key_id,),
            ).fetchone()
        out["client_leaves_after_0.3s"] = (
            f"recorded status {row[0]}, error {row[1]}, latency {row[2]} ms" if row else "no row"
        )
        return out
    finally:
        procs.stop(s.target.proc)
        set_mock(mock_port, delay_ms=0, chunks=20, chunk_delay_ms=0)


# -- report ----------------------------------------------------------------------------------------------------


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# bench/servers.py, {result['started']}", ""]
    lines.append(f"`{result['command']}`  ")
    lines.append(
        f"machine: {result['machine'].get('cpu', '?')}, {result['machine'].get('nproc', '?')} cores; "
        f"busy before the run {result['background_busy']:.0%}; uptime before: `{result['uptime_before']}`, "
        f"after: `{result.get('uptime_after', '?')}`"
    )
    lines.append("")
    if result.get("summary"):
        ref = result["ref"]
        lines.append(f"Medians over {result['settings']['repeats']} interleaved repeats; x{ref} = the median of the")
        lines.append(f"per-repeat ratios against `{ref}` (each pair measured back to back).")
        lines.append("")
        lines.append(
            "| cell | variant | RPS | p50 ms | CPU ms/req | RPS x ref | CPU x ref | per-repeat RPS x | errors | busy |"
        )
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
        for cell, rows in result["summary"].items():
            for name, r in rows.items():
                lines.append(
                    f"| {cell} | {name} | {_fmt(r['rps'], 0)} | {_fmt(r['p50_ms'])} | "
                    f"{_fmt(r['target_cpu_ms_per_req'], 3)} | {_fmt(r['rps_ratio'])} | {_fmt(r['cpu_ratio'])} | "
                    f"{' '.join(_fmt(x) for x in r['rps_ratios'])} | {r['errors']} | {_fmt(r['machine_busy'])} |"
                )
        lines.append("")
        lines.append("| variant | what | cold start s |")
        lines.append("| --- | --- | ---: |")
        for name, info in result["variants"].items():
            lines.append(f"| {name} | {info['about']} | {_fmt(info.get('cold_start_s'))} |")
        lines.append("")
    for name, checks in result.get("checks", {}).items():
        lines.append(f"## checks: {name}")
        lines.append("")
        lines.append("```json")
        lines.append(json.dumps(checks, indent=1))
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list (default {DEFAULT_VARIANTS})")
    ap.add_argument("--ref", help="the variant ratios are taken against (default: the first of --variants)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (0: no matrix)")
    ap.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run")
    ap.add_argument("--connections", default="1,64", help="comma list")
    ap.add_argument("--modes", default="json,stream", help="json,stream")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per mock stream")
    ap.add_argument(
        "--checks",
        default="",
        help="comma list from shutdown,shutdown-w2,workers,backpressure,limits (run on each of --variants)",
    )
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    args = ap.parse_args(argv)
    args.names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in args.names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; --list shows them")
    args.ref = args.ref or args.names[0]
    args.check_names = [c.strip() for c in args.checks.split(",") if c.strip()]
    bad = set(args.check_names) - {"shutdown", "shutdown-w2", "workers", "backpressure", "limits"}
    if bad:
        ap.error(f"unknown checks {sorted(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for v in VARIANTS.values():
            print(f"{v.name:<18} {v.about}")
        return 0
    where = imported_from(SRC)
    if not Path(where).resolve().is_relative_to(SRC.resolve()):
        raise SystemExit(f"modelyard is imported from {where}, not from {SRC}")
    if any(VARIANTS[n].kind == "granian" for n in args.names) and not GRANIAN.exists():
        raise SystemExit(f"granian is not installed ({GRANIAN}): pip install granian")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = BUILD / "logs" / f"servers-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "bench/servers.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "uptime_before": uptime(),
        "machine": sysinfo.machine(),
        "background_busy": sysinfo.background_busy(2.0),
        "versions": sysinfo.versions(),
        "modelyard_from": where,
        "ref": args.ref,
        "settings": {k: getattr(args, k) for k in ("repeats", "duration", "warmup", "connections", "modes", "chunks")},
        "variants": {n: {"about": VARIANTS[n].about} for n in args.names},
    }
    with contextlib.suppress(Exception):
        import importlib.metadata as md

        result["versions"]["granian"] = md.version("granian")
    log(f"logs in {logdir}; machine {result['background_busy']:.0%} busy; {result['uptime_before']}")
    mock_port = procs.free_port()
    mock_cmd = [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(mock_port), "--chunks", str(args.chunks)]
    mock = procs.spawn(mock_cmd, log=logdir / "mock.log")
    args.mock_pid = mock.pid
    servers: list[Server] = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not procs.wait_until(lambda: sysinfo.healthy(mock_port), 15.0):
            raise RuntimeError(f"mock upstream did not start: {procs.tail(logdir / 'mock.log')}")
        if args.repeats > 0:
            for name in args.names:
                log(f"starting {name}")
                s = start(VARIANTS[name], f"http://127.0.0.1:{mock_port}", logdir)
                servers.append(s)
                measure_idle(s.target)
                result["variants"][name].update(
                    cold_start_s=s.target.cold_start_s[0],
                    idle_rss_mb=s.target.idle_rss_mb,
                    processes=s.target.processes,
                )
                if s.target.proc is not None:  # paused until the matrix starts: it must not slow the next start
                    procs.pause(s.target.proc)
            for s in servers:
                if s.target.proc is not None:
                    procs.resume(s.target.proc)
            runs = run_matrix(servers, args, logdir)
            result["runs"] = runs
            result["summary"] = summarize(runs, args.ref)
            for s in servers:
                if s.target.proc is not None:
                    procs.stop(s.target.proc)
        checks: dict[str, Any] = {}
        for name in args.names if args.check_names else []:
            v = VARIANTS[name]
            checks[name] = {}
            for c in args.check_names:
                if v.kind == "uvicorn" and c in ("workers", "shutdown-w2"):
                    continue
                log(f"check {c}: {name}")
                if c == "shutdown":
                    checks[name][c] = check_shutdown(v, mock_port, logdir, 1)
                elif c == "shutdown-w2":
                    checks[name][c] = check_shutdown(v, mock_port, logdir, 2)
                elif c == "workers":
                    checks[name][c] = check_workers(v, mock_port, logdir, args)
                elif c == "backpressure":
                    checks[name][c] = check_backpressure(v, logdir)
                elif c == "limits":
                    checks[name][c] = check_limits(v, mock_port, logdir)
                log(f"check {c}: {name}: {json.dumps(checks[name][c])[:400]}")
        if checks:
            result["checks"] = checks
    except KeyboardInterrupt:
        result["interrupted"] = True
    finally:
        for s in servers:
            if s.target.proc is not None:
                procs.stop(s.target.proc)
        procs.stop(mock)
    result["uptime_after"] = uptime()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"servers-{stamp}.json").write_text(json.dumps(result, indent=1))
    md_text = markdown(result)
    (RESULTS / "servers-latest.md").write_text(md_text + "\n")
    print(md_text)
    log(f"wrote bench/results/servers-{stamp}.json and bench/results/servers-latest.md")
    return 1 if result.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
