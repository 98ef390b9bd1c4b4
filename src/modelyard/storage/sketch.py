"""Latency histograms with a relative-error bound, for the hourly usage rollups.

A value ``v`` (milliseconds) falls in bucket ``k = ceil(ln(v) / ln(GAMMA))`` with
``GAMMA = (1 + ALPHA) / (1 - ALPHA)``, and bucket ``k`` stands for ``2 * GAMMA**k / (GAMMA + 1)``:
every value of the bucket is within ``ALPHA`` (2 %) of it, relatively (the DDSketch mapping). Values
are clamped to ``[MIN_MS, MAX_MS]``, so there are :data:`BUCKETS` buckets, numbered from 0.

A histogram is stored as one non-negative integer holding every bucket's count in a field of
:data:`WIDTH` bits (bucket ``b`` in bits ``b * WIDTH`` up): adding two such integers adds the
histograms bucket by bucket, so merging thousands of hourly histograms is one C-level integer
addition each, not a Python loop over buckets. On disk it is the two-byte number of the lowest
non-empty bucket followed by the integer's little-endian bytes from there up (a few hundred bytes).

SQL computes the same bucket with :func:`bucket_sql` (``ln`` and ``ceil``: PostgreSQL has them, and
SQLite has them when built with its math functions; :func:`install_sqlite_functions` adds them
otherwise), so raw rows can be bucketed in the database and merged with stored histograms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Integer, case, cast, func, literal

__all__ = [
    "ALPHA",
    "BUCKETS",
    "bucket_of",
    "bucket_sql",
    "counted",
    "decode",
    "encode",
    "install_sqlite_functions",
    "quantiles",
]

#: the largest relative error of a value read back from a histogram
ALPHA = 0.02
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LN_GAMMA = math.log(GAMMA)
MIN_MS = 0.01
MAX_MS = 1e8  # 27 hours
_OFFSET = -math.ceil(math.log(MIN_MS) / _LN_GAMMA)
BUCKETS = math.ceil(math.log(MAX_MS) / _LN_GAMMA) + _OFFSET + 1
#: bits per bucket count: up to 10**12 values in one bucket
WIDTH = 40
_MASK = (1 << WIDTH) - 1


def bucket_of(value: float) -> int:
    """The bucket (0 .. BUCKETS - 1) of a value in milliseconds."""
    v = min(max(value, MIN_MS), MAX_MS)
    return math.ceil(math.log(v) / _LN_GAMMA) + _OFFSET


def bucket_sql(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """:func:`bucket_of` in SQL (PostgreSQL and SQLite)."""
    clamped = case((value < MIN_MS, literal(MIN_MS)), (value > MAX_MS, literal(MAX_MS)), else_=value)
    return cast(func.ceil(func.ln(clamped) / literal(_LN_GAMMA)), Integer) + literal(_OFFSET)


def _value(bucket: int) -> float:
    return 2 * GAMMA ** (bucket - _OFFSET) / (GAMMA + 1)


def counted(bucket: int, n: int) -> int:
    """``n`` values in ``bucket``, as a packed histogram (add it to another to merge them)."""
    return n << (WIDTH * bucket)


def pack(counts: Iterable[tuple[int, int]]) -> int:
    """The integer form of ``(bucket, count)`` pairs (a bucket may repeat: the counts add up)."""
    return sum(counted(bucket, n) for bucket, n in counts)


def encode(packed: int) -> bytes | None:
    """The stored form of a packed histogram (None for an empty one)."""
    if packed == 0:
        return None
    low = (packed & -packed).bit_length() - 1  # the lowest set bit
    first = low // WIDTH
    rest = packed >> (WIDTH * first)
    return first.to_bytes(2, "little") + rest.to_bytes((rest.bit_length() + 7) // 8, "little")


def decode(blob: bytes | None) -> int:
    """The packed histogram of a stored one."""
    if not blob:
        return 0
    first = int.from_bytes(blob[:2], "little")
    return int.from_bytes(blob[2:], "little") << (WIDTH * first)


def _counts(packed: int) -> list[tuple[int, int]]:
    out = []
    bucket = 0
    while packed:
        n = packed & _MASK
        if n:
            out.append((bucket, n))
        packed >>= WIDTH
        bucket += 1
    return out


def quantiles(packed: int, ps: Iterable[float]) -> list[float | None]:
    """Linear-interpolation percentiles (the ``percentile_cont`` definition) of the histogram's
    values, each read as its bucket's value; None for an empty histogram."""
    counts = _counts(packed)
    total = sum(n for _, n in counts)
    wanted = list(ps)
    if total == 0:
        return [None for _ in wanted]

    def at(rank: int) -> float:
        seen = 0
        for bucket, n in counts:
            seen += n
            if rank < seen:
                return _value(bucket)
        return _value(counts[-1][0])

    out: list[float | None] = []
    for p in wanted:
        pos = p * (total - 1)
        lo = math.floor(pos)
        frac = pos - lo
        low = at(lo)
        out.append(low if frac == 0 else low + (at(lo + 1) - low) * frac)
    return out


def install_sqlite_functions(dbapi_connection: Any) -> None:
    """Give a sqlite3 connection ``ln`` and ``ceil`` when its SQLite was built without them."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT ln(2), ceil(1.5)")
    except Exception:  # no math functions in this build
        dbapi_connection.create_function("ln", 1, math.log, deterministic=True)
        dbapi_connection.create_function("ceil", 1, math.ceil, deterministic=True)
    finally:
        cursor.close()
