"""The SQLite memory the usage inserts keep, for the batch sizes the fault soak sees (#19).

``python -m tests.memprobe.sqlite_statements [batches]``: inserts usage batches of random sizes
(requests per 100 ms flush at about 200 a second, one to three attempts each) through one pooled
connection, as the usage writer does, and prints SQLite's own count of the memory it holds
(``sqlite3_memory_used``: page cache, schema and the statements the sqlite3 module keeps
compiled), first with one statement per batch (the insert before the fix), then with the
statement sizes ``_sqlite_chunks`` gives.
"""

from __future__ import annotations

import asyncio
import ctypes
import random
import sys
import tempfile
from pathlib import Path
from unittest import mock

from modelyard.storage import usage
from modelyard.storage.db import Database
from modelyard.storage.migrate import migrate
from tests.storage.records import attempt, request

_lib = ctypes.CDLL("libsqlite3.so.0")
_lib.sqlite3_memory_used.restype = ctypes.c_int64


def _one_statement(rows: int, columns: int) -> list[tuple[int, int]]:
    return [(0, rows)] if rows else []


async def _run(batches: int, one_statement: bool) -> list[tuple[int, float, int]]:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'u.db'}", pool_size=1, max_overflow=0)
        await migrate(db)
        store = usage.UsageStore(db)
        out = []
        n = 0
        with mock.patch.object(usage, "_sqlite_chunks", _one_statement) if one_statement else mock.MagicMock():
            for b in range(1, batches + 1):
                # a flush's worth: about 20 requests, now and then a backlog of a few flushes
                k = max(1, int(rng.gauss(20, 6))) * (rng.choice((1, 1, 1, 1, 2, 3)))
                reqs = [request(n + i) for i in range(k)]
                n += k
                atts = [attempt(r, j) for r in reqs for j in range(1, rng.choice((1, 2, 2, 3)) + 1)]
                await store.insert(reqs, atts)
                if b % (batches // 10) == 0:
                    out.append((b, round(_lib.sqlite3_memory_used() / 2**20, 2), n))
        await db.aclose()
    return out


def main(argv: list[str]) -> None:
    batches = int(argv[0]) if argv else 6000
    for label, one in (("one statement per batch (before)", True), ("powers of two (after)", False)):
        print(label)
        for b, mb, n in asyncio.run(_run(batches, one)):
            print(f"  after {b:6d} batches ({n:7d} requests): SQLite holds {mb:6.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
