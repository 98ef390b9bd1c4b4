"""The HTTP server and the in-process SDK agree (issue #10, item 2): one suite, both front ends.

Every test runs twice: ``http`` (a real ``modelyard serve``, called with the official ``openai``
SDK) and ``sdk`` (``modelyard.Gateway`` in-process with the same config). The adapters are in
``front_ends.py``. The three SDK divergences of issue #10 are here: budgets, ``max_cost_usd``,
usage records and the cache (``test_budget_*``, ``test_max_cost_*``, ``test_usage_*``,
``test_cache_*``); the route option and the ``default`` alias (``test_route_*``); a reload with a
call in flight (``test_reload_*``); a call given up mid-flight costs its budget what its usage
record says (``test_given_up_*``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modelyard.testing import FakeServer, Fault
from tests.e2e.conftest import gateway_config
from tests.e2e.front_ends import MASTER, Front, attempt_rows, start, usage_rows, wait_rows
from tests.helpers import wait_for

FRONTS = ("http", "sdk")


def parity_config(fakes: dict[str, FakeServer]) -> dict[str, Any]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["models"]["gpt"].update(input_cost_per_mtok=1000.0, output_cost_per_mtok=2000.0)
    cfg["models"]["gpt-mini"].update(input_cost_per_mtok=10.0, output_cost_per_mtok=20.0)
    cfg["routes"].update(
        {
            "cached": {"models": ["gpt-mini"], "cache_ttl_s": 60},
            "tiny": {"models": ["gpt"]},
            "records": {"models": ["gpt-mini"]},
            "early": {"models": ["gpt-mini"]},
            "tasks": {"models": ["gpt"], "tasks": {"cheap": "records"}},
            # each under a budget of its own name (given_up_* tests)
            "gone": {"models": ["gpt"]},
            "gone-failover": {"models": ["gpt"], "fallbacks": ["gpt-mini"]},
            "late": {"models": ["gpt"]},
            "gone-stream": {"models": ["gpt"]},
            # the validator passes gpt-mini's answers only ("gpt-4o-mini says: ..."), not gpt's
            "rejected": {"models": ["gpt"], "fallbacks": ["gpt-mini"], "validators": ["regex:gpt-4o-mini"]},
            "rejected-stream": {"models": ["gpt"], "fallbacks": ["gpt-mini"], "validators": ["regex:gpt-4o-mini"]},
        }
    )
    cfg["budgets"] = [{"name": "tiny", "scope": "route", "target": "tiny", "limit_usd": 1e-9, "period": "total"}]
    cfg["budgets"] += [
        {"name": name, "scope": "route", "target": name, "limit_usd": 1000, "period": "total"}
        for name in ("gone", "gone-failover", "late", "gone-stream", "rejected", "rejected-stream")
    ]
    cfg["usage"] = {"flush_interval_ms": 50}
    # the failover tests inject faults: keep the circuits closed so the order of tests does not matter
    for model in cfg["models"].values():
        model["breaker"] = {"failure_threshold": 1000, "min_requests": 1000}
    return cfg


@pytest.fixture(scope="module", params=FRONTS)
def front(
    request: pytest.FixtureRequest, fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Front]:
    f = start(request.param, parity_config(fakes), tmp_path_factory.mktemp(f"front-{request.param}"))
    try:
        yield f
    finally:
        f.close()


def ask(text: str = "hello", **body: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **body}


def unique(tag: str) -> str:
    return f"{tag}-{time.time_ns()}"


def upstream_calls(fake: FakeServer, text: str) -> int:
    return sum(1 for r in fake.requests if text in str(r.get("body", "")))


# -- routing -----------------------------------------------------------------------------------


def test_route_by_name(front: Front) -> None:
    out = front.chat(ask(model="main"))
    assert (out.status, out.model, out.fallback) == (200, "gpt", False)


def test_route_default_alias(front: Front) -> None:
    out = front.chat(ask(model="default"))
    assert (out.status, out.model) == (200, "gpt")


def test_route_option_overrides_the_model(front: Front) -> None:
    out = front.chat(ask(model="gpt", modelyard={"route": "cached"}))
    assert (out.status, out.model) == (200, "gpt-mini")


def test_route_provider_model(front: Front) -> None:
    out = front.chat(ask(model="anthropic:claude-sonnet-4-5"))
    assert out.status == 200 and out.model is not None and "claude-sonnet-4-5" in out.model


def test_route_task(front: Front) -> None:
    out = front.chat(ask(model="tasks", modelyard={"task": "cheap"}))
    assert (out.status, out.model) == (200, "gpt-mini")


def test_route_unknown_is_404(front: Front) -> None:
    out = front.chat(ask(model="no-such-route"))
    assert out.status == 404


# -- failover and options ------------------------------------------------------------------------


def test_failover_to_the_fallback(front: Front, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", Fault(status=500))
    out = front.chat(ask(model="main"))
    assert (out.status, out.model, out.fallback) == (200, "gpt-mini", True)
    assert out.attempts >= 2  # a retry on gpt (500 is retryable), then the fallback


def test_fallback_off_by_option(front: Front, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", Fault(status=500))
    out = front.chat(ask(model="main", modelyard={"fallback": False, "max_attempts": 1}))
    assert out.status == 502


def test_timeout_option_is_the_deadline(front: Front, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", Fault(delay_s=3))
    out = front.chat(ask(model="main", modelyard={"timeout_s": 1}))
    assert out.status == 504  # the whole request's deadline: no time is left for a fallback


def test_a_generous_timeout_lets_the_fallback_answer(front: Front, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", Fault(status=503))
    out = front.chat(ask(model="main", modelyard={"timeout_s": 20}))
    assert out.status == 200 and out.fallback


# -- money ---------------------------------------------------------------------------------------


def test_budget_refuses(front: Front) -> None:
    out = front.chat(ask(model="tiny"))
    assert (out.status, out.code) == (429, "budget_exceeded")


def test_max_cost_refuses(front: Front) -> None:
    out = front.chat(ask(model="main", modelyard={"max_cost_usd": 1e-9}))
    assert (out.status, out.code) == (402, "max_cost_exceeded")


def test_cache_serves_a_repeat(front: Front, fakes: dict[str, FakeServer]) -> None:
    text = unique("cache")
    first = front.chat(ask(text, model="cached"))
    second = front.chat(ask(text, model="cached"))
    assert first.status == second.status == 200 and first.content == second.content
    assert upstream_calls(fakes["openai"], text) == 1


def test_usage_records_are_written(front: Front) -> None:
    db = front.workdir / "modelyard.db"
    before = len(usage_rows(db, "records"))
    assert front.chat(ask(model="records")).status == 200
    row = wait_rows(db, "records", before + 1)[-1]
    assert row["model"] == "gpt-mini" and row["success"] and row["tokens_in"] > 0 and row["tokens_out"] > 0
    assert row["cost_usd"] > 0 and row["error_class"] is None


def spent_as_recorded(front: Front, route: str, count: int) -> tuple[float, list[dict[str, Any]]]:
    """The budget of ``route`` (a budget of the same name) once settled, and the route's usage
    records: the budget's spend must be what the records say the requests cost."""
    rows = wait_rows(front.workdir / "modelyard.db", route, count)
    assert wait_for(lambda: front.budget(route)[1] == 0, timeout=10), f"still reserved: {front.budget(route)}"
    used = front.budget(route)[0]
    assert used > 0, "nothing was charged for a request the upstream was working on"
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(used), (used, rows)
    return used, rows


