"""The fault soak's one-minute version in ``make test`` (#19 point 3; ``make soak`` runs 10
minutes and checks memory too): zero failed requests while a healthy model remains, nothing
left behind.  No RSS check here (contracts: test time)."""

from __future__ import annotations

import os
from pathlib import Path

from modelyard.testing import FakeServer
from tests.faultsoak import check, run

DURATION_S = float(os.environ.get("MODELYARD_FAULT_SOAK_SHORT_S", "60"))


def test_a_minute_of_faults_loses_no_request_and_leaks_nothing(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    out = run(fakes, tmp_path, DURATION_S, workers=6)
    f = out["figures"]
    print(
        f"fault soak {DURATION_S:g} s: {f.requests} requests, {out['rescued']} rescued by a fallback, "
        f"{f.hung_up} hung up, {f.faults} faults, {f.failed} failed"
    )
    check(out)
