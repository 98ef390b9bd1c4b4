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
    b0, t0, _ = procs.machine_cpu()
    time.sleep(window)
    b1, t1, _ = procs.machine_cpu()
    return round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else 0.0


def _timed(cmd: list[str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    return (time.perf_counter() - t0) * 1000, out.returncode, out.stderr


SERVE_IMPORTS = "import modelyard.cli, modelyard.cli_serve, modelyard.server.factory, uvicorn"


def _imports(trace: str) -> list[tuple[int, int, str]]:
    """(cumulative us, depth, module) rows of ``-X importtime`` output."""
    rows = []
    for line in trace.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) < 3 or "cumulative" in line:
            continue
        raw = parts[2].rstrip()
        rows.append((int(parts[1].strip()), (len(raw) - len(raw.lstrip()) - 1) // 2, raw.strip()))
    return rows


def _heaviest(trace: str, startup: set[str], n: int = 8) -> list[dict[str, Any]]:
    """Top imports by cumulative time (depth <= 2), leaving out what a bare interpreter imports anyway."""
    rows = sorted(
        ((us, name) for us, depth, name in _imports(trace) if depth <= 2 and name not in startup), reverse=True
    )
    return [{"module": name, "cumulative_ms": round(us / 1000, 1)} for us, name in rows[:n]]


def import_time(runs: int) -> dict[str, Any]:
    """Median wall time of fresh ``python -c "import modelyard"`` minus a bare interpreter start, and the same for
    what ``modelyard serve`` imports before it can answer (information, to explain the cold start).

    Runs from / so the repo checkout is not on sys.path (the installed package is what is measured).
    """
    py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
    stmts = {"import": "import modelyard", "serve": SERVE_IMPORTS}
    times: dict[str, list[float]] = {"bare": [], "import": [], "serve": []}
    for stmt in stmts.values():
        _timed([py, "-c", stmt])  # warm the page cache and __pycache__
    for _ in range(runs):
        times["bare"].append(_timed([py, "-c", "pass"])[0])
        for key, stmt in stmts.items():
            ms, rc, err = _timed([py, "-c", stmt])
            if rc != 0:
                last = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
                if key == "import":
                    return {"error": f"import modelyard failed: {last}"}
                stmts.pop("serve")
                break
            times[key].append(ms)
    bare = statistics.median(times["bare"])
    out: dict[str, Any] = {"import_ms": round(statistics.median(times["import"]) - bare, 1)}
    out["bare_interpreter_ms"] = round(bare, 1)
    out["runs"] = runs
    startup = {name for _, _, name in _imports(_timed([py, "-X", "importtime", "-c", "pass"])[2])}
    if times["serve"] and "serve" in stmts:
        out["serve_imports_ms"] = round(statistics.median(times["serve"]) - bare, 1)
        out["serve_top"] = _heaviest(_timed([py, "-X", "importtime", "-c", SERVE_IMPORTS])[2], startup)
    out["top"] = _heaviest(_timed([py, "-X", "importtime", "-c", "import modelyard"])[2], startup)
    return out
