"""``make soak``: the fault soak for ``MODELYARD_FAULT_SOAK_S`` seconds (default 600): faults on two
of three models, clients hanging up at random; zero failed requests, nothing left behind, and the
gateway's RSS grows by less than 10 % after warming up (the first tenth of the run, at least
30 s of load).  It prints the figures
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
    # measured from the end of the warm-up (the first tenth of the run, at least 30 s of load: the
    # pools, caches and allocator arenas fill in the first seconds), as the replica soak does
    warm_at = max(30.0, DURATION_S / 10)
    warm = next((mb for t, mb in out["rss_samples"] if t >= warm_at), out["rss_start_mb"])
    growth = (out["rss_end_mb"] - warm) / warm * 100
    print(
        f"\nfault soak {DURATION_S:g} s: {f.requests} requests, {out['rescued']} rescued by a fallback, "
        f"{f.hung_up} hung up on purpose, {f.faults} fault changes, {f.failed} failed; RSS "
        f"{out['rss_start_mb']:.1f} MB idle, {warm:.1f} MB after {warm_at:g} s of load, {out['rss_end_mb']:.1f} MB "
        f"at the end ({growth:+.1f} % after the warm-up); sockets "
        f"{out['sockets_before']} -> {out['sockets_after']}"
    )
    print("RSS every 10 s (s, MB):", out["rss_samples"])
    check(out)
    assert growth < 10, growth
