"""``make soak`` only (``tests/soak`` is left out of ``make test``): the replica fleet's fixtures."""

from tests.replicas.conftest import fleet, pg_url, redis_server, upstream

__all__ = ["fleet", "pg_url", "redis_server", "upstream"]
