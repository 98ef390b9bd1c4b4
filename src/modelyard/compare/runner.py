"""Runs a comparison through the one request pipeline: every call is recorded like any request
(``source: comparison``), charged to the caller's organisation and held to its budgets.

The run checks its cost cap before it starts (the worst-case estimate of every call) and while it
runs (no call starts that could take the spend past the cap; in-flight calls count at their
estimate).  Progress goes to ``on_event``; :meth:`ComparisonRun.cancel` stops it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from modelyard.accounting.pricing import estimate_input_tokens, worst_case_cost, worst_case_output_tokens
from modelyard.compare.figures import Sample, figures, recommend, summary
from modelyard.compare.graders import Grade, PythonGrader, grade
from modelyard.compare.spec import ComparisonSpec, PromptItem, SpecError
from modelyard.errors import ModelyardError
from modelyard.gateway.auth import ANONYMOUS, Principal
from modelyard.gateway.pipeline import Pipeline
from modelyard.routing.options import RequestOptions
from modelyard.types import ChatRequest
from modelyard.wire.openai import parse_chat_request

__all__ = ["ComparisonRun"]

Event = dict[str, Any]

#: the output tokens a call is expected to write when the run sets no max_tokens (the estimate only)
_EXPECTED_OUTPUT = 256


class ComparisonRun:
    """One comparison: :meth:`check` (models known, graders loadable, estimate under the cap),
    then :meth:`run`.  ``result`` holds the figures once it ends (also when stopped early)."""

    def __init__(
        self,
        spec: ComparisonSpec,
        pipeline: Pipeline,
        principal: Principal = ANONYMOUS,
        *,
        run_id: str | None = None,
        python_graders: Mapping[str, PythonGrader] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.principal = principal
        self.id = run_id or f"cmp_{uuid.uuid4().hex[:20]}"
        self.python = dict(python_graders or {})
        self.on_event = on_event
        self.status = "queued"
        self.stop_reason: str | None = None
        self.samples: list[Sample] = []
        self.spent_usd = 0.0
        self.judge_cost_usd = 0.0
        self.estimate_usd: float | None = None
        self.worst_case_usd: float | None = None
        self.total = len(spec.models) * len(spec.prompts) * spec.iterations
        self.done = 0
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.result: dict[str, Any] | None = None
        self._reserved = 0.0
        self._stop = asyncio.Event()
        self._t0 = 0.0

    # -- before it starts ---------------------------------------------------------------------

    def _request(self, model: str, item: PromptItem, *, stream: bool) -> ChatRequest:
        body: dict[str, Any] = {"model": model, "messages": list(item.messages), "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.spec.max_tokens is not None:
            body["max_tokens"] = self.spec.max_tokens
        if self.spec.temperature is not None:
            body["temperature"] = self.spec.temperature
        return parse_chat_request(body)

    def _estimate_one(self, model: str, item: PromptItem, *, worst: bool) -> float:
        """A call's cost if it writes ``max_tokens`` (else the model's most) when ``worst``, else
        ``max_tokens`` (else 256) tokens: the expected figure the run is checked against first."""
        rt = self.pipeline.holder.current
        dep = rt.resolve(model).pool[0]
        req = self._request(model, item, stream=False)
        n_in = estimate_input_tokens(req)
        most = worst_case_output_tokens(req, dep.config, n_in)
        n_out = most if worst else min(most, self.spec.max_tokens or _EXPECTED_OUTPUT)
        return worst_case_cost(dep.price, n_in, n_out)

    def check(self) -> float:
        """Raise SpecError for an unknown model, an unloadable grader or an expected cost over the
        cap; return the expected cost of the whole run (judge calls not included)."""
        rt = self.pipeline.holder.current
        for model in [*self.spec.models, *sorted(self.spec.judge_models())]:
            try:
                rt.resolve(model)
            except ModelyardError as exc:
                raise SpecError(f"{exc.message}") from None
        for g in [*self.spec.graders, *(g for p in self.spec.prompts for g in (p.graders or ()))]:
            if g.kind == "python" and (g.target or "") not in self.python:
                raise SpecError(
                    f"python grader {g.target!r} is not available: python graders come from the CLI, "
                    "or by name from the config's compare.graders (never as code through the API)"
                )
        pairs = [(m, p) for m in self.spec.models for p in self.spec.prompts]
        estimate = self.spec.iterations * sum(self._estimate_one(m, p, worst=False) for m, p in pairs)
        worst = self.spec.iterations * sum(self._estimate_one(m, p, worst=True) for m, p in pairs)
        self.estimate_usd, self.worst_case_usd = round(estimate, 8), round(worst, 8)
        cap = self.spec.max_cost_usd
        if cap is not None and estimate > cap:
            raise SpecError(
                f"the run is expected to cost ${estimate:.6f}, over --max-cost ${cap:g}: lower max_tokens, "
                "fewer prompts, models or iterations, or raise the cap"
            )
        return estimate

    # -- the run -------------------------------------------------------------------------------

    def cancel(self) -> None:
        if self.status in ("queued", "running"):
            self.stop_reason = "cancelled"
        self._stop.set()

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event({"id": self.id, **event})

    async def run(self) -> dict[str, Any]:
        if self.estimate_usd is None:
            self.check()
        self.status = "running"
        self.started_at = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self._emit({"type": "started", "total": self.total, "estimate_usd": self.estimate_usd})
        gate = asyncio.Semaphore(self.spec.concurrency)
        jobs = [
            (i, item, m) for i in range(self.spec.iterations) for item in self.spec.prompts for m in self.spec.models
        ]

        async def worker(iteration: int, item: PromptItem, model: str) -> None:
            async with gate:
                if self._stop.is_set():
                    return
                est = self._estimate_one(model, item, worst=True)
                cap = self.spec.max_cost_usd
                if cap is not None and self.spent_usd + self._reserved + est > cap:
                    if self.stop_reason is None:  # a call that could take the spend past the cap is not made
                        self.stop_reason = f"cost cap ${cap:g} reached"
                    self._stop.set()
                    return
                self._reserved += est
                try:
                    sample = await self._call(iteration, item, model)
                finally:
                    self._reserved -= est
                self.samples.append(sample)
                self.spent_usd += sample.cost_usd
                self.done += 1
                self._emit(
                    {
                        "type": "progress",
                        "done": self.done,
                        "total": self.total,
                        "model": model,
                        "ok": sample.ok,
                        "verdict": sample.grade.verdict if sample.grade else None,
                        "spent_usd": round(self.spent_usd + self.judge_cost_usd, 8),
                    }
                )

        try:
            await asyncio.gather(*(worker(*job) for job in jobs))
        except asyncio.CancelledError:
            self.stop_reason = self.stop_reason or "cancelled"
            raise
        finally:
            self.status = (
                "done" if self.stop_reason is None else ("cancelled" if self.stop_reason == "cancelled" else "stopped")
            )
            self.finished_at = datetime.now(UTC)
            self.result = self._result()
            self._emit(
                {
                    "type": "finished",
                    "status": self.status,
                    "stop_reason": self.stop_reason,
                    "spent_usd": self.result["spent_usd"],
                    "duration_s": self.result["duration_s"],
                }
            )
        return self.result

    async def _call(self, iteration: int, item: PromptItem, model: str) -> Sample:
        req = self._request(model, item, stream=True)
        start = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        cost = 0.0
        try:
            served = await self.pipeline.stream(req, RequestOptions(), self.principal, source="comparison")
            try:
                async for chunk in served.chunks():
                    for c in chunk.choices:
                        if ttft is None and c.has_output():
                            ttft = (time.perf_counter() - start) * 1000
                        if c.content:
                            parts.append(c.content)
            finally:
                await served.aclose()
                cost = served.cost_usd
        except ModelyardError as exc:
            latency = (time.perf_counter() - start) * 1000
            failed = None
            if self.spec.graders or item.graders:
                failed = Grade(0.0, "failed", f"the call failed: {exc.message[:200]}")
            return Sample(model, item.id, iteration, False, latency, None, cost, "", failed, exc.message[:300])
        latency = (time.perf_counter() - start) * 1000
        answer = "".join(parts)
        graders = item.graders if item.graders is not None else self.spec.graders
        # a grader that raises fails this sample only (grade() catches it)
        g = await grade(graders, answer, item, accurate_at=self.spec.accurate_at, judge=self._judge, python=self.python)
        return Sample(
            model, item.id, iteration, True, round(latency, 2), round(ttft, 2) if ttft else None, cost, answer, g
        )

    async def _judge(self, model: str, system: str, user: str) -> str:
        req = parse_chat_request(
            {
                "model": model,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "max_tokens": 16,
                "temperature": 0,
            }
        )
        served = await self.pipeline.chat(req, RequestOptions(), self.principal, source="comparison")
        self.judge_cost_usd += served.cost_usd
        return served.response.choices[0].message.text() if served.response.choices else ""

    # -- the result ----------------------------------------------------------------------------

    def _result(self) -> dict[str, Any]:
        spec = self.spec
        figs = figures(spec.models, self.samples, spec.iterations)
        graded = bool(spec.graders) or any(p.graders for p in spec.prompts)
        return {
            "id": self.id,
            "name": spec.name,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": round(time.perf_counter() - self._t0, 3) if self._t0 else 0.0,
            "models": list(spec.models),
            "prompts": len(spec.prompts),
            "iterations": spec.iterations,
            "concurrency": spec.concurrency,
            "graders": [g.model_dump(by_alias=True, exclude_none=True) for g in spec.graders],
            "graded": graded,
            "current": spec.current or spec.models[0],
            "route": spec.route,
            "calls": {"planned": self.total, "done": self.done},
            "estimate_usd": self.estimate_usd,
            "worst_case_usd": self.worst_case_usd,
            "max_cost_usd": spec.max_cost_usd,
            "spent_usd": round(self.spent_usd + self.judge_cost_usd, 8),
            "judge_cost_usd": round(self.judge_cost_usd, 8),
            "figures": {m: asdict(f) for m, f in figs.items()},
            "summary": summary(figs, spec.weights),
            "recommendations": recommend(figs, self.samples, spec.weights, spec.current),
            "samples": [s.public() for s in self.samples],
        }
