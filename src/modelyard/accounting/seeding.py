"""Budget counters start from the spend recorded in the usage database (seeding).

Runs when the gateway starts and whenever its budgets are refreshed (a config reload, a key's
budget added or changed through the admin API): :meth:`modelyard.gateway.services.Services.refresh_budgets`.
Requests are served meanwhile, so a request may create a counter (reserve or settle) before the
seed reaches it.  Such a counter is *unseeded* and remembers when it was created (``born``): from
then on it counts every request live, so the seed adds to it what was recorded before, the requests
that **ended** before ``born`` (a request settles its budgets before it ends, so one that ended
later was counted live, and one that ended earlier was not).  A counter that does not exist is
created at all the spend recorded in its period; a seeded counter is never added to.  The ledger
checks and adds atomically (one Lua script with Redis), so of several replicas seeding the same
counter at once exactly one adds; one that computed the spend for another state of the counter is
told so and computes again.

Not counted: records still queued in a replica's usage writer when the seed reads the database,
and, with replicas, a request whose record says it ended before ``born`` on a clock running ahead
of the one that stamped ``born`` (clocks are taken to agree to within a request's duration).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from modelyard.accounting.budgets import BudgetLedger, Period, period_of
from modelyard.config.schema import BudgetConfig
from modelyard.errors import ModelyardError
from modelyard.storage.usage import UsageStore

__all__ = ["seed_budgets"]

log = logging.getLogger("modelyard.budgets")

#: the counter changed under us this many times in a row: leave it (the next refresh tries again)
_TRIES = 4


async def seed_budgets(
    ledger: BudgetLedger, usage: UsageStore, budgets: Sequence[BudgetConfig], *, now: datetime | None = None
) -> int:
    """Seed the counters of ``budgets`` in their current period (at ``now``) from the recorded spend.

    One grouped query per budget, then one seed per target with spend, and one more query for each
    counter a request created first (once: it is seeded then, even with nothing to add; the first
    request of each day or month creates its counters, so a refresh later in the period makes one
    such query per target with spend).  Returns the number of counters seeded now.  A database or a
    Redis that is down is logged, not raised: the counters then count from 0 (requests say so
    themselves when Redis is down)."""
    at = now or datetime.now(UTC)
    seeded = 0
    for b in budgets:
        period = period_of(b.period, at)
        try:
            rows = await usage.spend_by(b.scope, since=period.start, until=period.end, target=b.target)
        except Exception as exc:  # the store is down: start from 0 rather than not at all
            log.warning("budget %s: cannot read the recorded spend (%s); its counter starts at 0", b.name, exc)
            continue
        for value, usd, tokens in rows:
            if b.scope not in ("global", "shadow") and value is None:
                continue
            if not (usd or tokens):
                continue
            try:
                seeded += await _seed_one(ledger, usage, b, period, value, usd, tokens, at)
            except ModelyardError as exc:  # Redis down: the requests will say so themselves
                log.warning("budget %s: cannot seed its counter (%s)", b.name, exc.message)
                return seeded
            except Exception as exc:  # the store went down between two queries
                log.warning("budget %s: cannot read the recorded spend (%s)", b.name, exc)
    return seeded


async def _seed_one(
    ledger: BudgetLedger,
    usage: UsageStore,
    b: BudgetConfig,
    period: Period,
    value: str | None,
    usd: float,
    tokens: int,
    at: datetime,
) -> bool:
    label = _label(b, value)
    whole = (usd, tokens)  # the period's spend, for a counter that does not exist
    born = 0
    for _ in range(_TRIES):
        result = await ledger.seed(b.name, label, usd=usd, tokens=tokens, born=born, now=at)
        if result.born is None:
            return result.applied
        born = result.born
        if born == 0:
            usd, tokens = whole
            continue
        target = b.target if b.scope == "shadow" else None if b.scope == "global" else value
        rows = await usage.spend_by(b.scope, since=period.start, until=period.end, target=target, ended_before_ms=born)
        usd, tokens = (rows[0][1], rows[0][2]) if rows else (0.0, 0)
    log.warning("budget %s: its counter for %s kept changing while being seeded; left as it is", b.name, label)
    return False


def _label(b: BudgetConfig, value: str | None) -> str:
    """The counter's scope label, as ``budgets.target_of`` names it for a request."""
    if b.scope == "global":
        return "global"
    if b.scope == "shadow":
        return "shadow" if b.target is None else f"shadow:{b.target}"
    return f"{b.scope}:{value}"
