"""Comparison runs in the background of a gateway: started from the admin API, followed as
server-sent events, stored with their result, cancellable.  One per gateway process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from modelyard.compare.graders import PythonGrader
from modelyard.compare.runner import ComparisonRun
from modelyard.compare.spec import ComparisonSpec
from modelyard.gateway.auth import Principal
from modelyard.gateway.pipeline import Pipeline
from modelyard.storage.comparisons import ComparisonStore

__all__ = ["ComparisonService"]

log = logging.getLogger("modelyard.compare")

#: progress events kept per run for late subscribers (the first and the last are always kept)
_KEEP = 500
#: finished runs kept in memory for their event streams (the database keeps every result)
_FINISHED = 50


class _Live:
    __slots__ = ("changed", "events", "org_id", "run", "seq", "task")

    def __init__(self, run: ComparisonRun, org_id: str | None) -> None:
        self.run = run
        self.org_id = org_id
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None
        self.seq = 0


class ComparisonService:
    def __init__(
        self,
        pipeline: Pipeline,
        store: ComparisonStore | None,
        python_graders: Mapping[str, PythonGrader] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.python = dict(python_graders or {})
        self._live: dict[str, _Live] = {}

    async def start(self) -> None:
        if self.store is not None:
            stale = await self.store.fail_unfinished()
            if stale:
                log.warning("%d comparison run(s) were left running by a stopped gateway: marked failed", stale)

    def prepare(self, spec: ComparisonSpec, principal: Principal) -> ComparisonRun:
        """A run, checked (SpecError: unknown model, unavailable grader, estimate over the cap)."""
        run = ComparisonRun(spec, self.pipeline, principal, python_graders=self.python)
        run.check()
        return run

    async def launch(self, run: ComparisonRun, *, org_id: str | None, created_by: str) -> None:
        live = _Live(run, org_id)

        def on_event(event: dict[str, Any]) -> None:
            live.seq += 1
            live.events.append({"seq": live.seq, **event})
            if len(live.events) > _KEEP:
                del live.events[1 : len(live.events) - _KEEP + 1]
            asyncio.get_running_loop().create_task(self._notify(live))

        run.on_event = on_event
        if self.store is not None:
            spec = run.spec.model_dump(mode="json", by_alias=True)
            await self.store.create(run.id, org_id, run.spec.name, created_by, spec)
        self._live[run.id] = live
        live.task = asyncio.get_running_loop().create_task(self._run(live))

    async def _notify(self, live: _Live) -> None:
        async with live.changed:
            live.changed.notify_all()

    async def _run(self, live: _Live) -> None:
        run = live.run
        status = "failed"
        try:
            await run.run()
            status = run.status
        except asyncio.CancelledError:
            status = "cancelled"
        except Exception:
            log.exception("comparison %s failed", run.id)
            run.status = "failed"
            live.seq += 1
            live.events.append({"seq": live.seq, "id": run.id, "type": "finished", "status": "failed"})
        finally:
            if self.store is not None:
                try:
                    await self.store.finish(run.id, status, run.result, round(run.spent_usd + run.judge_cost_usd, 8))
                except Exception:
                    log.exception("could not store comparison %s", run.id)
            await self._notify(live)
            finished = [k for k, v in self._live.items() if v.task is not None and v.task.done() and k != run.id]
            for key in finished[: max(0, len(finished) - _FINISHED)]:
                self._live.pop(key, None)

    def live(self, run_id: str, org_id: str | None, *, every_org: bool = False) -> ComparisonRun | None:
        live = self._live.get(run_id)
        if live is None or (not every_org and live.org_id != org_id):
            return None
        return live.run

    async def events(
        self, run_id: str, org_id: str | None, *, every_org: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event of a run so far, then the new ones until it finishes (a finished run's
        last event is ``finished``)."""
        live = self._live.get(run_id)
        if live is None or (not every_org and live.org_id != org_id):
            return
        last = 0
        while True:
            for event in [e for e in live.events if e["seq"] > last]:
                last = event["seq"]
                yield event
                if event.get("type") == "finished":
                    return
            if live.task is not None and live.task.done() and not any(e["seq"] > last for e in live.events):
                return
            async with live.changed:
                pending = any(e["seq"] > last for e in live.events)
                finished = live.task is not None and live.task.done()
                if not pending and not finished:  # checked under the lock: no wake-up is lost
                    try:
                        await asyncio.wait_for(live.changed.wait(), 15.0)
                    except TimeoutError:
                        pass
            if not any(e["seq"] > last for e in live.events) and not (live.task and live.task.done()):
                yield {"type": "keep-alive"}

    def cancel(self, run_id: str, org_id: str | None, *, every_org: bool = False) -> bool:
        run = self.live(run_id, org_id, every_org=every_org)
        if run is None or run.status not in ("queued", "running"):
            return False
        run.cancel()
        return True

    async def aclose(self) -> None:
        for live in self._live.values():
            live.run.cancel()
        tasks = [v.task for v in self._live.values() if v.task is not None and not v.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=10.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
