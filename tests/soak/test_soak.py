"""``make soak`` (``MODELYARD_SOAK_S`` seconds, default 600): three replicas under steady mixed load
while Redis restarts, a replica is killed with SIGKILL and another is rolled with SIGTERM, in turn.

What must hold at the end:
- every request answered, after at most one retry on another replica (what nginx's
  ``proxy_next_upstream`` does for a refused or reset connection);
- no concurrency lease left behind once the load stops;
- the replica that was never restarted did not grow by more than 10 % RSS after warming up.

It prints the figures docs/deployment.md reports.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from typing import Any

import httpx

from modelyard.testing import FakeServer
from modelyard.testing._fake_base import Fault
from tests.faultsoak import rss_mb
from tests.replicas.conftest import MASTER, Fleet, RedisServer

DURATION_S = float(os.environ.get("MODELYARD_SOAK_S", "600"))
WORKERS = 16
CHAT = {"messages": [{"role": "user", "content": "hello"}]}


def leases(redis: RedisServer) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "zcard", "{modelyard}:lim:m:slow:l"], capture_output=True, text=True
    )
    return int(out.stdout.strip() or 0)


class Load:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.served = 0
        self.retried = 0
        self.failed: list[str] = []
        self.rng = random.Random(7)
        #: replicas that refused a connection, left out for a while (nginx's max_fails/fail_timeout)
        self.down: dict[str, float] = {}
        self._next = 0

    def url(self, avoid: str | None = None) -> str:
        now = time.monotonic()
        alive = [r.url for r in self.fleet.replicas if r.proc.poll() is None]
        usable = [u for u in alive if self.down.get(u, 0) < now and u != avoid] or alive
        self._next += 1
        return usable[self._next % len(usable)]

    async def one(self, client: httpx.AsyncClient) -> None:
        pick = self.rng.random()
        body: dict[str, Any] = {**CHAT, "model": "slow" if pick < 0.2 else "main"}
        if 0.2 <= pick < 0.4:
            body["stream"] = True
        url: str | None = None
        for attempt in (1, 2):
            url = self.url(avoid=url)
            try:
                r = await client.post(f"{url}/v1/chat/completions", json=body)
                text = r.text  # a stream is read to its end
            except httpx.TransportError as exc:  # the replica went away: the balancer tries another
                self.down[url] = time.monotonic() + 5.0
                if attempt == 2:
                    self.failed.append(f"{type(exc).__name__} from {url}")
                self.retried += 1
                continue
            if r.status_code == 200 and (not body.get("stream") or "[DONE]" in text):
                self.served += 1
                return
            if r.status_code in (502, 503) and attempt == 1:  # draining or dying: another replica
                self.retried += 1
                continue
            self.failed.append(f"{r.status_code} {text[:200]}")
            return

    async def run(self, until: float) -> None:
        limits = httpx.Limits(max_connections=WORKERS * 2)
        headers = {"Authorization": f"Bearer {MASTER}"}
        async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:

            async def worker() -> None:
                while time.monotonic() < until:
                    await self.one(client)

            await asyncio.gather(*(worker() for _ in range(WORKERS)))


def test_soak(fleet: Fleet, upstream: FakeServer, redis_server: RedisServer) -> None:
    upstream.inject("slow-model", Fault(delay_s=0.05))
    load = Load(fleet)
    start = time.monotonic()
    until = start + DURATION_S
    steady = fleet.replicas[0]
    events: list[str] = []

    async def chaos() -> None:
        step = DURATION_S / 7
        await asyncio.sleep(step)  # warmed up
        rss_start = rss_mb(steady.proc.pid)
        actions = ["redis", "kill", "term"]
        i = 0
        while time.monotonic() + step < until:
            action = actions[i % len(actions)]
            i += 1
            t = time.monotonic() - start
            if action == "redis":
                redis_server.stop()
                await asyncio.sleep(2)
                redis_server.start()
            elif action == "kill":
                fleet.replicas[1].signal(signal.SIGKILL)
                await asyncio.sleep(1)
                await asyncio.to_thread(fleet.respawn, 1)
            else:
                fleet.replicas[2].signal(signal.SIGTERM)  # drains for 2 s, then finishes in flight
                await asyncio.to_thread(fleet.replicas[2].proc.wait, 60)
                await asyncio.to_thread(fleet.respawn, 2)
            events.append(f"{t:.0f} s: {action}")
            await asyncio.sleep(step)
        events.append(f"rss {rss_start:.1f} -> {rss_mb(steady.proc.pid):.1f} MB")

    async def main() -> None:
        await asyncio.gather(load.run(until), chaos())

    asyncio.run(main())
    upstream.clear_faults("slow-model")
    time.sleep(1.0)
    left = leases(redis_server)
    rss_start, rss_end = (float(x) for x in events[-1].split()[1:4:2])
    growth = (rss_end - rss_start) / rss_start
    print(
        f"\nsoak {DURATION_S:.0f} s, 3 replicas, {WORKERS} clients: {load.served} served, {load.retried} retried "
        f"on another replica, {len(load.failed)} failed; leases left {left}; steady replica RSS "
        f"{rss_start:.1f} -> {rss_end:.1f} MB ({growth * 100:+.1f} %)\n" + "\n".join(events[:-1])
    )
    assert not load.failed, load.failed[:10]
    assert left == 0
    assert growth < 0.10
