"""A transport that answers every request with the same recorded bytes, one read per piece.

For measuring and differential tests of the provider adapters' stream decoding without sockets
(``bench/stream_cpu.py``, ``tests/providers/test_translated_fast_paths.py``): the read boundaries
are exactly the pieces given, which a loopback server cannot promise.  It has the shape of
``modelyard.transport.Transport`` (``send`` returns a response and a lease) and imports nothing of
the gateway (the fakes stand apart).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

__all__ = ["ReplayResponse", "ReplayTransport"]


class ReplayResponse:
    """A response whose body is ``pieces``, one read each."""

    status = 200

    def __init__(self, pieces: list[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.pieces = pieces
        self.headers: Mapping[str, str] = headers or {"content-type": "text/event-stream"}

    async def read(self) -> bytes:
        return b"".join(self.pieces)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


class _Lease:
    def release(self) -> None:
        pass


class ReplayTransport:
    """Answers every request with ``pieces`` (a recorded stream, cut into reads)."""

    closed = False

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def constant_headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        return headers

    async def send(self, method: str, url: str, **kw: Any) -> tuple[ReplayResponse, _Lease]:
        return ReplayResponse(self.pieces), _Lease()

    async def aclose(self) -> None:
        pass
