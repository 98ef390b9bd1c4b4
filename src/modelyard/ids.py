"""Ids for requests: unique across processes and replicas, and cheap to make.

``uuid.uuid4()`` reads 16 bytes from the kernel and builds a UUID object for every request (a few
per cent of a proxied request's CPU).  An :class:`IdFactory` draws 80 random bits once and counts
from there: ``req_`` + 20 random hex digits + a 12-digit counter, the same 32 hex digits as a
``uuid4().hex``.  Each process (and each worker) makes its own factory, so two processes share a
prefix with probability about n²/2⁸¹.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["IdFactory"]


class IdFactory:
    """``new()`` gives ``<kind>_<32 hex digits>``, unique to this factory and, with its random prefix, globally."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(10).hex()
        self._count = itertools.count(1)

    def new(self, kind: str = "req") -> str:
        return f"{kind}_{self._prefix}{next(self._count) & 0xFFFFFFFFFFFF:012x}"
