"""Child process for the crash test: submit usage records at a steady rate until killed.

Usage: python _crash_child.py DB_PATH SPILL_PATH PROGRESS_PATH FLUSH_INTERVAL_MS RATE_PER_S

With CRASH_CHILD_DEBUG set, the writer's debug log goes to stderr, each line starting with the
``time.monotonic()`` at which it was written.

PROGRESS_PATH is a file mapped into memory (it survives the SIGKILL, being the kernel's page
cache): bytes 0-8 hold the number of records whose ``submit`` has returned, then one float64 per
record with the ``time.monotonic()`` at which it was submitted (CLOCK_MONOTONIC: the same clock
in the parent on Linux).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import sys
import time
from datetime import UTC, datetime

from modelyard.accounting.writer import UsageWriter
from modelyard.storage import Database, migrate
from modelyard.storage.records import AttemptRecord, RequestRecord
from modelyard.storage.usage import UsageStore

MAX_RECORDS = 200_000
HEADER = 8


async def main(db_path: str, spill_path: str, progress_path: str, interval_ms: int, rate: float) -> None:
    db = Database(f"sqlite:///{db_path}")
    await migrate(db)
    writer = UsageWriter(
        UsageStore(db), flush_interval_ms=interval_ms, batch_size=500, max_queue=100_000, spill_path=spill_path
    )
    await writer.start()
    fd = os.open(progress_path, os.O_RDWR)
    progress = mmap.mmap(fd, HEADER + 8 * MAX_RECORDS)
    i = 0
    start = time.monotonic()
    while i < MAX_RECORDS:
        due = min(MAX_RECORDS, int((time.monotonic() - start) * rate))
        while i < due:
            now = time.monotonic()
            struct.pack_into("<d", progress, HEADER + 8 * i, now)
            request_id = f"crash-{i:07d}"
            ts = datetime.now(UTC)
            writer.submit(
                RequestRecord(
                    ts=ts,
                    request_id=request_id,
                    route="main",
                    model="gpt",
                    provider="openai",
                    org_id="org",
                    key_id="key",
                    tokens_in=100,
                    tokens_out=20,
                    cost_usd=0.001,
                    latency_ms=120.0,
                ),
                [
                    AttemptRecord(
                        ts=ts,
                        request_id=request_id,
                        attempt_number=1,
                        route="main",
                        model="gpt",
                        provider="openai",
                        org_id="org",
                        key_id="key",
                    )
                ],
            )
            i += 1
            struct.pack_into("<q", progress, 0, i)
        await asyncio.sleep(0.001)
    await writer.aclose()
    await db.aclose()


if __name__ == "__main__":
    if os.environ.get("CRASH_CHILD_DEBUG"):
        import logging

        class Monotonic(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                record.mono = time.monotonic()
                return True

        handler = logging.StreamHandler()
        handler.addFilter(Monotonic())
        handler.setFormatter(logging.Formatter("%(mono).6f %(message)s"))
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
