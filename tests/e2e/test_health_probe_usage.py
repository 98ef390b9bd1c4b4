"""A provider's chat probe (``health.method: chat_probe``) is a call its upstream bills: each one is
a usage record (``source: probe``, ``route: health``), priced as the configured model it asked
(counted by no budget, and so not by a budget seeded from the records after a restart either:
tests/accounting/test_budgets.py). Against a real ``modelyard serve`` and the fake OpenAI over loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.e2e.front_ends import wait_rows
from tests.helpers import ServerProcess


def test_chat_probes_are_usage_records(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    config = gateway_config(fakes)
    config["providers"]["openai"]["health"] = {"method": "chat_probe", "interval_s": 0.5}
    config["usage"] = {"flush_interval_ms": 50}
    proc = ServerProcess(config, tmp_path)
    try:
        rows = wait_rows(tmp_path / "modelyard.db", "health", 2)
        probes = [b for b in (r["body"] for r in fakes["openai"].requests) if b.get("max_tokens") == 1]
        assert len(probes) >= 2
        row = rows[0]
        assert (row["source"], row["provider"], row["success"]) == ("probe", "openai", 1)
        assert row["model"] == "gpt-mini" and probes[0]["model"] == "gpt-4o-mini"  # the cheapest configured
        assert row["tokens_in"] > 0 and row["cost_usd"] == pytest.approx(
            (row["tokens_in"] * 0.15 + row["tokens_out"] * 0.60) / 1e6
        )
        assert row["org_id"] is None and row["key_id"] is None
    finally:
        proc.stop()
