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
  starts has its task cancelled: queued requests leave the queue, upstream calls stop;
- the answer's writes wait once more than ``_WRITE_HIGH`` (4 KiB) waits in user space for a client
  that reads slowly (uvloop's default is 64 KiB, and it drains to 16 bytes before writing on): the
  kernel's send buffer holds the rest, and a slow stream holds at most one frame more than that.

The two timeouts are checked by one watchdog timer per connection, every half of the shorter one,
so a slow client is cut off between one and one and a half timeouts.  Cost on the hot path: a few
attribute writes per request and an addition per received chunk (no per-header callback, no timer
per request: a first version with both cost about 7 % CPU per request at 1 connection).
"""

from __future__ import annotations

import asyncio
import json
import os
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
#: bytes an answer may have waiting in the transport (not yet taken by the kernel) before the app's
#: next write waits for them to drain (to a quarter of it)
_WRITE_HIGH = 4 * 1024


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
        self._too_large = False
        #: the request head being read: its bytes so far and when its first byte came (None: no
        #: head in progress: between requests, or reading a body or answering)
        self._head_bytes = 0
        self._head_since: float | None = None
        #: body bytes seen (all requests) and, at the last watchdog tick, their count and time
        self._body_bytes = 0
        self._in_body = False
        self._watched_bytes = -1
        self._progress_at = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        self._head_since = self.loop.time()  # a connection that sends nothing is a head that never ends
        lim = self.limits
        self._tick = min(lim.header_timeout_s, lim.body_timeout_s) / 2
        self._watchdog = self.loop.call_later(self._tick, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
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

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            self._body_bytes += len(data)
        else:
            self._head_bytes += len(data)  # may include body bytes: on_headers_complete counts exactly
        super().data_received(data)
        # a head still incomplete after this many bytes is too large, whatever follows
        too_large = self._head_since is not None and self._head_bytes > self.limits.max_header_bytes
        if too_large and not self.transport.is_closing():
            self._too_large = True
            self.send_400_response("header block too large")

    # -- request head ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_since is None:
            self._head_since = self.loop.time()
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        lim = self.limits
        if len(self.headers) > lim.max_headers or (
            self._head_bytes > lim.max_header_bytes and self._exact_head_bytes() > lim.max_header_bytes
        ):
            self._too_large = True
            raise _HeaderLimit  # the parser error path answers with send_400_response (431 below)
        self._head_since = None
        self._head_bytes = 0
        super().on_headers_complete()
        self._in_body = self.cycle is not None and self.cycle.more_body

    def _exact_head_bytes(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

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

    # -- the watchdog ------------------------------------------------------------------------

    def _watch(self) -> None:
        """Every half of the shorter timeout: close a connection whose head or body is too slow.

        One timer per connection instead of one per request keeps the per-request cost at a few
        attribute writes; a slow client is cut off between one and one and a half timeouts.
        """
        self._watchdog = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        lim = self.limits
        if self._head_since is not None and now - self._head_since > lim.header_timeout_s:
            self.transport.close()
            return
        if self._in_body:
            if self._body_bytes != self._watched_bytes:
                self._watched_bytes = self._body_bytes
                self._progress_at = now
            elif now - self._progress_at > lim.body_timeout_s:
                self.transport.close()
                return
        else:
            self._watched_bytes = -1
        self._watchdog = self.loop.call_later(self._tick, self._watch)
