"""Dashboard sessions: a signed cookie instead of a key in the browser.

A session is minted by ``POST /ui/login`` for the master key or an ``org_admin`` key and sent
back as the ``modelyard_session`` cookie (HttpOnly, SameSite=Strict, Secure behind https).  The
cookie holds no secret: who the session is (``master``, or the SHA-256 of the key, the digest the
key store already indexes), when it began, when it was last used and a random id, signed with
HMAC-SHA256 under a key derived from the master key.  So it is valid on every replica that shares
the master key, a master key change ends every session, a key's revocation ends its sessions
within the key cache's TTL (5 s), and a session unused for ``IDLE_S`` is over.

Changes made with a session need ``X-CSRF-Token``: an HMAC of the session id the page carries in a
``<meta>`` tag.  A cross-site page can neither read it nor (SameSite=Strict) send the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

__all__ = ["COOKIE", "CSRF_HEADER", "IDLE_S", "Session", "SessionCodec", "cookie_value"]

COOKIE = "modelyard_session"
CSRF_HEADER = "x-csrf-token"
#: a session unused this long is over (12 h)
IDLE_S = 12 * 3600
#: a page view re-signs the cookie when its last-use time is older than this
REFRESH_S = 60


@dataclass(frozen=True, slots=True)
class Session:
    #: "master", or the SHA-256 hex digest of an org_admin key
    subject: str
    issued: int
    seen: int
    sid: str

    @property
    def is_master(self) -> bool:
        return self.subject == "master"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Mints, reads and re-signs session cookies; pure (no I/O)."""

    def __init__(self, master_key: str) -> None:
        self._key = hmac.new(master_key.encode(), b"modelyard dashboard session v1", hashlib.sha256).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(
        self, subject: str, *, now: float | None = None, sid: str | None = None, issued: int | None = None
    ) -> str:
        t = int(now if now is not None else time.time())
        body = {"s": subject, "i": issued if issued is not None else t, "t": t, "n": sid or secrets.token_hex(12)}
        payload = _b64(orjson.dumps(body))
        return f"{payload}.{self._sign(payload)}"

    def read(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie value carries, or None (forged, malformed or idle too long)."""
        if not value or len(value) > 1024 or "." not in value:
            return None
        payload, _, sig = value.partition(".")
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            body = orjson.loads(_unb64(payload))
            session = Session(str(body["s"]), int(body["i"]), int(body["t"]), str(body["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        t = now if now is not None else time.time()
        if t - session.seen > IDLE_S or session.seen > t + 60:
            return None
        return session

    def refreshed(self, session: Session, *, now: float | None = None) -> str | None:
        """A re-signed cookie with a new last-use time, when the old one is worth replacing."""
        t = now if now is not None else time.time()
        if t - session.seen < REFRESH_S:
            return None
        return self.issue(session.subject, now=t, sid=session.sid, issued=session.issued)

    def csrf(self, session: Session) -> str:
        return _b64(hmac.new(self._key, b"csrf:" + session.sid.encode(), hashlib.sha256).digest())[:32]

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))


def cookie_value(headers: Mapping[str, str], name: str = COOKIE) -> str | None:
    """One cookie's value from the Cookie header (the last one wins, as browsers send the most specific first)."""
    raw = headers.get("cookie")
    if not raw:
        return None
    found = None
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            found = value.strip().strip('"')
            if found:
                return found
    return found
