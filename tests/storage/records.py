"""Record builders shared by the storage tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.storage.records import AttemptRecord, RequestRecord

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def request(i: int, **overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "ts": T0 + timedelta(seconds=i),
        "request_id": f"req-{i:06d}",
        "route": "main",
        "model": "gpt",
        "provider": "openai",
        "org_id": "org-a",
        "key_id": "key-a",
        "tokens_in": 100,
        "tokens_out": 20,
        "cost_usd": 0.001,
        "latency_ms": 100.0,
    }
    values.update(overrides)
    return RequestRecord(**values)


def attempt(req: RequestRecord, number: int = 1, **overrides: Any) -> AttemptRecord:
    values: dict[str, Any] = {
        "ts": req.ts,
        "request_id": req.request_id,
        "attempt_number": number,
        "route": req.route,
        "model": req.model,
        "provider": req.provider,
        "org_id": req.org_id,
        "key_id": req.key_id,
        "tokens_in": req.tokens_in,
        "tokens_out": req.tokens_out,
        "cost_usd": req.cost_usd,
        "latency_ms": req.latency_ms,
        "success": req.success,
    }
    values.update(overrides)
    return AttemptRecord(**values)