def test_given_up_mid_flight_costs_what_its_record_says(front: Front, fakes: dict[str, FakeServer]) -> None:
    # the client hangs up (HTTP) or the call is cancelled (SDK) while the upstream works on it: the
    # budget is charged the input estimate, and the usage record and its attempt row say the same
    fakes["openai"].inject("gpt-4o", Fault(delay_s=3))
    front.chat_cancelled(ask("x" * 400, model="gone"), after_s=0.5)
    used, rows = spent_as_recorded(front, "gone", 1)
    row = rows[-1]
    assert (row["status"], row["error_class"], row["success"]) == (499, "client_closed", 0)
    assert row["cost_estimated"] and row["tokens_in"] > 0 and row["attempts"] == 1 and row["model"] == "gpt"
    (attempt,) = attempt_rows(front.workdir / "modelyard.db", row["request_id"])
    assert attempt["model"] == "gpt" and not attempt["success"] and attempt["cost_estimated"]
    assert attempt["cost_usd"] == pytest.approx(used) and attempt["tokens_in"] == row["tokens_in"]


def test_given_up_after_a_failover_records_every_attempt(front: Front, fakes: dict[str, FakeServer]) -> None:
    # gpt fails (retried once), the fallback is working when the caller gives up: the failed attempts
    # cost nothing (the upstream refused), the one in flight its input estimate, all three recorded
    fakes["openai"].inject("gpt-4o", Fault(status=500))
    fakes["openai"].inject("gpt-4o-mini", Fault(delay_s=3))
    front.chat_cancelled(ask("y" * 400, model="gone-failover"), after_s=1.0)
    used, rows = spent_as_recorded(front, "gone-failover", 1)
    row = rows[-1]
    assert (row["status"], row["error_class"], row["attempts"]) == (499, "client_closed", 3)
    attempts = attempt_rows(front.workdir / "modelyard.db", row["request_id"])
    assert [(a["model"], a["status"], a["cost_usd"] > 0) for a in attempts] == [
        ("gpt", 500, False),
        ("gpt", 500, False),
        ("gpt-mini", None, True),
    ]
    assert attempts[-1]["cost_usd"] == pytest.approx(used) and attempts[-1]["cost_estimated"]


