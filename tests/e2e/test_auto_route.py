"""``strategy: auto`` end to end (#17 point 4): a real gateway in front of the fakes classifies each
prompt, sends it to the tier its complexity calls for, escalates on a validator's rejection or a
judge's low score, stays within a route's ``max_cost_usd``, and says what it chose in headers and
usage records.  The tier ceilings are set around the shipped classifier's own figures for two
prompts, so the tests hold whatever the weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modelyard.classify.model import Classifier
from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.e2e.front_ends import usage_rows, wait_rows
from tests.helpers import ServerProcess, wait_for

_CLF = Classifier.load()
#: two prompts, the one the shipped classifier rates simpler first (EASY), whatever the weights
EASY, HARD = sorted(
    ("What is the capital of France?", "Write a function to find the longest palindromic substring of a string."),
    key=lambda p: _CLF.classify(p).complexity,
)


@pytest.fixture(scope="module")
def ceiling() -> float:
    """A cheap-tier ceiling between the two prompts' complexities."""
    easy, hard = _CLF.classify(EASY).complexity, _CLF.classify(HARD).complexity
    assert easy < hard, (easy, hard)
    return round((easy + hard) / 2, 4)


def tiers(ceiling: float) -> list[dict[str, Any]]:
    return [
        {"name": "cheap", "models": ["gpt-mini"], "max_complexity": ceiling},
        {"name": "strong", "models": ["gpt"]},
    ]


@pytest.fixture(scope="module")
def srv(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory, ceiling: float
) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes)
    cfg["models"]["judge"] = {
        "provider": "openai",
        "model": "judge-model",
        "input_cost_per_mtok": 1.0,
        "output_cost_per_mtok": 2.0,
    }
    cfg["routes"]["smart"] = {"strategy": "auto", "auto": {"tiers": tiers(ceiling)}}
    cfg["routes"]["checked"] = {
        "strategy": "auto",
        "auto": {"tiers": tiers(ceiling)},
        "validators": ["regex:^gpt-4o says"],
    }
    cfg["routes"]["judged"] = {
        "strategy": "auto",
        "auto": {"tiers": tiers(ceiling), "judge": {"model": "judge", "threshold": 0.6, "rubric": "Is it right?"}},
    }
    cfg["routes"]["thrifty"] = {"strategy": "auto", "auto": {"tiers": tiers(ceiling)}, "max_cost_usd": 0.00005}
    cfg["default_route"] = "smart"
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("auto"))
    try:
        yield proc
    finally:
        proc.stop()


def row_of(srv: ServerProcess, resp: httpx.Response, route: str) -> dict[str, Any]:
    """The usage record of the request ``resp`` answered (waiting for the batch writer)."""
    rid = resp.headers["x-request-id"]
    found: list[dict[str, Any]] = []
    assert wait_for(
        lambda: bool(
            found.extend(r for r in usage_rows(srv.workdir / "modelyard.db", route) if r["request_id"] == rid) or found
        )
    )
    return found[0]


def chat(srv: ServerProcess, route: str | None, text: str, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], "max_tokens": 10, **extra}
    if route is not None:
        body["model"] = route
    return httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=30)


def test_easy_prompts_go_to_the_cheap_tier_and_hard_ones_to_the_strong(srv: ServerProcess) -> None:
    easy = chat(srv, "smart", EASY)
    assert easy.status_code == 200, easy.text
    assert easy.headers["x-modelyard-tier"] == "cheap" and easy.headers["x-modelyard-model"] == "gpt-mini"
    assert easy.headers["x-modelyard-task"] == _CLF.classify(EASY).task
    assert float(easy.headers["x-modelyard-complexity"]) == _CLF.classify(EASY).complexity
    assert easy.headers["x-modelyard-tier-reason"].startswith("complexity ")
    hard = chat(srv, "smart", HARD)
    assert hard.headers["x-modelyard-tier"] == "strong" and hard.headers["x-modelyard-model"] == "gpt"
    assert hard.headers["x-modelyard-task"] == _CLF.classify(HARD).task
    rows = wait_rows(srv.workdir / "modelyard.db", "smart", 2)
    assert [(r["tier"], r["model"]) for r in rows] == [("cheap", "gpt-mini"), ("strong", "gpt")]
    assert rows[0]["complexity"] == pytest.approx(float(easy.headers["x-modelyard-complexity"]))
    assert rows[1]["tier_reason"].startswith("complexity ") and rows[1]["judge_score"] is None


def test_a_request_without_a_model_goes_to_the_default_route(srv: ServerProcess) -> None:
    resp = chat(srv, None, EASY)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-modelyard-route"] == "smart" and resp.headers["x-modelyard-tier"] == "cheap"


