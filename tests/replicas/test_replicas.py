"""Many replicas, one gateway (#18): three processes on loopback behind a round-robin client,
sharing PostgreSQL and a Redis of the test's own.  The figures printed here are in
docs/deployment.md."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from modelyard.testing._fake_base import Fault
from tests.helpers import ServerProcess
from tests.replicas.conftest import Fleet, RedisServer
from tests.storage.conftest import run_async

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


async def _burst(fleet: Fleet, n: int, body: dict[str, Any], key: str, timeout: float = 60) -> list[httpx.Response]:
    """``n`` requests at once, spread over the replicas in turn (as a load balancer would)."""
    urls = [fleet.next_url() for _ in range(n)]
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                for url in urls
            )
        )


def _key(fleet: Fleet, **limits: Any) -> tuple[str, str]:
    org = fleet.admin(0, "POST", "/orgs", json={"name": f"team-{time.monotonic_ns()}"}).json()["id"]
    created = fleet.admin(0, "POST", "/keys", json={"org_id": org, "name": "replicas", **limits})
    assert created.status_code == 201, created.text
    data = created.json()
    return data["id"], data["key"]


def _patch_route(fleet: Fleet, i: int, route: str, config: dict[str, Any]) -> httpx.Response:
    """A change through replica ``i``, based on the active revision (If-Match)."""
    etag = fleet.admin(i, "GET", "/config").headers["etag"]
    return fleet.admin(i, "PATCH", f"/routes/{route}", json={"config": config}, headers={"If-Match": etag})


def _wait(predicate: Any, timeout: float, interval: float = 0.02) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval)
    return None


def test_a_key_rpm_holds_across_replicas(fleet: Fleet) -> None:
    _, key = _key(fleet, rpm=50)
    answers = asyncio.run(_burst(fleet, 200, {**CHAT, "model": "main"}, key))
    served = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    print(f"\nkey rpm 50, 200 requests over 3 replicas: {len(served)} served, {len(refused)} refused with 429")
    assert len(served) + len(refused) == 200, {r.status_code for r in answers}
    assert 49 <= len(served) <= 51
    assert all(float(r.headers["retry-after"]) > 0 for r in refused)
    assert all(r.json()["error"]["code"] == "key_rate_limited" for r in refused)


def test_max_concurrency_holds_across_replicas(fleet: Fleet, upstream: FakeServer) -> None:
    upstream.inject("slow-model", Fault(delay_s=0.3))
    upstream.reset_peak()
    try:
        t0 = time.monotonic()
        answers = asyncio.run(_burst(fleet, 30, {**CHAT, "model": "slow"}, "sk-master-replicas"))
        took = time.monotonic() - t0
    finally:
        upstream.clear_faults("slow-model")
    print(
        f"\nmax_concurrency 5, 30 requests of 0.3 s over 3 replicas: "
        f"peak {upstream.peak_in_flight} in flight, {took:.2f} s"
    )
    assert [r.status_code for r in answers] == [200] * 30
    assert upstream.peak_in_flight <= 5
    assert took >= 30 / 5 * 0.3 * 0.9  # they did wait for each other


def test_a_breaker_opened_by_one_replica_is_honoured_by_all(fleet: Fleet, upstream: FakeServer) -> None:
    upstream.inject("flaky-model", Fault(status=500))
    try:
        for _ in range(2):  # failure_threshold 2, all on replica 0
            r = httpx.post(
                f"{fleet.replicas[0].url}/v1/chat/completions",
                json={**CHAT, "model": "flaky"},
                headers={"Authorization": "Bearer sk-master-replicas"},
                timeout=30,
            )
            assert r.status_code >= 500
        assert fleet.status(0)["models"]["flaky"]["breaker"]["state"] == "open"
        took = [
            _wait(lambda i=i: fleet.status(i)["models"]["flaky"]["breaker"]["state"] == "open", 5.0) for i in (1, 2)
        ]
        print(f"\nbreaker opened on replica 0, seen open on replicas 1 and 2 after {took} s")
        assert all(t is not None and t < 1.0 for t in took), took
        before = upstream.attempts("flaky-model")
        r = httpx.post(
            f"{fleet.replicas[1].url}/v1/chat/completions",
            json={**CHAT, "model": "flaky"},
            headers={"Authorization": "Bearer sk-master-replicas"},
            timeout=30,
        )
        assert r.status_code == 503 and upstream.attempts("flaky-model") == before  # not even tried
    finally:
        upstream.clear_faults("flaky-model")


def test_a_budget_holds_across_replicas(fleet: Fleet) -> None:
    limit = 0.05
    body = {**CHAT, "model": "priced", "max_tokens": 5}
    answers = asyncio.run(_burst(fleet, 150, body, "sk-master-replicas"))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0, answers[0].text
    budget = next(b for b in fleet.admin(1, "GET", "/budgets").json()["data"] if b["budget"] == "fleet")
    print(f"\nbudget $0.05 over 3 replicas, 150 requests: {codes.count(200)} served, spent ${budget['used_usd']:.4f}")
    assert budget["used_usd"] <= limit  # the estimate reserved is never less than what is charged
    assert budget["reserved_usd"] == pytest.approx(0, abs=1e-9)


def test_a_config_change_and_a_revoked_key_reach_every_replica_within_a_second(fleet: Fleet) -> None:
    key_id, key = _key(fleet)

    def served_by(i: int, auth: str = "sk-master-replicas") -> httpx.Response:
        return httpx.post(
            f"{fleet.replicas[i].url}/v1/chat/completions",
            json={**CHAT, "model": "main"},
            headers={"Authorization": f"Bearer {auth}"},
            timeout=30,
        )

    for i in range(3):
        assert served_by(i, key).status_code == 200  # every replica has the key cached now
        assert served_by(i).headers["x-modelyard-model"] == "fast"
    changed = _patch_route(fleet, 1, "main", {"models": ["other"]})
    assert changed.status_code == 200, changed.text
    config_s = [_wait(lambda i=i: served_by(i).headers["x-modelyard-model"] == "other", 5.0) for i in range(3)]
    assert fleet.admin(2, "POST", f"/keys/{key_id}/revoke").status_code == 200
    revoke_s = [_wait(lambda i=i: served_by(i, key).status_code == 401, 5.0) for i in range(3)]
    print(
        f"\nconfig change made on replica 1 served by all after {config_s} s; "
        f"key revoked on 2 refused after {revoke_s} s"
    )
    assert all(t is not None and t < 1.0 for t in config_s + revoke_s), (config_s, revoke_s)
    assert _patch_route(fleet, 0, "main", {"models": ["fast"]}).status_code == 200


def test_redis_going_away_fails_open_and_comes_back(fleet: Fleet, redis_server: RedisServer) -> None:
    _, key = _key(fleet, rpm=1000)
    redis_server.stop()
    try:
        answers = asyncio.run(_burst(fleet, 12, {**CHAT, "model": "main"}, key))
        assert [r.status_code for r in answers] == [200] * 12  # limits hold per process meanwhile
        down = [fleet.status(i)["shared_state"] for i in range(3)]
        assert all(s["ok"] is False and s["backend"] == "redis" for s in down), down
        assert all("redis" not in (s["last_error"] or "").lower() or "sk-" not in s["last_error"] for s in down)
    finally:
        redis_server.start()

    def recovered() -> bool:
        asyncio.run(_burst(fleet, 3, {**CHAT, "model": "main"}, key))
        return all(fleet.status(i)["shared_state"]["ok"] for i in range(3))

    took = _wait(recovered, 15.0, interval=0.2)
    print(f"\nRedis back: every replica shares its state again after {took} s")
    assert took is not None


def test_sigterm_turns_ready_503_at_once_and_finishes_what_is_in_flight(
    fleet: Fleet, upstream: FakeServer, pg_url: str
) -> None:
    replica = fleet.replicas[2]  # server.drain_s: 2
    upstream.inject("gpt-4o", Fault(delay_s=1.0, times=1))

    async def scenario() -> tuple[httpx.Response, int, float]:
        async with httpx.AsyncClient(timeout=30) as client:
            slow = asyncio.create_task(
                client.post(
                    f"{replica.url}/v1/chat/completions",
                    json={**CHAT, "model": "other"},
                    headers={"Authorization": "Bearer sk-master-replicas"},
                )
            )
            await asyncio.sleep(0.3)  # in flight at the upstream
            replica.signal(signal.SIGTERM)
            t0 = time.monotonic()
            ready, took = 200, 0.0
            while time.monotonic() - t0 < 1.0:
                ready = (await client.get(f"{replica.url}/ready")).status_code
                took = time.monotonic() - t0
                if ready == 503:
                    break
                await asyncio.sleep(0.01)
            return await slow, ready, took

    answer, ready, took = asyncio.run(scenario())
    print(f"\nSIGTERM: /ready 503 after {took * 1000:.0f} ms; the request in flight answered {answer.status_code}")
    assert ready == 503 and took < 0.5
    assert answer.status_code == 200
    assert replica.proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    rid = answer.headers["x-request-id"]
    assert run_async(lambda: _stored_ids(pg_url, [rid])) == [rid]  # its usage record was written


def test_a_killed_replica_loses_one_flush_at_most_and_its_leases_expire(
    fleet: Fleet, upstream: FakeServer, pg_url: str
) -> None:
    """kill -9 of a replica under load, holding every slot of a model: the usage records it loses
    are those of its last flush interval at most, and the others get the slots back within the
    lease TTL (10 s), without any help from the dead one."""
    victim = fleet.replicas[1]
    answered: list[tuple[float, str]] = []  # (when, request id) of each answer the victim gave
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10, headers={"Authorization": "Bearer sk-master-replicas"}) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{victim.url}/v1/chat/completions", json={**CHAT, "model": "main"})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    answered.append((time.monotonic(), r.headers["x-request-id"]))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    upstream.inject("slow-model", Fault(delay_s=60, times=5))

    async def hold() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            await asyncio.gather(
                *(
                    client.post(
                        f"{victim.url}/v1/chat/completions",
                        json={**CHAT, "model": "slow"},
                        headers={"Authorization": "Bearer sk-master-replicas"},
                    )
                    for _ in range(5)
                ),
                return_exceptions=True,
            )

    def holding() -> None:
        asyncio.run(hold())

    holder = threading.Thread(target=holding, daemon=True)
    holder.start()
    assert _wait(lambda: upstream.in_flight >= 5, 10.0) is not None
    time.sleep(1.0)  # a second of load: the records of all but the last flush interval are written
    assert len(answered) >= 20
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.proc.wait(10)
    stop.set()
    loader.join(10)
    stored = set(run_async(lambda: _stored_ids(pg_url, [rid for _, rid in answered])))
    lost = [(t, rid) for t, rid in answered if rid not in stored]
    window = max((killed_at - t for t, _ in lost), default=0.0)
    print(
        f"\nkill -9 under load: {len(answered)} answers from the victim, {len(lost)} records lost, "
        f"all answered in the last {window * 1000:.0f} ms before the kill (usage.flush_interval_ms 50)"
    )
    assert window < 1.0  # one flush interval, and the time to write it, on a loaded machine
    t0 = time.monotonic()
    r = httpx.post(
        f"{fleet.replicas[0].url}/v1/chat/completions",
        json={**CHAT, "model": "slow"},
        headers={"Authorization": "Bearer sk-master-replicas"},
        timeout=20,
    )
    took = time.monotonic() - t0
    print(f"\nkill -9 of the replica holding all 5 slots: a request on another replica served after {took:.1f} s")
    assert r.status_code == 200, r.text
    assert 1.0 < took <= 10.0 + 1.0  # it waited for the leases, which expired within their TTL


async def _stored_ids(pg_url: str, ids: list[str]) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT request_id FROM usage_requests WHERE request_id = ANY($1::text[])", ids)
    finally:
        await conn.close()
    return [r["request_id"] for r in rows]


def test_workers_of_one_process_share_the_limits_too(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--workers 2`` with ``state: redis://``: a key's rpm holds across the workers as across
    replicas (each worker process shares through Redis)."""
    workers = ServerProcess(fleet.config, tmp_path_factory.mktemp("workers"), args=["--workers", "2"], env=fleet.env)
    try:
        org = httpx.post(
            f"{workers.url}/admin/orgs",
            json={"name": "workers"},
            headers={"Authorization": "Bearer sk-master-replicas"},
        ).json()["id"]
        key = httpx.post(
            f"{workers.url}/admin/keys",
            json={"org_id": org, "name": "w", "rpm": 10},
            headers={"Authorization": "Bearer sk-master-replicas"},
        ).json()["key"]

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                answers = await asyncio.gather(
                    *(
                        client.post(
                            f"{workers.url}/v1/chat/completions",
                            json={**CHAT, "model": "main"},
                            headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                        )
                        for _ in range(40)
                    )
                )
            return [r.status_code for r in answers]

        codes = asyncio.run(burst())
        print(f"\n--workers 2, key rpm 10, 40 requests: {codes.count(200)} served, {codes.count(429)} refused")
        assert codes.count(200) == 10 and codes.count(429) == 30
    finally:
        workers.stop()
