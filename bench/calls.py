"""Per-request work of the json (or streamed) path, counted in one process: Python calls and CPU per request.

    .venv/bin/python bench/calls.py                      # this checkout, with cProfile
    .venv/bin/python bench/calls.py --base               # the tree `make bench` exported for --base-ref
    .venv/bin/python bench/calls.py --no-profile -n 16000
    .venv/bin/python bench/calls.py --stream --chunks 200 -n 2000

Starts the mock upstream, builds the gateway from ``bench/modelyard.bench.yaml`` (usage records on a
SQLite file, budgets, a virtual key made through ``/admin`` as the bench does) and drives ``POST
/v1/chat/completions`` through the ASGI app directly, ``-c`` requests at a time: no uvicorn and no
client sockets, so what is left is modelyard's own work per request plus the upstream client.  With
cProfile on (the default) it prints the functions by their own time and the Python calls per
request, which is steady from run to run where the bench's CPU figures move by 5-10 % on this
machine; ``--dump FILE`` keeps the profile for ``pstats`` (e.g. to diff two trees by function).
Without it, it prints CPU per request of the whole process and of the event loop's thread alone
(the difference is the usage writer's thread), and what the writer still did in the 3 s after.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
MASTER = "sk-master-calls-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _call(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """One ASGI request; the client stays until the answer is complete, then leaves."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    done = asyncio.Event()
    status = 0
    out: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await app(scope, receive, send)
    done.set()
    return status, b"".join(out)


async def run(args: argparse.Namespace, workdir: Path) -> None:
    import cProfile  # after main() took bench/ off the path: bench/profile.py shadows the stdlib's profile
    import pstats

    port = _free_port()
    mock = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is measured
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(port), "--chunks", str(args.chunks)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(1.0)
        text = (BENCH / "modelyard.bench.yaml").read_text()
        for name, value in (
            ("PORT", "9"),
            ("UPSTREAM", f"http://127.0.0.1:{port}"),
            ("MASTER_KEY", MASTER),
            ("WORKDIR", str(workdir)),
        ):
            text = text.replace("${" + name + "}", value)
        (workdir / "modelyard.yaml").write_text(text.replace("$${", "${"))
        from modelyard.server.app import create_app
        from modelyard.server.factory import build_gateway

        app = create_app(build_gateway(workdir / "modelyard.yaml"))
        to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await to_app.put({"type": "lifespan.startup"})
        life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put))
        started = await from_app.get()
        if started["type"] != "lifespan.startup.complete":
            raise SystemExit(f"the gateway did not start: {started}")
        admin = [(b"authorization", f"Bearer {MASTER}".encode())]
        _, raw = await _call(app, "/admin/orgs", orjson.dumps({"name": "calls"}), admin)
        org = orjson.loads(raw)["id"]
        key_body = {"org_id": org, "name": "calls", "rpm": 10_000_000, "tpm": 10_000_000_000, "budget_usd": 100_000}
        _, raw = await _call(app, "/admin/keys", orjson.dumps(key_body), admin)
        headers = [(b"authorization", f"Bearer {orjson.loads(raw)['key']}".encode())]
        body = orjson.dumps({
            "model": "bench",
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "max_tokens": 16,
            "stream": args.stream,
        })  # fmt: skip

        async def worker(n: int) -> None:
            for _ in range(n):
                status, raw = await _call(app, "/v1/chat/completions", body, headers)
                if status != 200:
                    raise SystemExit(f"answered {status}: {raw[:300]!r}")

        await asyncio.gather(*(worker(400 // args.concurrency + 1) for _ in range(args.concurrency)))  # warm-up
        per = max(1, args.requests // args.concurrency)
        n = per * args.concurrency
        prof = cProfile.Profile() if args.profile else None
        main0, cpu0 = time.thread_time(), time.process_time()
        if prof is not None:
            prof.enable()
        await asyncio.gather(*(worker(per) for _ in range(args.concurrency)))
        if prof is not None:
            prof.disable()
        main1, cpu1 = time.thread_time(), time.process_time()
        if prof is None:
            print(
                f"{n} requests, {args.concurrency} at a time: CPU per request {(cpu1 - cpu0) / n * 1000:.4f} ms "
                f"(event loop's thread {(main1 - main0) / n * 1000:.4f} ms)"
            )
            await asyncio.sleep(3.0)
            print(f"the usage writer, in the 3 s after: {(time.process_time() - cpu1) / n * 1000:.4f} ms per request")
        else:
            stats = pstats.Stats(prof, stream=(buf := io.StringIO()))
            calls = sum(v[0] for v in stats.stats.values())  # type: ignore[attr-defined]
            print(f"{n} requests, {args.concurrency} at a time: {calls / n:.1f} Python calls per request (cProfile)")
            stats.sort_stats("tottime").print_stats(args.top)
            print(buf.getvalue().split("\n\n", 1)[-1])
            if args.dump:
                stats.dump_stats(args.dump)
        await to_app.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(life, 30)
    finally:
        mock.terminate()
        mock.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("-n", "--requests", type=int, default=8000)
    ap.add_argument("-c", "--concurrency", type=int, default=64)
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="CPU per request, without cProfile")
    ap.add_argument("--stream", action="store_true", help="streamed answers (SSE) instead of json")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer (the mock's)")
    ap.add_argument("--top", type=int, default=40, help="functions to list")
    ap.add_argument("--dump", help="write the cProfile stats to this file")
    ap.add_argument("--base", action="store_true", help="run the newest tree under bench/build/base-*/src")
    args = ap.parse_args()
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    if args.base and os.environ.get("MODELYARD_CALLS_BASE") is None:
        trees = sorted((BENCH / "build").glob("base-*/src"), key=lambda p: p.stat().st_mtime)
        if not trees:
            print("no base tree: run bench/run.py with --base-ref once to export it", file=sys.stderr)
            return 2
        env = dict(os.environ, PYTHONPATH=str(trees[-1]), MODELYARD_CALLS_BASE=str(trees[-1]))
        argv = [a for a in sys.argv[1:] if a != "--base"]
        return subprocess.call([sys.executable, __file__, *argv], env=env)
    import modelyard

    print(f"modelyard from {Path(modelyard.__file__).parent}")
    workdir = BENCH / "build" / "calls"
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("*"):
        old.unlink()
    import uvloop

    uvloop.run(run(args, workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
