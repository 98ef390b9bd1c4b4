"""Facts about the run: machine, versions, background load, and the import time of ``modelyard``."""

from __future__ import annotations

import http.client
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import procs
from targets import ROOT, litellm_version


def healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def versions() -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "modelyard": _version("modelyard"),
        "commit": (commit + ("+dirty" if dirty else "")) if commit else None,
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "uvicorn": _version("uvicorn"),
        "litellm": litellm_version(),
    }


def background_busy(window: float) -> float:
    """Share of the machine's CPU busy before anything of ours runs (other users, builds, tests)."""
    b0, t0 = procs.machine_cpu()
    time.sleep(window)
    b1, t1 = procs.machine_cpu()
    return round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else 0.0


def _timed(cmd: list[str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    return (time.perf_counter() - t0) * 1000, out.returncode, out.stderr


def import_time(runs: int) -> dict[str, Any]:
    """Median wall time of fresh ``python -c "import modelyard"`` minus a bare interpreter start.

    Runs from / so the repo checkout is not on sys.path (the installed package is what is measured).
    ``top`` lists the heaviest imports (cumulative, from ``-X importtime``) to show where the time goes.
    """
    py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
    bare: list[float] = []
    full: list[float] = []
    _timed([py, "-c", "import modelyard"])  # warm the page cache and __pycache__
    for _ in range(runs):
        bare.append(_timed([py, "-c", "pass"])[0])
        ms, rc, err = _timed([py, "-c", "import modelyard"])
        if rc != 0:
            return {"error": f"import modelyard failed: {err.strip().splitlines()[-1] if err.strip() else rc}"}
        full.append(ms)
    _, _, trace = _timed([py, "-X", "importtime", "-c", "import modelyard"])
    rows: list[tuple[int, str]] = []
    for line in trace.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line.split("|")
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 2:
            rows.append((int(parts[1].strip()), name.strip()))
    rows.sort(reverse=True)
    return {
        "import_ms": round(statistics.median(full) - statistics.median(bare), 1),
        "bare_interpreter_ms": round(statistics.median(bare), 1),
        "with_import_ms": round(statistics.median(full), 1),
        "runs": runs,
        "top": [{"module": n, "cumulative_ms": round(us / 1000, 1)} for us, n in rows[:8]],
    }
