"""Profile modelyard's hot path under load with py-spy and say where the time goes.

    .venv/bin/python bench/profile.py                    # 64 connections, json, 10 s
    .venv/bin/python bench/profile.py --stream -c 16 -d 15

Starts the mock upstream and ``modelyard serve`` with the bench config (virtual key, usage records,
budgets: the same as ``make bench``), runs the load generator, and records the server with
``py-spy record``.  Samples of the event loop's thread are charged to the innermost frame that
matches a bucket below (so the HTTP client inside the router counts as the HTTP client); worker
threads (the SQLite connections, ``to_thread``) are left out of the sampled table because py-spy
counts them busy while they wait, and their real share comes from /proc (per-thread CPU time over
the same window).  The table goes to ``bench/results/profile-latest.txt`` with the raw stacks in
``profile-latest.collapsed.txt``.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs
import sysinfo
from targets import BENCH, BUILD, MODELYARD_MASTER_KEY, Target, launch

RESULTS = BENCH / "results"

#: (bucket, substrings of a frame "function (file:line)"); the innermost frame that matches decides
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("usage writer + database", ("accounting/writer.py", "storage/usage.py", "aiosqlite", "sqlite3", "sqlalchemy")),
    ("upstream HTTP client", ("providers/_client.py", "aiohttp/client", "aiohttp/connector", "httptools/parser")),
    ("provider translation", ("providers/openai.py", "providers/base.py", "providers/_http.py")),
    ("router (plan, strategy, limits, breaker)", ("routing/",)),
    ("budgets", ("accounting/budgets.py",)),
    ("accounting (records, cost)", ("accounting/service.py", "accounting/pricing.py", "accounting/records.py")),
    ("metrics", ("server/metrics.py", "prometheus_client")),
    ("auth (keys)", ("server/auth.py", "storage/keys.py")),
    ("request parsing", ("server/parsing.py", "routing/options.py")),
    ("response encoding", ("server/wire.py",)),
    ("handler (openai_api, app)", ("server/openai_api.py", "server/app.py", "runtime.py")),
    ("starlette Request/Response", ("starlette/",)),
    ("uvicorn/httptools (server I/O)", ("uvicorn/",)),
    ("event loop/asyncio", ("asyncio/", "uvloop")),
]


def bucket_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in BUCKETS:
            if any(n in frame for n in needles):
                return name
    return "other"


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{thread id: (name, CPU seconds)} of one process, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--connections", type=int, default=64)
    ap.add_argument("-d", "--duration", type=float, default=10.0)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--out", default=str(RESULTS / "profile-latest"))
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: make install-dev (it is a dev dependency)", file=sys.stderr)
        return 2
    logdir = BUILD / "logs" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    mock = Target("direct", port=procs.free_port())
    mock_proc = procs.spawn(
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(mock.port)], log=logdir / "mock.log"
    )
    t = Target("modelyard", api_key=MODELYARD_MASTER_KEY)
    try:
        if not procs.wait_until(lambda: sysinfo.healthy(mock.port), 15.0):
            raise RuntimeError("the mock upstream did not start")
        if launch(t, f"http://127.0.0.1:{mock.port}", logdir, [], 60.0) is None:
            raise RuntimeError(f"modelyard did not start: {t.reason}")
        load = [sys.executable, str(BENCH / "loadgen.py"), "--url", t.url, "-c", str(args.connections)]
        load += ["-d", str(args.duration + 2), "-w", "1", "--pid", str(t.pid), "--api-key", t.api_key]
        load += ["--stream"] if args.stream else []
        gen = subprocess.Popen(load, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        threads0 = thread_cpu(t.pid)
        raw = Path(args.out + ".collapsed.txt")
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(t.pid),
                "--duration",
                str(int(args.duration)),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        threads1 = thread_cpu(t.pid)
        out, _ = gen.communicate(timeout=args.duration + 30)
    finally:
        if t.proc is not None:
            procs.stop(t.proc)
        procs.stop(mock_proc)
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        if "threading.py" in frames[0]:
            continue  # worker threads (SQLite, to_thread): py-spy counts them busy while they wait
        counts[bucket_of(frames)] += int(n)
        total += int(n)
    mode = "stream" if args.stream else "json"
    lines = [
        f"# Hot-path profile: py-spy, {args.duration:g} s at {args.connections} connections, {mode}, 0 ms upstream "
        "(innermost matching frame)",
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load generator: {out.decode().strip()[:300]}",
        "",
    ]
    for name, n in counts.most_common():
        lines.append(f"{n / max(total, 1) * 100:5.1f}%  {name}")
    used = {k: threads1[k][1] - v[1] for k, v in threads0.items() if k in threads1}
    whole = sum(used.values()) or 1.0
    lines += ["", "# CPU by thread over the sampled window (from /proc, not sampled)"]
    for tid, secs in sorted(used.items(), key=lambda kv: -kv[1]):
        if secs > 0:
            lines.append(f"{secs / whole * 100:5.1f}%  {threads0[tid][0]} (tid {tid}, {secs:.2f} s)")
    text = "\n".join(lines) + "\n"
    Path(args.out + ".txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
