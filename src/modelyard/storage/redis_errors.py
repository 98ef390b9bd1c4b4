"""What the shared-state code needs without importing redis-py: URL checks and the unavailable error.

Kept apart from :mod:`modelyard.storage.redis` so that a gateway with ``state: memory`` never imports
redis-py (about 6 MB and 40 ms at start-up); :mod:`modelyard.storage.redis` re-exports these names.
"""

from __future__ import annotations

from modelyard.errors import StateUnavailableError
from modelyard.scrub import redact_url

__all__ = ["StateUnavailableError", "is_redis_url", "redact_url", "unavailable"]

_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str) -> bool:
    return url.startswith(_SCHEMES)


def unavailable(url: str, exc: BaseException) -> StateUnavailableError:
    """The error to raise when a Redis command failed: names the server, never the password."""
    return StateUnavailableError(f"shared state at {redact_url(url)} is unavailable: {type(exc).__name__}: {exc}")
