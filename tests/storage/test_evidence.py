"""Recommendations from a seeded usage history (#17 point 2), on a real SQLite file and the real
PostgreSQL: the evidence query reads production and canary records only, counts validator
rejections per model, and the recommender names the better model with its expected change."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from modelyard.compare.production import MIN_REQUESTS, recommendations
from modelyard.config.loader import parse_config
from modelyard.runtime import Runtime
from modelyard.storage.db import Database
from modelyard.storage.evidence import route_evidence
from modelyard.storage.records import AttemptRecord, RequestRecord
from modelyard.storage.usage import UsageStore


def seed(now: datetime) -> tuple[list[RequestRecord], list[AttemptRecord]]:
    """Route `assist`: `old` answered 400 requests, 80 of its answers rejected by the validator
    (the request then went to `new`); `new` answered 400 of its own, 8 rejected; comparison and
    shadow traffic and requests their clients gave up on that must not count; `old` is slower and
    dearer."""
    rng = random.Random(3)
    reqs: list[RequestRecord] = []
    atts: list[AttemptRecord] = []
    i = 0

    def add(
        model: str,
        ok: bool,
        latency: float,
        cost: float,
        source: str = "production",
        rejected_first: str | None = None,
        error_class: str | None = None,
    ) -> None:
        nonlocal i
        i += 1
        rid = f"r{i:05d}"
        ts = now - timedelta(hours=rng.uniform(0, 48))
        n = 1
        if rejected_first is not None:
            atts.append(
                AttemptRecord(ts, rid, 1, "assist", rejected_first, "p", success=False, error_class="validation")
            )
            n = 2
        atts.append(AttemptRecord(ts, rid, n, "assist", model, "p", success=ok, latency_ms=latency, cost_usd=cost))
        reqs.append(
            RequestRecord(ts, rid, "assist", model, "p", cost_usd=cost, latency_ms=latency, success=ok,
                          fallback=rejected_first is not None, attempts=n, source=source, error_class=error_class)
        )  # fmt: skip

    for _ in range(400):
        add("old", True, rng.uniform(700, 900), 0.010)
    for _ in range(80):
        add("new", True, rng.uniform(300, 500), 0.004, rejected_first="old")
    for _ in range(400):
        add("new", True, rng.uniform(300, 500), 0.004)
    for _ in range(8):
        add("old", True, rng.uniform(700, 900), 0.010, rejected_first="new")
    for _ in range(300):  # other sources: left out
        add("old", False, 10, 0.0, source="comparison")
        add("new", False, 10, 0.0, source="shadow")
    for _ in range(50):  # the client gave up while old was working: left out, says nothing about old
        add("old", False, 500, 0.001, error_class="client_closed")
    return reqs, atts


async def test_recommendations_from_a_seeded_usage_history(db: Database) -> None:
    now = datetime.now(UTC)
    reqs, atts = seed(now)
    await UsageStore(db).insert(reqs, atts)
    evidence = await route_evidence(db, "assist", now - timedelta(days=7))
    assert evidence["old"].requests == 408 and evidence["old"].rejected == 80
    assert evidence["new"].requests == 480 and evidence["new"].rejected == 8
    assert evidence["new"].fallbacks == 80 and len(evidence["new"].latencies) == 480
    cfg = parse_config(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k"}},
            "models": {"old": {"provider": "p"}, "new": {"provider": "p"}, "solo": {"provider": "p"}},
            "routes": {
                "assist": {"models": ["old"], "fallbacks": ["new"], "validators": ["non_empty"]},
                "quiet": {"models": ["solo"]},
            },
        },
        env={},
    )
    data = {r["route"]: r for r in await recommendations(Runtime(cfg), db, None, days=7, every_org=True)}
    rec = data["assist"]["recommendation"]
    assert data["assist"]["status"] == "recommend" and rec["model"] == "new" and rec["instead_of"] == "old"
    assert rec["expected_change"]["quality"] == pytest.approx(472 / 480 - 408 / 488, abs=1e-3)
    assert rec["expected_change"]["cost"] == pytest.approx(-0.6, abs=1e-3)
    assert rec["expected_change"]["speed"] > 1.5
    assert data["quiet"]["status"] == "not_enough_data" and f"{MIN_REQUESTS} needed" in data["quiet"]["reason"]
