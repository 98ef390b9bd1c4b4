"""What the shared-state code needs without importing redis-py: URL checks and the unavailable error.

Kept apart from :mod:`modelyard.storage.redis` so that a gateway with ``state: memory`` never imports
redis-py (about 6 MB and 40 ms at start-up); :mod:`modelyard.storage.redis` re-exports these names.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from modelyard.errors import StateUnavailableError

__all__ = ["StateUnavailableError", "is_redis_url", "redact_url", "unavailable"]

_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str) -> bool:
    return url.startswith(_SCHEMES)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def unavailable(url: str, exc: BaseException) -> StateUnavailableError:
    """The error to raise when a Redis command failed: names the server, never the password."""
    return StateUnavailableError(f"shared state at {redact_url(url)} is unavailable: {type(exc).__name__}: {exc}")
