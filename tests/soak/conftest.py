"""``make soak`` only (``tests/soak`` is left out of ``make test``): the replica fleet's fixtures."""

from tests.e2e.conftest import _clean_fakes, fakes
from tests.replicas.conftest import fleet, pg_url, redis_server, upstream

__all__ = ["_clean_fakes", "fakes", "fleet", "pg_url", "redis_server", "upstream"]
