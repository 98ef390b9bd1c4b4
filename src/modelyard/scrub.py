"""Secrets out of every message the gateway emits or stores: one scrubber, applied in one place.

Upstreams sometimes quote the credential they were sent (``Incorrect API key provided:
sk-...``).  Every message modelyard shows or keeps (error bodies, stream error events,
``/v1/status`` ``last_error``, logs, usage and attempt records, webhooks) is the ``message`` of a
:class:`~modelyard.errors.ModelyardError` or is derived from one, and :class:`ModelyardError`
passes its message through :func:`scrub` when it is built.  So a secret is removed where an
upstream's text first enters the error tree, whichever provider module builds the error.

:func:`scrub` removes

- every secret of the config in force for the request: provider ``api_key``s and header values,
  the master key (:class:`Scrubber` built once per config version by the runtime, made current for
  a request by the pipeline through a context variable: tasks inherit it);
- and, always, common key shapes: ``sk-...``/``sk-ant-...``/``sk-proj-...``, Google ``AIza...``,
  ``gsk_``/``xai-``/``hf_`` tokens, ``Bearer <token>``, and ``key=``/``api_key=``/``token=``
  assignments (the name is kept, the value is replaced).

Only error text pays for it: the success path never builds a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextvars import ContextVar, Token
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MARK", "Scrubber", "current", "redact_url", "scrub", "use"]

#: what a secret is replaced with
MARK = "[redacted]"

_PATTERNS = re.compile(
    r"""
      (?P<token>
          \bsk-(?:ant-(?:api\d+-)?|proj-|or-v1-|live-|svcacct-)?[A-Za-z0-9_\-]{16,}
        | \bAIza[0-9A-Za-z_\-]{30,}
        | \b(?:gsk|xai|pplx|hf|r8)[_-][A-Za-z0-9]{16,}
        | \b[Bb]earer\s+[A-Za-z0-9._~+/\-]{12,}=*
      )
    | (?P<name>\b(?:api[_-]?key|x-api-key|x-goog-api-key|access[_-]?token|auth[_-]?token|token|key|secret|password)
         ["']?\s*[:=]\s*["']?)
      (?P<value>[^\s"'&,;)}\]]{8,})
    """,
    re.VERBOSE | re.IGNORECASE,
)

#: secrets shorter than this are not matched literally (they would redact ordinary words)
_MIN_SECRET = 6


def _replace(match: re.Match[str]) -> str:
    name = match.group("name")
    return MARK if name is None else name + MARK


class Scrubber:
    """Removes the given secrets and the common key shapes from a text."""

    __slots__ = ("_exact",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True)
        self._exact = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._exact is not None:
            text = self._exact.sub(MARK, text)
        return _PATTERNS.sub(_replace, text)


_PATTERNS_ONLY = Scrubber()

#: the scrubber of the config in force for the current request (tasks inherit it)
_CURRENT: ContextVar[Scrubber] = ContextVar("modelyard_scrubber", default=_PATTERNS_ONLY)


def scrub(text: str) -> str:
    """``text`` without the current config's secrets and without common key shapes."""
    return _CURRENT.get()(text)


def current() -> Scrubber:
    return _CURRENT.get()


def use(scrubber: Scrubber) -> Token[Scrubber]:
    """Make ``scrubber`` current for this task (and the tasks it starts)."""
    return _CURRENT.set(scrubber)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (``postgresql://user:***@host:5432/db``): safe
    for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL (a port that is not a number): keep nothing after the scheme's "@"
        return url.rsplit("@", 1)[-1]
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))
