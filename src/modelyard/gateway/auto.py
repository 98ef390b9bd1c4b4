"""The gateway's side of ``strategy: auto``: classify the prompt, pick the tier, judge the answer.

The classifier and the tier rules live below the gateway (:mod:`modelyard.classify`,
:mod:`modelyard.routing.auto`); what needs the request's accounting (cost estimates for
``max_cost_usd``, the judge's cost) and a second model call (the judge) is here, and reaches
routing only through :class:`modelyard.routing.router.Judge` (contracts: routing reaches a judge
only through a hook the gateway injects).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelyard.accounting.pricing import cost
from modelyard.accounting.service import RequestAccounting
from modelyard.config.schema import JudgeConfig
from modelyard.errors import ModelyardError, UpstreamValidationError
from modelyard.routing.auto import TierChoice, choose
from modelyard.routing.deployment import Deployment, Route
from modelyard.routing.options import RequestOptions
from modelyard.types import ChatRequest, Message, Usage

if TYPE_CHECKING:
    from modelyard.routing.router import Router
    from modelyard.runtime import Runtime

__all__ = ["RequestJudge", "choose_tier", "parse_score", "prompt_text"]

log = logging.getLogger("modelyard.auto")

#: the most of the prompt and of the answer a judge is shown (characters)
_JUDGE_CHARS = 8000
_SYSTEM = (
    "You grade answers. Read the rubric, the request and the answer, then reply with one number "
    "between 0 and 1 (the score) and nothing else."
)
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*(%|/\s*(\d+(?:\.\d+)?))?")


def prompt_text(req: ChatRequest) -> str:
    """What the classifier reads: the text of the user turns (instructions in a system prompt are
    the same for every request of an application, so they would only blur the signal)."""
    turns = [m.text() for m in req.messages if m.role == "user"]
    return "\n\n".join(t for t in turns if t) or "\n\n".join(m.text() for m in req.messages)


def choose_tier(
    route: Route, req: ChatRequest, acct: RequestAccounting | None, max_cost_usd: float | None
) -> TierChoice:
    """Classify the prompt of a request on an auto route and pick its tier (recorded on ``acct``)."""
    auto = route.auto
    assert auto is not None
    c = auto.classifier.classify(prompt_text(req))
    choice = choose(
        auto,
        c,
        route.pool,
        max_cost_usd=max_cost_usd,
        estimate=acct.estimate_usd if acct is not None else None,
    )
    if acct is not None:
        acct.tier, acct.complexity, acct.tier_reason = choice.tier, choice.complexity, choice.reason
    return choice


def parse_score(text: str) -> float | None:
    """A judge's score: the first number of its answer, as 0..1 (``0.8``, ``8/10``, ``80%``);
    None when there is none or it is out of range (the judge answered nonsense)."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    value = float(m.group(1))
    if m.group(2) == "%":
        value /= 100
    elif m.group(3) is not None:
        denominator = float(m.group(3))
        if denominator <= 0:
            return None
        value /= denominator
    return value if 0.0 <= value <= 1.0 else None


class RequestJudge:
    """One request's judge: scores an answer with the configured model.

    On an ``auto`` route (:meth:`for_auto`) it rejects the answer, so the request escalates, when
    the score is under the threshold and a tier above the answering model's is in the plan.  For
    a shadow call (``escalate`` None) it only scores.  A judge that fails or answers nonsense lets
    the answer through and says so in the tier reason.  Its cost is the request's."""

    def __init__(
        self,
        router: Router,
        rt: Runtime,
        cfg: JudgeConfig,
        req: ChatRequest,
        acct: RequestAccounting | None,
        *,
        escalate: Callable[[Deployment], bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.router = router
        self.rt = rt
        self.req = req
        self.acct = acct
        self.escalate = escalate
        self.rng = rng or random.Random()
        self.score: float | None = None
        self.cost_usd = 0.0
        self.note: str | None = None

    @classmethod
    def for_auto(
        cls,
        router: Router,
        rt: Runtime,
        route: Route,
        req: ChatRequest,
        choice: TierChoice,
        acct: RequestAccounting | None,
    ) -> RequestJudge:
        auto = route.auto
        assert auto is not None and auto.judge is not None
        names = [t.name for t in auto.tiers]
        in_plan = {auto.tier_of(d.name) for d in choice.order}
        top = max((names.index(t) for t in in_plan if t is not None), default=-1)

        def below_top(dep: Deployment) -> bool:
            tier = auto.tier_of(dep.name)
            return tier is not None and names.index(tier) < top

        return cls(router, rt, auto.judge, req, acct, escalate=below_top)

    async def __call__(self, dep: Deployment, texts: list[str]) -> None:
        if self.escalate is not None and not self.escalate(dep):
            return
        if self.rng.random() >= self.cfg.sample_rate:
            return
        score = await self._score(texts[0])
        if score is None:
            return
        self.score = score
        dep.state.stats.record_judge(score)
        if self.acct is not None:
            self.acct.judge_score = score
        if self.escalate is not None and score < self.cfg.threshold:
            raise UpstreamValidationError(
                f"the judge ({self.cfg.model}) scored the answer of {dep.name!r} {score:.2f}, "
                f"under the threshold {self.cfg.threshold:g}: escalating to the next tier",
                provider=dep.provider.name,
                model=dep.name,
            )

    def _request(self, answer: str) -> ChatRequest:
        prompt = prompt_text(self.req)
        body = (
            f"RUBRIC:\n{self.cfg.rubric}\n\nREQUEST:\n{prompt[-_JUDGE_CHARS:]}\n\n"
            f"ANSWER:\n{answer[:_JUDGE_CHARS]}\n\nScore (a number from 0 to 1):"
        )
        return ChatRequest(
            model=self.cfg.model,
            messages=[Message(role="system", content=_SYSTEM), Message(role="user", content=body)],
            temperature=0.0,
            max_tokens=16,
        )

    async def _score(self, answer: str) -> float | None:
        try:
            route = self.rt.resolve(self.cfg.model)
            response, _ = await self.router.chat(
                route, self._request(answer), RequestOptions(timeout_s=self.cfg.timeout_s), _Hooks(self)
            )
        except ModelyardError as exc:
            self._noted(f"judge unavailable ({exc.code or type(exc).__name__}): answer kept")
            return None
        text = response.choices[0].message.text() if response.choices else ""
        score = parse_score(text)
        if score is None:
            self._noted("judge answered no score in 0..1: answer kept")
            log.warning("judge %s answered no usable score: %r", self.cfg.model, text[:80])
        return score

    def _noted(self, note: str) -> None:
        self.note = note
        acct = self.acct
        if acct is not None and note not in (acct.tier_reason or ""):
            acct.tier_reason = f"{acct.tier_reason}; {note}" if acct.tier_reason else note

    def _charge(self, dep: Deployment, usage: Usage | None) -> None:
        if usage is None:
            return
        usd = cost(dep.price, usage)
        self.cost_usd += usd
        if self.acct is not None:
            self.acct.add_judge_cost(usd)


class _Hooks:
    """The judge call's attempt hooks: the request's budgets reserve and settle it, and its cost
    is added to the request's."""

    def __init__(self, judge: RequestJudge) -> None:
        self.judge = judge

    async def before(self, dep: Deployment) -> Any:
        acct = self.judge.acct
        return await acct.before(dep) if acct is not None else None

    async def after(self, dep: Deployment, token: Any, usage: Usage | None, *, ok: bool) -> None:
        acct = self.judge.acct
        if acct is not None:
            await acct.after(dep, token, usage, ok=ok)
        self.judge._charge(dep, usage)
