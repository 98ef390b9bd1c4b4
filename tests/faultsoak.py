"""The fault soak (#19 point 3), shared by ``make test`` (1 minute) and ``make soak`` (10 minutes).

A gateway in front of three fakes: two of them misbehave at random, changing fault every second
(5xx, connection resets, a first token that never comes, an answer that never comes, slow
bodies), the third stays healthy and is the last fallback.  Workers send streamed and
non-streamed chats at a moderate pace; one request in ten hangs up early on purpose.  What must
hold: no request fails (every fault is one the gateway rescues while a healthy model remains),
and once the load stops nothing is left behind: no request in flight, no limiter slot held, no
budget reservation, no more open sockets than the pools keep.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelyard.testing import FakeOpenAI, FakeServer
from modelyard.testing._fake_base import Fault
from tests.e2e.conftest import base_url, gateway_config
from tests.helpers import ServerProcess

FAULTS = (
    lambda: Fault(status=500, probability=0.3),
    lambda: Fault(status=503, retry_after="0", probability=0.3),
    lambda: Fault(reset=True, probability=0.2),
    lambda: Fault(first_token_delay_s=30, probability=0.15),  # streams: a first token that never comes
    lambda: Fault(delay_s=30, probability=0.1),  # no answer at all: the attempt's timeout ends it
    lambda: Fault(chunk_delay_s=0.02, probability=0.5),  # slow bodies (they finish)
)
#: each worker's pause between requests: a moderate load (about 8 x 50 = 400 requests a second at most)
PAUSE_S = 0.02
BODY = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 20}


@dataclass
class Figures:
    requests: int = 0
    failed: int = 0
    hung_up: int = 0
    faults: int = 0
    failures: list[str] = field(default_factory=list)


def config(faulty: dict[str, FakeServer], healthy: FakeServer) -> dict[str, Any]:
    cfg = gateway_config(faulty)
    cfg["providers"]["calm"] = {"kind": "openai", "base_url": base_url(healthy), "api_key": "sk-calm"}
    cfg["models"]["steady"] = {"provider": "calm", "model": "gpt-4o-mini"}
    for name in ("gpt", "claude"):
        cfg["models"][name]["timeout_s"] = 3
    cfg["routes"]["main"] = {"models": ["gpt"], "fallbacks": ["claude", "steady"], "max_attempts": 6}
    cfg["budgets"] = [{"name": "all", "scope": "global", "limit_usd": 1000}]
    return cfg


def _sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _probe_env() -> dict[str, str]:
    """``MODELYARD_MEMPROBE=<dir>``: the gateway's process loads ``tests/memprobe`` (RSS, malloc
    and Python-heap figures over time; see its docstring).  A diagnosis aid, off by default."""
    if not os.environ.get("MODELYARD_MEMPROBE"):
        return {}
    probe = str(Path(__file__).parent / "memprobe")
    return {"PYTHONPATH": os.pathsep.join(p for p in (probe, os.environ.get("PYTHONPATH", "")) if p)}


def run(fakes: dict[str, FakeServer], workdir: Path, duration_s: float, workers: int = 8) -> dict[str, Any]:
    healthy = FakeOpenAI().start_in_thread()
    faulty = {"openai": fakes["openai"], "anthropic": fakes["anthropic"]}
    srv = ServerProcess(config(fakes, healthy), workdir, env=_probe_env())
    figures = Figures()
    lock = threading.Lock()
    stop = threading.Event()
    try:
        for _ in range(30):  # a fast first-token history, so the adaptive limit cuts silent streams early
            httpx.post(srv.url + "/v1/chat/completions", json={"model": "main", "stream": True, **BODY}, timeout=30)
        for path in ("/v1/status", "/v1/budgets", "/v1/stats"):
            # the queries the end reads, once before the RSS figures start too: their first call
            # compiles SQLite statements (about 2 MB) that are no growth
            httpx.get(srv.url + path, timeout=30)
        sockets_before = _sockets(srv.proc.pid)
        rss_start = rss_mb(srv.proc.pid)

        samples: list[tuple[float, float]] = []
        t_start = time.monotonic()

        def chaos() -> None:
            rng = random.Random(7)
            tick = 0
            while not stop.is_set():
                if tick % 10 == 0:
                    samples.append((round(time.monotonic() - t_start, 1), rss_mb(srv.proc.pid)))
                tick += 1
                for fake, model in ((faulty["openai"], "gpt-4o"), (faulty["anthropic"], "claude-sonnet-4-5")):
                    fake.clear_faults()
                    fake.inject(model, rng.choice(FAULTS)())
                    with lock:
                        figures.faults += 1
                stop.wait(1.0)
            for fake in faulty.values():
                fake.clear_faults()

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    stream = rng.random() < 0.5
                    hang_up = rng.random() < 0.1
                    body = {"model": "main", "stream": stream, **BODY}
                    try:
                        with client.stream("POST", srv.url + "/v1/chat/completions", json=body) as resp:
                            if hang_up:
                                next(resp.iter_bytes(), None)
                                with lock:
                                    figures.hung_up += 1
                                continue
                            text = resp.read().decode()
                            ok = resp.status_code == 200 and (not stream or text.rstrip().endswith("[DONE]"))
                            ok = ok and '"error"' not in text
                    except httpx.HTTPError as exc:
                        ok, text = False, f"{type(exc).__name__}: {exc}"
                    stop.wait(PAUSE_S)
                    with lock:
                        figures.requests += 1
                        if not ok:
                            figures.failed += 1
                            figures.failures.append(f"stream={stream} {text[:200]}")

        threads = [threading.Thread(target=chaos)] + [
            threading.Thread(target=worker, args=(i,)) for i in range(workers)
        ]
        for t in threads:
            t.start()
        time.sleep(duration_s)
        stop.set()
        for t in threads:
            t.join(timeout=90)
        time.sleep(3.0)  # streams cut by the clients finish their cleanup
        status = httpx.get(srv.url + "/v1/status", timeout=10).json()
        budgets = httpx.get(srv.url + "/v1/budgets", timeout=10).json()["data"]
        time.sleep(1.5)  # the usage writer's batch
        total = httpx.get(srv.url + "/v1/stats", timeout=10).json()["total"] or {}
        out = {
            "figures": figures,
            "rescued": int(total.get("fallbacks") or 0),
            "in_flight": {m: v["in_flight"] for m, v in status["models"].items()},
            "queued": {m: v["queue_length"] for m, v in status["models"].items()},
            "reserved_usd": sum(b["reserved_usd"] or 0 for b in budgets),
            "reserved_tokens": sum(b["reserved_tokens"] or 0 for b in budgets),
            "sockets_before": sockets_before,
            "sockets_after": _sockets(srv.proc.pid),
            "rss_start_mb": rss_start,
            "rss_end_mb": rss_mb(srv.proc.pid),
            #: (seconds into the load, RSS MB) every 10 s
            "rss_samples": samples,
            "alive": srv.proc.poll() is None and httpx.get(srv.url + "/health", timeout=5).status_code == 200,
        }
        if os.environ.get("MODELYARD_MEMPROBE"):
            srv.signal(signal.SIGUSR2)  # the probe's malloc_trim(0), after the figures: RSS before and after
            time.sleep(1.0)
        return out
    finally:
        stop.set()
        srv.stop()
        healthy.stop_thread()


def check(out: dict[str, Any]) -> None:
    f: Figures = out["figures"]
    assert f.requests > 0 and f.faults > 0 and out["rescued"] > 0  # faults hit, and were rescued
    assert f.failed == 0, f"{f.failed} of {f.requests} requests failed: {f.failures[:5]}"
    assert not any(out["in_flight"].values()), out["in_flight"]
    assert not any(out["queued"].values()), out["queued"]
    assert out["reserved_usd"] == 0 and out["reserved_tokens"] == 0, (out["reserved_usd"], out["reserved_tokens"])
    # the upstream pools keep some connections open; a leak grows with the requests
    assert out["sockets_after"] <= out["sockets_before"] + 24, (out["sockets_before"], out["sockets_after"])
    assert out["alive"]
