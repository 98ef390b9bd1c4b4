"""Process helpers for the benchmark: /proc readers (CPU, RSS, PSS), process-group spawning and cleanup.

Linux only (reads /proc). Every process spawned here gets its own session/process group so that
``stop()`` can kill the whole tree, including workers forked by a supervisor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces/parens: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in out or not Path(f"/proc/{pid}").exists():
            continue
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime (plus reaped children's) of the given processes, in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    return cpu_seconds(process_tree(root))


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of resident set sizes (shared pages counted once per process)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def pss_bytes(pids: Iterable[int]) -> int:
    """Sum of proportional set sizes (shared pages split between sharers): fairer for multi-worker servers."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, IndexError, ValueError):
            continue
    return total


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, task) jiffies of the whole machine from /proc/stat; ``task`` = user+nice+system, i.e.
    without irq/softirq time (loopback networking), which no process is charged for."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(x) for x in parts[:8]]
    idle = vals[3] + vals[4]
    total = sum(vals)
    return float(total - idle), float(total), float(vals[0] + vals[1] + vals[2])


def spawn(
    cmd: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group with stdout+stderr to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left (group and stray descendants)."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    stragglers = process_tree(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGCONT)  # a paused group only acts on SIGTERM once continued
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in stragglers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def pause(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP the whole process group (an idle target must not compete with the one being measured)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGSTOP)


def resume(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def paused(others: Iterable[subprocess.Popen[bytes]]) -> Iterator[None]:
    """Pause (SIGSTOP) ``others`` for the block, so idle neighbours cost the one measured nothing."""
    stopped = list(others)
    for p in stopped:
        pause(p)
    try:
        yield
    finally:
        for p in stopped:
            resume(p)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll a zero-argument callable until it returns truthy or ``timeout`` elapses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False
