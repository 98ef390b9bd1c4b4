"""A test-only memory probe for the gateway's process (#19: the fault soak's RSS growth).

``tests/faultsoak.py`` puts this directory first on the served gateway's ``PYTHONPATH`` when
``MODELYARD_MEMPROBE=<dir>`` is set, so Python imports this module at start-up in that process
only.  Every ``MODELYARD_MEMPROBE_EVERY_S`` seconds (default 10) a thread appends one JSON line
to ``<dir>/probe.jsonl``: RSS, glibc's malloc figures (``mallinfo2``: heap held from the system,
in use, free inside it, mmapped), the Python heap traced by tracemalloc, gc counts, live
objects, threads and open fds.  ``MODELYARD_TRACEMALLOC=<frames>`` starts tracemalloc with that
many frames and also writes ``<dir>/snap-<seconds>.tm`` snapshots (compare two with
``python -m tests.memprobe.compare a b``).  SIGUSR2 runs a full ``gc.collect()`` (with
``MODELYARD_MEMPROBE_COLLECT=1``: memory that comes back was garbage waiting for the collector)
then ``malloc_trim(0)`` (memory that comes back is free memory the allocator held, not a leak),
logging the figures before and after each.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _smaps() -> dict[str, float]:
    """RSS by kind of mapping: the brk heap, anonymous maps (pymalloc's arenas, malloc's other
    arenas and big blocks, thread stacks), and files (code, shared libraries)."""
    kb: dict[str, int] = {"heap": 0, "anon": 0, "file": 0, "other": 0}
    kind = "other"
    with open("/proc/self/smaps") as fh:
        for line in fh:
            first = line.split(maxsplit=6)
            if not first:
                continue
            if "-" in first[0] and not first[0].endswith(":"):
                name = first[5].strip() if len(first) > 5 else ""
                kind = (
                    "heap" if name == "[heap]" else "anon" if not name else "file" if name.startswith("/") else "other"
                )
            elif first[0] == "Rss:":
                kb[kind] += int(first[1])
    return {k: round(v / 1024, 2) for k, v in kb.items()}


def _awaiting() -> list[str]:
    """The current asyncio task's chain of awaits, outermost first (who is asking)."""
    import asyncio

    try:
        task = asyncio.current_task()
    except RuntimeError:
        return []
    chain: list[str] = []
    coro: Any = task.get_coro() if task is not None else None
    while coro is not None and len(chain) < 12:
        name = getattr(coro, "__qualname__", type(coro).__name__)
        frame = getattr(coro, "cr_frame", None)
        chain.append(f"{name}:{frame.f_lineno}" if frame is not None else name)
        coro = getattr(coro, "cr_await", None)
    return chain


def _watch_pools(log: Any, t0: float) -> None:
    """Log each database connection SQLAlchemy opens or closes, with the task that asked for it."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    def opened(dbapi_connection: Any, record: Any) -> None:
        pool = record._ConnectionRecord__pool
        row = {"t": round(time.monotonic() - t0, 1), "event": "db_connect", "checked_out": pool.checkedout()}
        log.write(json.dumps({**row, "by": _awaiting()}) + "\n")

    def closed(dbapi_connection: Any, record: Any) -> None:
        log.write(json.dumps({"t": round(time.monotonic() - t0, 1), "event": "db_close"}) + "\n")

    event.listen(Pool, "connect", opened)
    event.listen(Pool, "close", closed)


def _start(out_dir: str) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    try:  # the SQLite library the sqlite3 module uses: its own count of the memory it holds
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    except OSError:
        sqlite = None
    every = float(os.environ.get("MODELYARD_MEMPROBE_EVERY_S", "10"))
    frames = int(os.environ.get("MODELYARD_TRACEMALLOC", "0") or 0)
    if frames:
        tracemalloc.start(frames)
    os.makedirs(out_dir, exist_ok=True)
    log = open(os.path.join(out_dir, "probe.jsonl"), "a", buffering=1)  # noqa: SIM115 - lives with the process
    t0 = time.monotonic()

    def rss_kb() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def sample(event: str = "tick") -> dict[str, object]:
        mi = libc.mallinfo2()
        row: dict[str, object] = {
            "t": round(time.monotonic() - t0, 1),
            "event": event,
            "rss_mb": round(rss_kb() / 1024, 2),
            # main arena + other arenas (glibc sums them): bytes held from the system by brk/mmap'd heaps
            "arena_mb": round(mi.arena / 2**20, 2),
            "in_use_mb": round(mi.uordblks / 2**20, 2),
            "free_mb": round(mi.fordblks / 2**20, 2),
            "mmapped_mb": round(mi.hblkhd / 2**20, 2),
            "free_chunks": mi.ordblks,
            "sqlite_mb": round(sqlite.sqlite3_memory_used() / 2**20, 2) if sqlite else None,
            "py_blocks": sys.getallocatedblocks(),
            "gc_count": gc.get_count(),
            "threads": sorted(t.name for t in threading.enumerate()),
            "fds": len(os.listdir("/proc/self/fd")),
        }
        row["gc_stats"] = [(g["collections"], g["collected"]) for g in gc.get_stats()]
        if tracemalloc.is_tracing():
            cur, peak = tracemalloc.get_traced_memory()
            row["py_traced_mb"] = round(cur / 2**20, 2)
            row["py_peak_mb"] = round(peak / 2**20, 2)
        return row

    def loop() -> None:
        n = 0
        while True:
            time.sleep(every)
            row = sample()
            n += 1
            if n % 6 == 0:  # a minute: the slower figures
                row["objects"] = [len(gc.get_objects(g)) for g in range(3)]
                row["smaps_mb"] = _smaps()
                if tracemalloc.is_tracing():
                    tracemalloc.take_snapshot().dump(os.path.join(out_dir, f"snap-{int(row['t']):05d}.tm"))
            log.write(json.dumps(row) + "\n")

    def trim(signum: int, frame: object) -> None:
        rows = [sample("before")]
        rows[0]["objects"] = [len(gc.get_objects(g)) for g in range(3)]
        rows[0]["smaps_mb"] = _smaps()
        if os.environ.get("MODELYARD_MEMPROBE_COLLECT"):
            found = gc.collect()
            rows.append({**sample("after_collect"), "collected": found, "smaps_mb": _smaps()})
        libc.malloc_trim(0)
        rows.append({**sample("after_trim"), "smaps_mb": _smaps()})
        log.write("".join(json.dumps(r) + "\n" for r in rows))

    signal.signal(signal.SIGUSR2, trim)
    _watch_pools(log, t0)
    log.write(json.dumps({**sample("start"), "argv": sys.argv}) + "\n")
    threading.Thread(target=loop, name="memprobe", daemon=True).start()


if os.environ.get("MODELYARD_MEMPROBE"):
    _start(os.environ["MODELYARD_MEMPROBE"])
