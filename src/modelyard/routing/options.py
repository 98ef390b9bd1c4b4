"""Per-request routing options: the body field ``modelyard`` or ``X-Modelyard-*`` headers.

With the OpenAI SDK: ``client.chat.completions.create(..., extra_body={"modelyard": {"fallback": False}})``
or ``extra_headers={"X-Modelyard-Local-Only": "true"}``.  The body wins over a header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.errors import InvalidRequestError
from modelyard.validators import check_model_name

__all__ = ["RequestOptions", "parse_options"]

_PREFER = {"custom": "custom", "provider": "provider", "local": "local"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: upper bounds of the numeric options (a client's timeout only ever shortens the route's)
MAX_TIMEOUT_S = 3600.0
MAX_COST_USD = 1e9
MAX_CACHE_TTL_S = 365 * 86400.0
_MAX = {"timeout_s": MAX_TIMEOUT_S, "max_cost_usd": MAX_COST_USD, "cache_ttl_s": MAX_CACHE_TTL_S}


@dataclass(slots=True, frozen=True)
class RequestOptions:
    """What the client asked for; None means "not given" (the route's default applies)."""

    #: use this route instead of the body's ``model``
    route: str | None = None
    #: false: try only the first choice, never a fallback
    fallback: bool | None = None
    #: never send the request to a non-local provider, even on failure
    local_only: bool | None = None
    #: order candidates with this tag first: custom | provider | local
    prefer: str | None = None
    #: a task type (picks a route through the route's task map)
    task: str | None = None
    #: deadline for the whole request, in seconds (only ever shortens the route's timeout_s)
    timeout_s: float | None = None
    #: cap on attempts (never above the route's own max_attempts)
    max_attempts: int | None = None
    #: only candidates whose estimated cost fits (else 402 with the cheapest estimate)
    max_cost_usd: float | None = None
    #: false: bypass the response cache for this request
    cache: bool | None = None
    #: how long this answer may be cached (capped by the route's cache_max_ttl_s)
    cache_ttl_s: float | None = None
    #: keeps a caller on one side of a route's canary (else the body's ``user``)
    session: str | None = None

    def cache_ttl(self, route_ttl: float | None, route_max: float | None) -> float | None:
        """The TTL this request's answer is cached for on a route caching with ``route_ttl``."""
        if not route_ttl:
            return None
        if self.cache_ttl_s is None:
            return route_ttl
        return min(self.cache_ttl_s, route_max if route_max is not None else route_ttl)


DEFAULT_OPTIONS = RequestOptions()

_FIELDS = (
    "route",
    "fallback",
    "local_only",
    "prefer",
    "task",
    "timeout_s",
    "max_attempts",
    "max_cost_usd",
    "cache",
    "cache_ttl_s",
    "session",
)


def _coerce(name: str, value: Any, where: str | None = None) -> Any:
    """The option's value, or a 400 naming ``where`` (the body field, or the header it came from)."""
    where = where or f"modelyard.{name}"
    if name in ("fallback", "local_only", "cache"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise InvalidRequestError(f"Invalid '{where}': expected true or false", param=where, code="invalid_value")
    if name in ("timeout_s", "max_cost_usd", "cache_ttl_s"):
        try:
            f = float(value)
        except (TypeError, ValueError):
            f = -1.0
        hi = _MAX[name]
        # `not 0 < f <= hi` also refuses nan (every comparison with nan is false) and inf
        if isinstance(value, bool) or not 0 < f <= hi:
            raise InvalidRequestError(
                f"Invalid '{where}': expected a positive number up to {hi:g}", param=where, code="invalid_value"
            )
        return f
    if name == "max_attempts":
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = 0
        if isinstance(value, bool) or n < 1:
            raise InvalidRequestError(f"Invalid '{where}': expected an integer >= 1", param=where, code="invalid_value")
        return n
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"Invalid '{where}': expected a string", param=where, code="invalid_value")
    if name in ("route", "task"):
        return check_model_name(value, where)
    if name == "session" and (len(value) > 200 or not value.isprintable()):
        raise InvalidRequestError(
            f"Invalid '{where}': expected a printable string of at most 200 characters",
            param=where,
            code="invalid_value",
        )
    if name == "prefer" and value not in _PREFER:
        raise InvalidRequestError(
            f"Invalid '{where}': expected one of {', '.join(_PREFER)}", param=where, code="invalid_value"
        )
    return value


def parse_options(body_options: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> RequestOptions:
    """Merge ``X-Modelyard-*`` headers and the body's ``modelyard`` object (body wins)."""
    values: dict[str, Any] = {}
    if headers:
        for name in _FIELDS:
            header = "x-modelyard-" + name.replace("_", "-")
            raw = headers.get(header)
            if raw is not None:
                values[name] = _coerce(name, raw, header.title())
    for key, raw in body_options.items():
        if key not in _FIELDS:
            # later features add options; unknown ones are an error, not silently ignored
            known = ", ".join(_FIELDS)
            raise InvalidRequestError(
                f"Unknown option 'modelyard.{key}' (known: {known})", param=f"modelyard.{key}", code="invalid_value"
            )
        values[key] = _coerce(key, raw)
    if not values:
        return DEFAULT_OPTIONS
    return RequestOptions(**values)
