"""``make soak``: the fault soak for ``MODELYARD_FAULT_SOAK_S`` seconds (default 600): faults on two
of three models, clients hanging up at random; zero failed requests, nothing left behind, and the
gateway's RSS grows by less than 10 % (measured after warming up).  It prints the figures
docs/testing.md reports."""

from __future__ import annotations

import os
from pathlib import Path

from modelyard.testing import FakeServer
from tests.faultsoak import check, run

DURATION_S = float(os.environ.get("MODELYARD_FAULT_SOAK_S", "600"))


def test_faults_for_ten_minutes(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    out = run(fakes, tmp_path, DURATION_S, workers=8)
    f = out["figures"]
    growth = (out["rss_end_mb"] - out["rss_start_mb"]) / out["rss_start_mb"] * 100
    print(
        f"\nfault soak {DURATION_S:g} s: {f.requests} requests, {out['rescued']} rescued by a fallback, "
        f"{f.hung_up} hung up on purpose, {f.faults} fault changes, {f.failed} failed; RSS "
        f"{out['rss_start_mb']:.1f} -> {out['rss_end_mb']:.1f} MB ({growth:+.1f} %); sockets "
        f"{out['sockets_before']} -> {out['sockets_after']}"
    )
    check(out)
    assert growth < 10, growth
