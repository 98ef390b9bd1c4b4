"""``POST /v1/estimate`` has no side effect on routing (issue #13, part 5).

Before: every estimate advanced the route's round-robin rotation, so asking for an estimate
changed which model the next real request went to.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from modelyard.routing.strategies import RoundRobin, Weighted
from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes)
    cfg["routes"]["rr"] = {"models": ["gpt", "claude", "gem"], "strategy": "round_robin"}
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("estimate"))
    try:
        yield proc
    finally:
        proc.stop()


def body() -> dict[str, object]:
    return {"model": "rr", "messages": [{"role": "user", "content": "hi"}]}


def answered_by(srv: ServerProcess) -> str:
    resp = httpx.post(srv.url + "/v1/chat/completions", json=body(), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-modelyard-model"]


def test_estimates_do_not_move_the_rotation(srv: ServerProcess) -> None:
    first = answered_by(srv)
    expected_next = {"gpt": "claude", "claude": "gem", "gem": "gpt"}[first]
    for _ in range(4):
        est = httpx.post(srv.url + "/v1/estimate", json=body(), timeout=10)
        assert est.status_code == 200, est.text
        # the estimate shows the order the next request will get
        assert est.json()["candidates"][0]["model"] == expected_next
    assert answered_by(srv) == expected_next


class _C:
    def __init__(self, name: str, weight: float = 1.0) -> None:
        self.name = name
        self.weight = weight


def test_previews_change_no_strategy_state() -> None:
    pool = [_C("a"), _C("b"), _C("c")]
    rr = RoundRobin()
    assert [c.name for c in rr.preview(pool)] == ["a", "b", "c"]
    assert [c.name for c in rr.preview(pool)] == ["a", "b", "c"]
    assert [c.name for c in rr.order(pool)] == ["a", "b", "c"]
    assert [c.name for c in rr.preview(pool)] == ["b", "c", "a"]
    seeded, control = Weighted(seed=7), Weighted(seed=7)
    weighted = [_C("x", 1.0), _C("y", 5.0), _C("z", 0.0)]
    assert [c.name for c in seeded.preview(weighted)] == ["y", "x", "z"]
    assert [c.name for c in seeded.order(weighted)] == [c.name for c in control.order(weighted)]
