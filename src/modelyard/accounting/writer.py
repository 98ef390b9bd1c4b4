"""The usage writer: usage records leave the request path at once and reach the database in batches.

:meth:`UsageWriter.submit` appends to an in-memory queue and returns (no I/O, no await); a
background task inserts the queue every ``flush_interval_ms``, or as soon as ``batch_size`` records
are waiting, one transaction per batch.  Guarantees:

* **Graceful shutdown loses nothing.**  :meth:`UsageWriter.aclose` inserts everything queued; what
  cannot be inserted (the database is down, or does not answer within ``close_timeout_s``) is
  written to the spill file and inserted at the next start.
* **A database outage loses nothing.**  Requests keep being served; records wait in the queue,
  retried with backoff (up to ``max_retry_s``); beyond ``max_queue`` the oldest go to the spill
  file (fsync per batch), which is replayed once inserts work again.  Inserts are idempotent
  (primary keys + ``ON CONFLICT DO NOTHING``), so a replay interrupted by a crash can be rerun.
* **A crash (SIGKILL, OOM) loses at most the records of the last flush interval** while the
  database is up (plus the batch being inserted at that moment), and, while it is down, what
  was waiting in memory (at most ``max_queue`` records; spilled ones are safe).
* **Bad records do not block the rest.**  When the database refuses a batch for its data (not for
  being unreachable), the batch is split to find the offending records, which go to
  ``<spill_path>.rejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.exc import DataError, IntegrityError

from modelyard.config.schema import UsageConfig
from modelyard.storage.records import AttemptRecord, RequestRecord
from modelyard.storage.spill import Item, ReplayReader, SpillFile, decode_line, encode_items

__all__ = ["UsageSink", "UsageWriter"]

log = logging.getLogger("modelyard.usage")

#: batches replayed from the spill file per flush, so that a long replay never holds up fresh records
REPLAY_BATCHES_PER_FLUSH = 4


class UsageSink(Protocol):
    async def insert(self, requests: Sequence[RequestRecord], attempts: Sequence[AttemptRecord]) -> None: ...


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


def _is_data_error(exc: BaseException) -> bool:
    """The database refused the rows themselves (so retrying the same batch cannot help)."""
    return isinstance(exc, (DataError, IntegrityError))


class UsageWriter:
    """Batches usage records into the store.  ``submit`` must be called from the event loop's thread."""

    def __init__(
        self,
        store: UsageSink,
        *,
        flush_interval_ms: int = 100,
        batch_size: int = 500,
        max_queue: int = 10_000,
        spill_path: str = "./modelyard-usage-spill.jsonl",
        max_retry_s: float = 5.0,
        insert_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.interval_s = flush_interval_ms / 1000
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.spill = SpillFile(spill_path)
        self.max_retry_s = max_retry_s
        self.insert_timeout_s = insert_timeout_s
        self.close_timeout_s = close_timeout_s
        self._queue: deque[Item] = deque()
        self._inflight = 0
        self._spilled_pending = 0
        self._wake = asyncio.Event()
        self._wake_at = batch_size
        self._task: asyncio.Task[None] | None = None
        self._reader: ReplayReader | None = None
        self._closing = False
        self._closed = False
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._failures = 0
        # figures for /v1/status and metrics
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self.rejected = 0
        self.insert_failures = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_insert_ms: float | None = None

    @classmethod
    def from_config(cls, store: UsageSink, config: UsageConfig, **kwargs: Any) -> UsageWriter:
        return cls(
            store,
            flush_interval_ms=config.flush_interval_ms,
            batch_size=config.batch_size,
            max_queue=config.max_queue,
            spill_path=config.spill_path,
            **kwargs,
        )

    # -- the hot path -------------------------------------------------------------------------

    def submit(self, request: RequestRecord, attempts: Sequence[AttemptRecord] = ()) -> None:
        """Queue one request's records.  Never blocks, never raises for a database problem."""
        if self._closed:
            self._spill_after_close((request, attempts))
            return
        queue = self._queue
        queue.append((request, attempts))
        if len(queue) >= self._wake_at:
            self._wake.set()

    # -- figures ------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Requests not yet in the database: queued, being inserted, and spilled but not replayed."""
        return len(self._queue) + self._inflight + self._spilled_pending

    @property
    def store_down(self) -> bool:
        return self._down_since is not None

    def status(self) -> dict[str, Any]:
        return {
            "backlog": self.backlog,
            "queued": len(self._queue) + self._inflight,
            "spilled_pending": self._spilled_pending,
            "written": self.written,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "insert_failures": self.insert_failures,
            "store_down_s": None if self._down_since is None else time.monotonic() - self._down_since,
            "last_error": self.last_error,
            "last_insert_ms": self.last_insert_ms,
        }

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background flusher (records spilled by an earlier run are replayed by it)."""
        if self._task is not None or self._closed:
            return
        self._spilled_pending = await asyncio.to_thread(self.spill.pending)
        if self._spilled_pending:
            log.info("usage: %d spilled records from an earlier run will be replayed", self._spilled_pending)
        self._task = asyncio.create_task(self._run(), name="modelyard-usage-writer")

    async def aclose(self) -> None:
        """Insert everything queued, spilling to disk what cannot be inserted in time; then stop."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        deadline = time.monotonic() + self.close_timeout_s
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait({task}, timeout=self.close_timeout_s)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                while self._queue and await self._flush_batch():
                    pass
        except TimeoutError:
            log.warning("usage: the database did not take the last records in time; spilling them")
        if self._reader is not None:
            await asyncio.to_thread(self._reader.close)
            self._reader = None
        self._closed = True
        if self._queue:
            items = list(self._queue)
            self._queue.clear()
            await self._spill(items, final=True)

    # -- the background task ------------------------------------------------------------------

    async def _run(self) -> None:
        # flushes start on a fixed schedule (every interval from the previous start, however long
        # the previous flush took), so that no record waits more than one interval to be taken
        next_at = time.monotonic() + self.interval_s
        while not self._closing:
            now = time.monotonic()
            timeout = max(0.0, next_at - now)
            if self._down_since is not None:
                timeout = max(timeout, self._retry_at - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            next_at = time.monotonic() + self.interval_s
            try:
                await self._tick()
            except Exception:  # the flusher must outlive any surprise; records stay queued
                log.exception("usage: flush failed unexpectedly")

    async def _tick(self) -> None:
        if self._down_since is not None and time.monotonic() < self._retry_at:
            await self._spill_overflow()
            return
        # what was queued when the flush began, then any full batches that piled up meanwhile
        due = len(self._queue)
        if due and log.isEnabledFor(logging.DEBUG):
            log.debug("usage: flush started with %d requests queued", due)
        while (due > 0 or len(self._queue) >= self.batch_size) and not self._closing:
            due -= min(self.batch_size, len(self._queue))
            if not await self._flush_batch():
                await self._spill_overflow()
                return
            await self._spill_overflow()  # the store is slower than the traffic
        if (self._spilled_pending or self._reader is not None) and not self._closing:
            await self._replay()

    async def _flush_batch(self) -> bool:
        """Insert the oldest batch; on failure put it back and return False."""
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
        self._inflight = len(batch)
        try:
            ok = await self._insert_items(batch)
        except BaseException:  # cancelled (shutdown timeout): the batch goes back, to be spilled
            queue.extendleft(reversed(batch))
            raise
        finally:
            self._inflight = 0
        if not ok:
            queue.extendleft(reversed(batch))
        return ok

    async def _insert_items(self, items: Sequence[Item]) -> bool:
        """Insert items; records the database refuses are set aside.  False when the store is down."""
        requests = [r for r, _ in items]
        attempts = [a for _, group in items for a in group]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.insert_timeout_s):
                await self.store.insert(requests, attempts)
        except Exception as exc:
            if not _is_data_error(exc):
                self._mark_down(exc)
                return False
            if len(items) == 1:
                await self._reject(items, exc)
                return True
            mid = len(items) // 2
            return await self._insert_items(items[:mid]) and await self._insert_items(items[mid:])
        self.written += len(items)
        self.last_insert_ms = (time.perf_counter() - started) * 1000
        self._mark_up()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("usage: wrote %d requests in %.1f ms", len(items), self.last_insert_ms)
        return True

    def _mark_down(self, exc: BaseException) -> None:
        self.insert_failures += 1
        self._failures += 1
        self.last_error = _describe(exc)
        now = time.monotonic()
        delay = min(self.interval_s * 2 ** min(self._failures - 1, 20), self.max_retry_s)
        self._retry_at = now + delay
        self._wake_at = self.max_queue + 1
        if self._down_since is None:
            self._down_since = now
            log.warning("usage: cannot write to the database (%s); records are kept and retried", self.last_error)

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.info(
                "usage: database writable again after %.1f s; %d spilled records to replay",
                time.monotonic() - self._down_since,
                self._spilled_pending,
            )
        self._down_since = None
        self._failures = 0
        self._wake_at = self.batch_size

    # -- spilling and replaying ---------------------------------------------------------------

    async def _spill_overflow(self) -> None:
        """Move the oldest records to the spill file while more than ``max_queue`` are queued."""
        queue = self._queue
        excess = len(queue) - self.max_queue
        if excess <= 0:
            return
        # spill a little below the limit, so that a full queue does not mean one fsync per request
        count = min(len(queue), excess + min(self.batch_size, self.max_queue // 2))
        items = [queue.popleft() for _ in range(count)]
        await self._spill(items)

    async def _spill(self, items: list[Item], *, final: bool = False) -> None:
        data = encode_items(items)
        try:
            await asyncio.to_thread(self.spill.append, data)
        except OSError as exc:
            log.error("usage: cannot write the spill file %s: %s", self.spill.path, exc)
            if final:
                self.dropped += len(items)
                log.error("usage: %d usage records lost at shutdown", len(items))
                return
            self._queue.extendleft(reversed(items))
            hard_limit = self.max_queue * 10
            while len(self._queue) > hard_limit:
                self._queue.popleft()
                self.dropped += 1
            return
        self.spilled += len(items)
        self._spilled_pending += len(items)

    def _spill_after_close(self, item: Item) -> None:
        """A record submitted after :meth:`aclose`: straight to the spill file (blocking, but rare)."""
        try:
            self.spill.append(encode_items([item]))
        except OSError as exc:
            self.dropped += 1
            log.error("usage: record submitted after shutdown lost: %s", exc)
            return
        self.spilled += 1
        self._spilled_pending += 1

    async def _reject(self, items: Sequence[Item], exc: BaseException) -> None:
        self.rejected += len(items)
        log.error(
            "usage: the database refused a usage record (%s); kept in %s", _describe(exc), self.spill.rejected_path
        )
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.spill.reject, encode_items(items))

    async def _replay(self) -> None:
        """Insert a few batches from the spill file; delete it once all of it is in."""
        if self._reader is None:
            self._reader = await asyncio.to_thread(self.spill.claim)
            if self._reader is None:
                self._spilled_pending = await asyncio.to_thread(self.spill.pending)
                return
        reader = self._reader
        for _ in range(REPLAY_BATCHES_PER_FLUSH):
            chunk = await asyncio.to_thread(reader.read, self.batch_size)
            items: list[Item] = []
            damaged: list[bytes] = []
            for line in chunk.lines:
                try:
                    items.append(decode_line(line))
                except (ValueError, TypeError, KeyError):
                    damaged.append(line if line.endswith(b"\n") else line + b"\n")
            if items and not await self._insert_items(items):
                await asyncio.to_thread(reader.seek, chunk.offset)  # from the same place next time
                return
            if damaged:
                self.rejected += len(damaged)
                log.error("usage: %d damaged lines in %s were set aside", len(damaged), reader.path)
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(self.spill.reject, b"".join(damaged))
            self.replayed += len(items)
            self._spilled_pending = max(0, self._spilled_pending - len(chunk.lines))
            if chunk.at_end:
                await asyncio.to_thread(reader.finish)
                self._reader = None
                self._spilled_pending = await asyncio.to_thread(self.spill.pending)
                return