def test_streams_are_routed_by_tier_too(srv: ServerProcess) -> None:
    with httpx.stream(
        "POST",
        srv.url + "/v1/chat/completions",
        json={"model": "smart", "stream": True, "messages": [{"role": "user", "content": HARD}]},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-modelyard-tier"] == "strong" and resp.headers["x-modelyard-model"] == "gpt"
        body = "".join(resp.iter_text())
    assert body.rstrip().endswith("[DONE]")
    frames = [orjson.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    text = "".join(c["delta"].get("content") or "" for f in frames for c in f["choices"])
    assert text.startswith("gpt-4o says")


def test_a_validator_rejection_escalates_to_the_next_tier(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    resp = chat(srv, "checked", EASY)
    assert resp.status_code == 200, resp.text
    # chosen: cheap; its answer ("gpt-4o-mini says ...") fails the validator; the strong tier answers
    assert resp.headers["x-modelyard-tier"] == "cheap"
    assert resp.headers["x-modelyard-model"] == "gpt" and resp.headers["x-modelyard-attempts"] == "2"
    assert resp.json()["choices"][0]["message"]["content"].startswith("gpt-4o says")
    assert fakes["openai"].attempts("gpt-4o-mini") == 1 and fakes["openai"].attempts("gpt-4o") == 1


def test_a_low_judge_score_escalates_and_its_cost_is_the_requests(
    srv: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["openai"].script("judge-model", "0.2")
    resp = chat(srv, "judged", EASY)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-modelyard-model"] == "gpt" and resp.headers["x-modelyard-attempts"] == "2"
    # the strong tier is the top: its answer is not judged again
    assert fakes["openai"].attempts("judge-model") == 1
    judge_req = next(r for r in fakes["openai"].requests if r.get("model") == "judge-model")
    prompt = judge_req["body"]["messages"][-1]["content"]
    assert "Is it right?" in prompt and EASY in prompt and "gpt-4o-mini says" in prompt
    row = row_of(srv, resp, "judged")
    assert row["judge_score"] == pytest.approx(0.2) and row["judge_cost_usd"] > 0
    assert float(resp.headers["x-modelyard-cost-usd"]) == pytest.approx(row["cost_usd"], rel=1e-6)
    assert row["cost_usd"] > row["judge_cost_usd"]


def test_a_good_judge_score_keeps_the_cheap_answer(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].script("judge-model", "Score: 9/10")
    resp = chat(srv, "judged", EASY)
    assert resp.headers["x-modelyard-model"] == "gpt-mini" and resp.headers["x-modelyard-attempts"] == "1"
    assert row_of(srv, resp, "judged")["judge_score"] == pytest.approx(0.9)


def test_a_judge_that_answers_nonsense_lets_the_answer_through_and_says_so(
    srv: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["openai"].script("judge-model", "banana")
    resp = chat(srv, "judged", EASY)
    assert resp.status_code == 200 and resp.headers["x-modelyard-model"] == "gpt-mini"
    assert "judge answered no score in 0..1: answer kept" in resp.headers["x-modelyard-tier-reason"]
    fakes["openai"].clear_faults()
    fakes["openai"].inject("judge-model", status=500, times=5)
    down = chat(srv, "judged", EASY)
    assert down.status_code == 200 and down.headers["x-modelyard-model"] == "gpt-mini"
    assert "judge unavailable" in down.headers["x-modelyard-tier-reason"]
    assert row_of(srv, resp, "judged")["judge_score"] is None
    row = row_of(srv, down, "judged")
    assert row["judge_score"] is None and "judge unavailable" in row["tier_reason"]


def test_a_route_budget_picks_the_best_tier_that_fits(srv: ServerProcess) -> None:
    resp = chat(srv, "thrifty", HARD)  # strong (gpt-4o) would cost more than max_cost_usd
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-modelyard-tier"] == "cheap" and resp.headers["x-modelyard-model"] == "gpt-mini"
    assert "tier strong does not fit max_cost_usd 5e-05" in resp.headers["x-modelyard-tier-reason"]
    # the route's max_cost_usd is a default: a request may set its own
    roomy = chat(srv, "thrifty", HARD, modelyard={"max_cost_usd": 1.0})
    assert roomy.headers["x-modelyard-tier"] == "strong"
    # nothing fits: 402 in the caller's API shape
    tight = chat(srv, "thrifty", HARD, modelyard={"max_cost_usd": 0.00000001})
    assert tight.status_code == 402 and tight.json()["error"]["code"] == "max_cost_exceeded"


def test_other_routes_carry_no_tier(srv: ServerProcess) -> None:
    resp = chat(srv, "main", EASY)
    assert resp.status_code == 200 and "x-modelyard-tier" not in resp.headers


def test_the_route_max_cost_default_applies_to_every_strategy(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    cfg = gateway_config(fakes)
    cfg["routes"]["main"]["max_cost_usd"] = 0.00000001
    proc = ServerProcess(cfg, tmp_path)
    try:
        resp = chat(proc, "main", EASY)
        assert resp.status_code == 402 and resp.json()["error"]["code"] == "max_cost_exceeded"
    finally:
        proc.stop()


def test_quality_shows_in_status_and_stats(srv: ServerProcess) -> None:
    """#17 point 5: validator rejections and judge scores count in a model's quality figures."""
    status = httpx.get(srv.url + "/v1/status", timeout=10).json()
    quality = status["models"]["gpt-mini"]["quality"]
    # rejected by the validator (checked route) and by the judge's 0.2; judged 0.2, 0.9 and more
    assert quality["rejected"] >= 2 and quality["judged"] >= 2 and quality["judge_score_avg"] is not None
    assert status["models"]["gpt"]["quality"]["judged"] == 0  # the top tier is never judged
    stats = httpx.get(srv.url + "/v1/stats", params={"group_by": "route"}, timeout=10).json()
    judged = next(r for r in stats["data"] if r["key"] == "judged")
    assert judged["judged"] >= 2 and 0 < judged["judge_score_avg"] < 1
    failed = httpx.get(srv.url + "/v1/stats", params={"group_by": "failed_model"}, timeout=10).json()
    mini = next(r for r in failed["data"] if r["key"] == "gpt-mini")
    assert mini["error_classes"]["validation"] >= 2
