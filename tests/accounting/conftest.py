"""Fixtures for accounting tests: a real Redis, one key prefix per test, cleaned up afterwards.

Redis is ``MODELYARD_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).  When it is down the
Redis tests are skipped locally and fail under ``CI=true``: CI must never pass without running them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from modelyard.accounting.budgets import BudgetLedger, MemoryLedger
from modelyard.accounting.budgets_redis import RedisLedger
from modelyard.config.schema import BudgetConfig
from modelyard.storage.redis import redis_client

REDIS_URL = os.environ.get("MODELYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL; skips (fails under CI=true) when nothing answers there."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        reason = f"Redis at {REDIS_URL} is not reachable ({exc}); set MODELYARD_TEST_REDIS_URL"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires the Redis tests to run")
        pytest.skip(reason)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test (or run) uses; every key under it is deleted afterwards."""
    prefix = f"{{modelyard-test-{RUN_ID}-{uuid.uuid4().hex[:8]}}}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass(frozen=True)
class Backend:
    kind: str
    url: str = "memory"
    prefix: str = ""


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory")
    return Backend("redis", request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))


LedgerFactory = Callable[..., BudgetLedger]


@pytest.fixture
async def new_ledger(backend: Backend) -> AsyncIterator[LedgerFactory]:
    """Makes ledgers on the test's backend. For Redis, every one has its own client (a "replica")
    and they all share the test's key prefix; memory ledgers share nothing."""
    made: list[BudgetLedger] = []

    def factory(budgets: Sequence[BudgetConfig], **kwargs: Any) -> BudgetLedger:
        ledger: BudgetLedger
        if backend.kind == "memory":
            ledger = MemoryLedger(budgets, **kwargs)
        else:
            client = redis_client(backend.url)
            ledger = RedisLedger(
                budgets, client, url=backend.url, key_prefix=backend.prefix, owns_client=True, **kwargs
            )
        made.append(ledger)
        return ledger

    yield factory
    for ledger in made:
        await ledger.aclose()
