"""What every request passes before a handler reads it: one place, run by the ASGI entry (FastPath).

- **Body size** (every route): a ``Content-Length`` over ``server.max_body_mb`` is a 413 before
  anything else; a chunked body is counted as it is read and refused the same way.
- **Authentication before the body** (the admin and ``/v1`` management routes, which FastAPI
  parses before its own auth dependency runs): a request with a body needs the right key first,
  so a client without one cannot make the gateway read and parse 60 MB.  The hot endpoints
  (chat, embeddings) authenticate before reading their body themselves.
- **No-key mode** (no master key configured; the default ``make run``): a request is refused with
  403 when its ``Host`` is not loopback (or in ``server.allowed_hosts``), when it carries an
  ``Origin`` that is not, or when it is a POST whose ``Content-Type`` is not ``application/json``.
  Without this, any web page the operator visits could spend provider credit (a cross-site
  text/plain POST) or read answers through DNS rebinding.  ``/health`` is exempt.

With a master key the no-key rules do not apply: every request needs a key anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from modelyard.config.schema import Config
from modelyard.errors import ModelyardError, PayloadTooLargeError, PermissionDeniedError

__all__ = ["BodyLimit", "RequestGuard", "too_large"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "localhost.localdomain"})
_EXEMPT = frozenset({"/health"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than {limit / 1024 / 1024:g} MB (server.max_body_mb); "
        "send a smaller request or raise the limit"
    )


def _hostname(value: str) -> str:
    """``example.com:4000`` -> ``example.com``; ``[::1]:4000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end != -1 else value
    host, _, port = value.rpartition(":")
    return host if host and port.isdigit() else value


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.startswith("127.")


@dataclass(frozen=True, slots=True)
class _Policy:
    """The guard's view of one config version (built once per version, not per request)."""

    keyless: bool
    allowed: frozenset[str]
    max_body: int

    def host_ok(self, value: str) -> bool:
        value = value.strip().lower()
        return value in self.allowed or _is_loopback(_hostname(value)) or _hostname(value) in self.allowed


class RequestGuard:
    def __init__(self) -> None:
        self._config: Config | None = None
        self._policy = _Policy(keyless=False, allowed=frozenset(), max_body=0)

    def policy(self, config: Config) -> _Policy:
        if config is not self._config:
            allowed: Iterable[str] = (h.strip().lower() for h in config.server.allowed_hosts)
            self._policy = _Policy(
                keyless=not config.master_key(),
                allowed=frozenset(allowed),
                max_body=int(config.server.max_body_mb * 1024 * 1024),
            )
            self._config = config
        return self._policy

    def check(self, scope: Scope, config: Config) -> ModelyardError | None:
        """The cheap checks on the request head; an error to answer with, or None."""
        policy = self.policy(config)
        length = _header(scope, b"content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > policy.max_body:
            return too_large(policy.max_body)
        if not policy.keyless or scope["path"] in _EXEMPT:
            return None
        host = _header(scope, b"host")
        if host is None or not policy.host_ok(host):
            return PermissionDeniedError(
                "this gateway runs without a master key and answers only on loopback: the Host "
                f"{host!r} is not localhost or 127.0.0.1 (add it to server.allowed_hosts, or set a master key)",
                code="host_not_allowed",
            )
        origin = _header(scope, b"origin")
        if origin is not None and not policy.host_ok(urlsplit(origin).netloc or origin):
            return PermissionDeniedError(
                f"this gateway runs without a master key and refuses cross-site requests (Origin {origin!r}); "
                "add the origin's host to server.allowed_hosts, or set a master key",
                code="origin_not_allowed",
            )
        if scope["method"] == "POST":
            ctype = _header(scope, b"content-type") or ""
            if ctype.split(";", 1)[0].strip().lower() != "application/json":
                return PermissionDeniedError(
                    "this gateway runs without a master key and accepts only 'Content-Type: application/json' "
                    f"POSTs (got {ctype or 'none'!r})",
                    code="content_type_not_allowed",
                )
        return None

    @staticmethod
    def needs_early_auth(scope: Scope) -> bool:
        """A management request with a body: authenticate before FastAPI reads and parses it."""
        path: str = scope["path"]
        return scope["method"] in _BODY_METHODS and path.startswith(("/admin", "/v1/"))

    @staticmethod
    def headers(scope: Scope) -> Headers:
        return Headers(scope=scope)


class BodyLimit:
    """``receive`` and ``send`` for one request to an app that reads its own body (FastAPI).

    Once more than ``limit`` body bytes have arrived, ``receive`` raises the 413 error; an app that
    turns errors in body parsing into its own 400 (FastAPI does) would hide it, so everything the
    app sends after that is dropped and :meth:`answer` sends the 413 instead.
    """

    __slots__ = ("_receive", "_send", "limit", "over", "seen", "started")

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.seen = 0
        self.over = False
        self.started = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.over = True
                raise too_large(self.limit)
        return message

    async def send(self, message: Message) -> None:
        if self.over:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    def error(self) -> ModelyardError | None:
        """The 413 to answer with, if the body went over and nothing was sent yet."""
        return too_large(self.limit) if self.over and not self.started else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
