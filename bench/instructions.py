"""Instructions per request, counted by valgrind's callgrind: modelyard beside the base tree, free of the
machine's noise.

    .venv/bin/python bench/instructions.py                      # modelyard and base; json and stream; 1 and 64 conns
    .venv/bin/python bench/instructions.py --targets modelyard,minimal --modes json -n 1000
    make bench-instructions ARGS="--base-ref wave2-base"

The CPU figures of ``bench/run.py`` move by 5-15 % from one window to the next on this machine (two
cores shared by the target, the mock upstream and the load generator, and a machine whose speed
varies by up to 3x from day to day), so a 5 % bar sits inside a 3-repeat run's noise.  An instruction
count does not move with the machine's speed or load: two runs of the same trees differ by 1-3 %
(work that depends on timing: how many requests one turn of the event loop or one usage batch takes).

Each target is started by the bench's own launcher (same config, same virtual key) under
``valgrind --tool=callgrind --instr-atstart=no``: uninstrumented (start-up and warm-up only a few
times slower) until a cell's window.  Per cell:

1. a warm-up of ``--warmup`` requests at the cell's concurrency on the connections the window uses;
2. the usage writer drained (``/v1/status`` backlog 0), so nothing of the warm-up is counted;
3. instrumentation on, exactly ``-n`` requests from a closed-loop client (C keep-alive connections),
   the usage writer drained again (its catch-up is part of those requests' cost), a dump;
4. the dump's total instruction count (every thread of the process) over ``-n``.

What it does not count: kernel time (system calls) and what a cycle costs (cache misses, branch
misses): it is a measure of the work, next to the bench's measure of the time.  The dumps are kept in
the log folder (``callgrind_annotate`` reads them) to see where two trees differ, function by function.
Valgrind runs a process's threads one at a time, so timings under it mean nothing; only the counts do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procs
import sysinfo
import targets
from loadgen import RawConn, build_request, request_body
from targets import BUILD, CHAT_PATH, Target

BENCH = Path(__file__).resolve().parent
#: what a target may take to give its first answer under valgrind (uninstrumented: about 5-10x slower)
START_TIMEOUT_S = 300.0
#: seconds a request may take under callgrind at 64 connections (each waits for 63 others, ~50x slower)
REQUEST_TIMEOUT_S = 300.0
_SUMMARY = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


@dataclass
class Cell:
    stream: bool
    conns: int

    @property
    def key(self) -> str:
        return f"{'stream' if self.stream else 'json'}-c{self.conns}"


@dataclass
class Count:
    requests: int = 0
    errors: int = 0
    connects: int = 0
    instructions: int = 0
    catchup_s: float = 0.0
    dump: str = ""
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    @property
    def per_request(self) -> float | None:
        return self.instructions / self.requests if self.requests and not self.errors else None


class Client:
    """``conns`` keep-alive connections to one target, kept from the warm-up through the window."""

    def __init__(self, port: int, api_key: str, stream: bool, conns: int) -> None:
        url = f"http://127.0.0.1:{port}{CHAT_PATH}"
        self.host, self.port, self.payload = build_request(url, request_body("bench", stream), api_key)
        self.stream = stream
        self.pool: list[RawConn | None] = [None] * conns

    async def run(self, n: int, count: Count) -> None:
        """Exactly ``n`` requests, ``len(self.pool)`` at a time (closed loop)."""
        left = n
        loop = asyncio.get_running_loop()

        async def worker(slot: int) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                conn = self.pool[slot]
                if conn is None or conn.closed:
                    _, conn = await loop.create_connection(lambda: RawConn(self.stream), self.host, self.port)
                    self.pool[slot] = conn
                    count.connects += 1
                try:
                    status, ok = await asyncio.wait_for(conn.request(self.payload), REQUEST_TIMEOUT_S)
                except Exception as exc:  # reset, timeout, a malformed answer: counted, not fatal
                    count.error(type(exc).__name__)
                    conn.abort()
                    self.pool[slot] = None
                    continue
                if status == 200 and ok:
                    count.requests += 1
                else:
                    count.error(f"http {status}" if status != 200 else "incomplete answer")

        await asyncio.gather(*(worker(i) for i in range(len(self.pool))))

    def close(self) -> None:
        for conn in self.pool:
            if conn is not None:
                conn.abort()


def callgrind_control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def drain(t: Target) -> float:
    """Wait until the usage writer has every record in (targets without one: at once); the seconds."""
    if t.name not in targets.WRITER_TARGETS:
        return 0.0
    drained = targets.drain_writer(t, timeout=300.0)
    if drained is None:
        raise RuntimeError(f"{t.name}: the usage writer did not catch up within 300 s")
    return drained["catchup_s"]


def total_instructions(path: Path) -> int:
    match = _SUMMARY.search(path.read_bytes())
    if match is None:
        raise RuntimeError(f"no summary line in {path}")
    return int(match.group(1))


def measure(t: Target, cell: Cell, n: int, warmup: int, outdir: Path) -> Count:
    return asyncio.run(_measure(t, cell, n, warmup, outdir))


async def _measure(t: Target, cell: Cell, n: int, warmup: int, outdir: Path) -> Count:
    """One cell on one event loop (the connections live from the warm-up through the window); the
    blocking steps (status polls, callgrind_control) run in a thread while the client is idle."""
    client = Client(t.port, t.api_key, cell.stream, cell.conns)
    count = Count()
    try:
        await client.run(warmup, Count())
        await asyncio.to_thread(drain, t)
        before = await asyncio.to_thread(_dumps, outdir, t.pid)
        await asyncio.to_thread(callgrind_control, t.pid, "--instr=on")
        await asyncio.to_thread(callgrind_control, t.pid, "--zero")
        await client.run(n, count)
        count.catchup_s = await asyncio.to_thread(drain, t)
        await asyncio.to_thread(callgrind_control, t.pid, f"--dump={t.name} {cell.key}")
        await asyncio.to_thread(callgrind_control, t.pid, "--instr=off")
    finally:
        client.close()
    new = sorted(await asyncio.to_thread(_dumps, outdir, t.pid) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"{t.name}: callgrind wrote no dump")
    dump = new[-1].rename(outdir / f"{t.name}.{cell.key}.callgrind")
    count.dump = str(dump)
    count.instructions = await asyncio.to_thread(total_instructions, dump)
    return count


def _dumps(outdir: Path, pid: int) -> set[Path]:
    return set(outdir.glob(f"callgrind.out.{pid}*"))


def launch(name: str, upstream: str, logdir: Path, base_src: Path | None) -> Target:
    t = Target(name, src=base_src if name.startswith("base") else None)
    if targets.is_modelyard(name):
        t.api_key = targets.MODELYARD_MASTER_KEY
    # ``valgrind`` in front of the bench's own command line: the target is exactly the bench's
    t.wrap = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={logdir / 'callgrind.out.%p'}",
    ]
    took = targets.launch(t, upstream, logdir, [], START_TIMEOUT_S)
    if took is None:
        raise RuntimeError(f"{name}: {t.reason}")
    t.status = "ok"
    return t


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--targets", default="modelyard,base", help="comma list: modelyard, base, minimal, a ladder step")
    ap.add_argument("--modes", default="json,stream")
    ap.add_argument("--connections", default="1,64")
    ap.add_argument("-n", type=int, default=2000, help="requests counted per cell")
    ap.add_argument("--warmup", type=int, default=400, help="requests before each cell's window (not counted)")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    ap.add_argument("--base-ref", default=targets.DEFAULT_BASE_REF)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
    names = [n for n in args.targets.split(",") if n]
    cells = [Cell(m == "stream", int(c)) for m in args.modes.split(",") for c in args.connections.split(",")]
    logdir = BUILD / "logs" / ("instructions-" + time.strftime("%Y%m%d-%H%M%S"))
    logdir.mkdir(parents=True)
    base_src = Path(targets.prepare_base(args.base_ref)["src"]) if any(n.startswith("base") for n in names) else None
    mock_port = procs.free_port()
    mock = procs.spawn(
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(mock_port), "--chunks", str(args.chunks)],
        log=logdir / "mock.log",
    )
    result: dict[str, Any] = {"n": args.n, "warmup": args.warmup, "chunks": args.chunks, "base_ref": args.base_ref}
    result["targets"] = {}
    print(f"logs and dumps in {logdir}", file=sys.stderr)
    try:
        if not procs.wait_until(lambda: sysinfo.healthy(mock_port), 15.0):
            raise RuntimeError("the mock upstream did not start")
        for name in names:
            t = launch(name, f"http://127.0.0.1:{mock_port}", logdir, base_src)
            row: dict[str, Any] = {}
            try:
                for cell in cells:
                    c = measure(t, cell, args.n, args.warmup, logdir)
                    row[cell.key] = {
                        "instructions_per_request": round(c.per_request) if c.per_request else None,
                        "requests": c.requests,
                        "errors": c.errors,
                        "error_kinds": c.error_kinds,
                        "connects": c.connects,
                        "catchup_s": round(c.catchup_s, 2),
                        "dump": c.dump,
                    }
                    per = f"{c.per_request:,.0f}" if c.per_request else "-"
                    print(
                        f"{name:<18} {cell.key:<10} {per:>12} instructions/request  ({c.requests} ok, "
                        f"{c.errors} errors, {c.connects} connects, writer caught up in {c.catchup_s:.1f} s)",
                        file=sys.stderr,
                    )
            finally:
                if t.proc is not None:
                    procs.stop(t.proc)
            result["targets"][name] = row
    finally:
        procs.stop(mock)
    print(markdown(result, names, cells))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    (logdir / "instructions.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def markdown(result: dict[str, Any], names: list[str], cells: list[Cell]) -> str:
    head = "| cell | " + " | ".join(names) + (" | " + f"{names[0]} / {names[1]} |" if len(names) > 1 else "")
    lines = [head, "| --- |" + " ---: |" * (len(names) + (1 if len(names) > 1 else 0))]
    for cell in cells:
        vals = [result["targets"].get(n, {}).get(cell.key, {}).get("instructions_per_request") for n in names]
        row = f"| {cell.key} | " + " | ".join(f"{v:,}" if v else "-" for v in vals)
        if len(names) > 1:
            row += " | " + (f"{vals[0] / vals[1]:.3f}x" if vals[0] and vals[1] else "-")
        lines.append(row + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