def test_given_up_by_its_deadline_costs_what_its_record_says(front: Front, fakes: dict[str, FakeServer]) -> None:
    # the request's deadline passes while the upstream works on it (504): charged its input estimate
    fakes["openai"].inject("gpt-4o", Fault(delay_s=3))
    out = front.chat(ask("z" * 400, model="late", modelyard={"timeout_s": 1}))
    assert out.status == 504
    _, rows = spent_as_recorded(front, "late", 1)
    assert rows[-1]["cost_estimated"] and rows[-1]["tokens_in"] > 0


def test_given_up_stream_before_its_first_token_is_recorded(front: Front, fakes: dict[str, FakeServer]) -> None:
    # a stream given up before its first token was sent and the model was working on it: charged
    # its input estimate as a non-streamed call is, and its record says so, with the attempt in flight
    fakes["openai"].inject("gpt-4o", Fault(first_token_delay_s=3))
    front.chat_cancelled(ask("w" * 400, model="gone-stream", stream=True), after_s=0.5)
    used, rows = spent_as_recorded(front, "gone-stream", 1)
    row = rows[-1]
    assert (row["status"], row["error_class"], row["attempts"]) == (499, "client_closed", 1)
    assert row["cost_estimated"] and row["tokens_in"] > 0 and row["tokens_out"] == 0
    (attempt,) = attempt_rows(front.workdir / "modelyard.db", row["request_id"])
    assert (attempt["model"], attempt["error_class"]) == ("gpt", "client_closed")
    assert attempt["cost_usd"] == pytest.approx(used) and attempt["cost_estimated"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_rejected_answer_costs_what_the_upstream_billed(front: Front, stream: bool) -> None:
    # an output validator rejects gpt's answer and the fallback's passes: the provider billed both,
    # so the budget and the record carry both, the rejected one at the upstream's own usage
    route = "rejected-stream" if stream else "rejected"
    db = front.workdir / "modelyard.db"
    before = len(usage_rows(db, route))
    out = front.stream(ask(model=route)) if stream else front.chat(ask(model=route))
    assert (out.status, out.model) == (200, "gpt-mini")
    used, rows = spent_as_recorded(front, route, before + 1)
    attempts = attempt_rows(db, rows[-1]["request_id"])
    assert [(a["model"], bool(a["success"]), a["error_class"]) for a in attempts] == [
        ("gpt", False, "validation"),
        ("gpt-mini", True, None),
    ]
    rejected = attempts[0]
    assert rejected["tokens_out"] > 0 and rejected["cost_usd"] > 0 and not rejected["cost_estimated"]
    assert rows[-1]["cost_usd"] == pytest.approx(rejected["cost_usd"] + attempts[1]["cost_usd"])
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(used)


# -- keys ----------------------------------------------------------------------------------------


def test_key_allowed_models_apply(front: Front) -> None:
    key = front.new_key(allowed_models=["gpt-mini"])
    assert front.chat(ask(model="records"), key=key).status == 200
    refused = front.chat(ask(model="tiny"), key=key)
    assert refused.status == 403


def test_key_rpm_applies(front: Front) -> None:
    key = front.new_key(rpm=1)
    assert front.chat(ask(model="records"), key=key).status == 200
    assert front.chat(ask(model="records"), key=key).status == 429


def test_key_budget_applies(front: Front) -> None:
    key = front.new_key(budget_usd=1e-9)
    out = front.chat(ask(model="main"), key=key)
    assert (out.status, out.code) == (429, "budget_exceeded")


def test_an_unknown_key_is_refused(front: Front) -> None:
    assert front.chat(ask(model="main"), key="my-not-a-real-key").status == 401


# -- streams -------------------------------------------------------------------------------------


def test_stream(front: Front) -> None:
    out = front.stream(ask(model="main"))
    assert out.status == 200 and out.model == "gpt" and out.content


def test_stream_fails_over_before_the_first_token(front: Front, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", Fault(status=503))
    out = front.stream(ask(model="main"))
    assert out.status == 200 and out.model == "gpt-mini" and out.fallback


def test_stream_budget_refuses(front: Front) -> None:
    out = front.stream(ask(model="tiny"))
    assert (out.status, out.code) == (429, "budget_exceeded")


def test_leaving_a_stream_early_records_it_and_frees_the_key(front: Front, fakes: dict[str, FakeServer]) -> None:
    db = front.workdir / "modelyard.db"
    before = len(usage_rows(db, "early"))
    key = front.new_key(tpm=1_000_000)
    fakes["openai"].inject("gpt-4o-mini", Fault(stall_after=2, stall_s=30))  # the rest would never come
    out = front.stream(ask("tell me a long story", model="early", max_tokens=200), key=key, stop_after=1)
    assert out.status == 200 and out.content
    rows = wait_rows(db, "early", before + 1)
    assert len(rows) == before + 1
    fakes["openai"].clear_faults()
    # the key and the model are free again: a call with the same key is served at once
    assert front.chat(ask(model="early"), key=key).status == 200


# -- reload --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FRONTS)
def test_reload_lets_a_call_in_flight_finish_on_the_old_config(
    kind: str, fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory
) -> None:
    cfg = parity_config(fakes)
    front = start(kind, cfg, tmp_path_factory.mktemp(f"reload-{kind}"))
    try:
        # the call in flight fails on gpt after the reload and fails over to gpt-mini: both live on
        # the openai provider, which the new config removes (the SDK of wave2-base failed over onto
        # the closed provider)
        fakes["openai"].inject("gpt-4o", Fault(delay_s=1.5, status=500))
        text = unique("inflight")
        new = copy.deepcopy(cfg)
        del new["providers"]["openai"]
        for name in ("gpt", "gpt-mini", "emb"):
            del new["models"][name]
        new["routes"] = {name: {"models": ["claude"]} for name in cfg["routes"]}
        new["budgets"] = []
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(front.chat, ask(text, model="main"))
            deadline = time.monotonic() + 5
            while upstream_calls(fakes["openai"], text) == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            front.reload(new)
            out = pending.result(timeout=30)
        assert (out.status, out.model, out.fallback) == (200, "gpt-mini", True), out
        after = front.chat(ask(model="main"))
        assert (after.status, after.model) == (200, "claude")
    finally:
        front.close()
