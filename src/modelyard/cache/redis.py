"""The response cache shared by every replica: :class:`RedisCache` (see :mod:`modelyard.cache.base`).

A module of its own so that redis-py is imported only for ``cache.backend: redis``:
:func:`modelyard.cache.base.make_cache` imports it then.
"""

from __future__ import annotations

import logging

import orjson
from redis.asyncio import Redis

from modelyard.cache.base import CachedResponse
from modelyard.storage.redis import RedisError, redact_url

__all__ = ["RedisCache"]

log = logging.getLogger("modelyard.cache")


class RedisCache:
    """Entries shared by every replica: ``SET <prefix><key> <orjson> PX <ttl>``."""

    def __init__(
        self, client: Redis, *, url: str = "redis", key_prefix: str = "modelyard:cache:", owns_client: bool = False
    ) -> None:
        self.client = client
        self.url = url
        self.prefix = key_prefix
        self._owns_client = owns_client

    async def get(self, key: str) -> CachedResponse | None:
        try:
            blob = await self.client.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            log.warning("response cache at %s unavailable (read as a miss): %s", redact_url(self.url), exc)
            return None
        if blob is None:
            return None
        try:
            return CachedResponse.from_bytes(blob if isinstance(blob, bytes) else blob.encode())
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("dropping an unreadable response cache entry %s", key)
            return None

    async def set(self, key: str, value: CachedResponse, ttl_s: float) -> None:
        ttl_ms = int(ttl_s * 1000)
        if ttl_ms <= 0:
            return
        try:
            await self.client.set(self.prefix + key, value.to_bytes(), px=ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("response cache at %s unavailable (entry not stored): %s", redact_url(self.url), exc)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()
