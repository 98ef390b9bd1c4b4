"""CPU per request counting the usage writer's catch-up: the bench's windows end before a writer that
fell behind has inserted (or spilled and replayed) its records, so this loads one gateway for
``--duration`` seconds at 64 connections (json, 0 ms upstream, the bench config and virtual key), waits
until the writer's backlog (``/v1/status``) is 0, and divides the process's CPU over all of it by the
requests.  Targets run one after the other, in the order given (``base`` is the tree `make bench`
exported for ``--base-ref``; build it with one bench run first).

    .venv/bin/python bench/writer_catchup.py base modelyard base modelyard

Prints one JSON line per run: RPS, p99, records spilled by the end of the load, seconds to catch up,
CPU per request in the load window and until every record is in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs
import sysinfo
from targets import BENCH, BUILD, MODELYARD_MASTER_KEY, Target, launch, usage_writer

DURATION_S = 15


def cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(name: str) -> dict[str, Any]:
    logdir = BUILD / "logs" / f"writer-catchup-{name}-{time.strftime('%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    mock = Target("direct", port=procs.free_port())
    mock_proc = procs.spawn(
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(mock.port)], log=logdir / "mock.log"
    )
    t = Target(name, api_key=MODELYARD_MASTER_KEY)
    if name == "base":
        trees = sorted(BUILD.glob("base-*/src"), key=lambda p: p.stat().st_mtime)
        if not trees:
            raise SystemExit("no base tree under bench/build: run bench/run.py --base-ref REF once")
        t.src = trees[-1]
    try:
        if not procs.wait_until(lambda: sysinfo.healthy(mock.port), 15.0):
            raise RuntimeError("the mock upstream did not start")
        if launch(t, f"http://127.0.0.1:{mock.port}", logdir, [], 60.0) is None:
            raise RuntimeError(f"{name} did not start: {t.reason}")
        time.sleep(1)
        cpu0, t0 = cpu(t.pid), time.monotonic()
        load = [sys.executable, str(BENCH / "loadgen.py"), "--url", t.url, "-c", "64", "-d", str(DURATION_S)]
        load += ["-w", "0", "--pid", str(t.pid), "--api-key", t.api_key]
        result = json.loads(subprocess.run(load, capture_output=True, timeout=DURATION_S + 120, check=True).stdout)
        at_end = usage_writer(t)
        while usage_writer(t)["backlog"] > 0:
            time.sleep(0.2)
        cpu1, t1 = cpu(t.pid), time.monotonic()
        done = usage_writer(t)
        return {
            "target": name,
            "rps": result["rps"],
            "p99_ms": result["p99_ms"],
            "requests": result["requests"],
            "spilled_at_end_of_load": at_end["spilled"],
            "catchup_s": round(t1 - t0 - DURATION_S, 1),
            "window_cpu_ms_per_req": result["target_cpu_ms_per_req"],
            "total_cpu_ms_per_req": round((cpu1 - cpu0) * 1000 / result["requests"], 4),
            "written": done["written"],
            "spilled": done["spilled"],
            "replayed": done["replayed"],
        }
    finally:
        if t.proc is not None:
            procs.stop(t.proc)
        procs.stop(mock_proc)


def main() -> None:
    for name in sys.argv[1:] or ["modelyard"]:
        print(json.dumps(run(name)), flush=True)


if __name__ == "__main__":
    main()
