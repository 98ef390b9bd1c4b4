"""One redis.asyncio client from the ``state`` URL, Lua scripts loaded once, and clear errors.

``redis-py`` connects lazily: :func:`redis_client` never does I/O, :func:`check_redis` pings and
turns a refused or timed-out connection into :class:`StateUnavailableError` naming the host (never
the password).  :class:`LuaScript` runs a script by SHA (``EVALSHA``) and loads it only when the
server answers ``NOSCRIPT`` (first use, a Redis restart, ``SCRIPT FLUSH``).

Only the Redis backends import this module (it imports redis-py); the names that do not need
redis-py live in :mod:`modelyard.storage.redis_errors` and are re-exported here.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError as RedisError

from modelyard.errors import ConfigError
from modelyard.storage.redis_errors import StateUnavailableError, is_redis_url, redact_url, unavailable

__all__ = [
    "LuaScript",
    "RedisError",
    "StateUnavailableError",
    "check_redis",
    "is_redis_url",
    "redact_url",
    "redis_client",
    "unavailable",
]


def redis_client(
    url: str, *, max_connections: int = 64, connect_timeout_s: float = 2.0, timeout_s: float = 5.0
) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``). No I/O happens here.

    Its pool holds at most ``max_connections``; a command beyond that waits for a free connection
    (up to ``timeout_s``) instead of failing.  ``await client.aclose()`` closes the pool too.
    """
    if not is_redis_url(url):
        raise ConfigError(f"expected a redis://, rediss:// or unix:// URL, got {redact_url(url)!r}", path="state")
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


async def check_redis(client: Redis, url: str) -> None:
    """Ping the server; raise :class:`StateUnavailableError` with a clear message when unreachable."""
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise unavailable(url, exc) from exc


class LuaScript:
    """A Lua script run with ``EVALSHA``; loaded with ``SCRIPT LOAD`` only on ``NOSCRIPT``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Redis, keys: list[str], args: list[str | bytes | int | float]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            loaded = await client.script_load(self.source)
            if loaded != self.sha:  # pragma: no cover - a server that hashes differently
                self.sha = loaded
            return await client.evalsha(self.sha, len(keys), *keys, *args)
