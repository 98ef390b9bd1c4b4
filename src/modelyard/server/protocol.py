"""The HTTP/1.1 connection: uvicorn's httptools protocol with the limits it lacks, in one place.

uvicorn's httptools protocol puts no bound on the header block (a 30 MB header was answered) or on
the number of headers (50,000 were), and has no timeout for reading a request: a client that
trickles its headers, or a body that never ends, holds a connection for as long as it likes.
This subclass adds, per connection:

- the header block (request line and headers) at most ``server.max_header_kb`` KiB (64) and
  ``server.max_headers`` headers (128): past either, ``431`` and the connection is closed;
- the header block must arrive within ``server.header_timeout_s`` (10 s) of the request's first
  byte (or of the connection's opening): else the connection is closed;
- a request body may be idle (no byte) for at most ``server.body_timeout_s`` (30 s): else the
  connection is closed, and the handler reading the body sees the client leave;
- keep-alive: an idle connection is closed after ``server.keep_alive_s`` (5 s; uvicorn's own timer);
- a request the app marked cancellable (chat, embeddings) whose client leaves before the answer
  starts has its task cancelled: queued requests leave the queue, upstream calls stop.

Cost on the hot path: two integer additions and two comparisons per header, one timer handle per
request (armed at its first byte, cancelled when the headers are complete), and a timestamp per
body chunk; the body timer is re-armed only when it fires early.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelyard.config.schema import ServerConfig

__all__ = ["CANCEL_ON_DISCONNECT", "CLIENT_GONE", "GuardedHttpToolsProtocol", "Limits", "protocol_for"]

#: scope keys: the app puts the task of a request whose work may be cancelled when its client leaves
#: before the answer starts; the protocol marks it gone before cancelling that task
CANCEL_ON_DISCONNECT = "modelyard.cancel_on_disconnect"
CLIENT_GONE = "modelyard.client_gone"
#: the environment variable that carries the limits to ``--workers`` processes
ENV_LIMITS = "MODELYARD_CONNECTION_LIMITS"

_STATUS_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    """The connection limits of one server (from ``server:`` at start; a reload does not change them)."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 128
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    @classmethod
    def from_config(cls, server: ServerConfig) -> Limits:
        return cls(
            max_header_bytes=int(server.max_header_kb * 1024),
            max_headers=server.max_headers,
            header_timeout_s=server.header_timeout_s,
            body_timeout_s=server.body_timeout_s,
        )

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Limits:
        raw = os.environ.get(ENV_LIMITS)
        return cls(**json.loads(raw)) if raw else cls()


def protocol_for(limits: Limits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def __getattr__(name: str) -> object:
    """``EnvLimitedProtocol``: for ``--workers N`` (uvicorn imports the protocol by name in each
    worker process, so it cannot receive a class built in the parent): the limits the parent put
    in ``MODELYARD_CONNECTION_LIMITS``."""
    if name == "EnvLimitedProtocol":
        return protocol_for(Limits.from_env())
    raise AttributeError(name)


class _HeaderLimit(Exception):
    """Raised from a parser callback to stop parsing a header block that is too large."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits and read timeouts (see the module docstring)."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_count = 0
        self._too_large = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_body = 0.0

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        cycle = self.cycle
        scope = cast(dict[str, Any], cycle.scope) if cycle is not None else None
        task = scope.get(CANCEL_ON_DISCONNECT) if scope is not None else None
        if task is not None and scope is not None and not cycle.response_started:
            # The client left before its answer started: nobody will read it.  Cancel the work
            # (queued or in flight upstream) of this request only (``self.tasks`` is the whole
            # server's); the pipeline records the request as closed by the client.
            scope[CLIENT_GONE] = True
            task.cancel()
        super().connection_lost(exc)

    # -- header block ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            self._too_large = True
            raise _HeaderLimit
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_bytes > self.limits.max_header_bytes or self._header_count > self.limits.max_headers:
            self._too_large = True
            raise _HeaderLimit
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete:
            self._last_body = time.monotonic()
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_idle)

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        lim = self.limits
        text = (
            f"Request header fields too large: at most {lim.max_header_bytes // 1024} KiB and "
            f"{lim.max_headers} headers (server.max_header_kb, server.max_headers)"
        ).encode()
        self.transport.write(
            _STATUS_431
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(text)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + text
        )
        self.transport.close()

    # -- body --------------------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._last_body = time.monotonic()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- timers ------------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_late)

    def _header_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_idle(self) -> None:
        self._body_timer = None
        idle = time.monotonic() - self._last_body
        if idle < self.limits.body_timeout_s:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s - idle, self._body_idle)
            return
        if not self.transport.is_closing():
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
