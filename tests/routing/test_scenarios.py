"""Failover scenarios through the fake providers over real HTTP, with the in-process engine.

Each test states one rule of docs/routing.md and checks it by counting what the fakes received.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelyard import Gateway, StreamResult
from modelyard.errors import AllAttemptsFailedError, ModelyardError, RateLimitError
from modelyard.testing import FakeAnthropic, FakeOpenAI

MSG = [{"role": "user", "content": "one two three four five six"}]


@pytest.fixture
async def oa() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def oa2() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def config(
    oa: FakeOpenAI,
    *,
    models: dict[str, dict[str, Any]] | None = None,
    route: dict[str, Any] | None = None,
    extra_providers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    models = models or {
        "a": {"provider": "p", "model": "model-a"},
        "b": {"provider": "p", "model": "model-b"},
        "c": {"provider": "p", "model": "model-c"},
    }
    return {
        "providers": {
            "p": {"kind": "openai", "base_url": oa.base_url, "api_key": "sk-test", "health_check_interval_s": 0},
            **(extra_providers or {}),
        },
        "models": models,
        "routes": {"r": {"models": ["a"], "fallbacks": ["b", "c"], **(route or {})}},
        "default_route": "r",
    }


@pytest.fixture
async def make_gw() -> AsyncIterator[Any]:
    made: list[Gateway] = []

    def make(cfg: dict[str, Any]) -> Gateway:
        gw = Gateway.from_config(cfg, database=None)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.aclose()


async def test_429_retry_after_is_honoured_without_hammering(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"timeout_s": 10}))
    oa.inject("model-a", status=429, retry_after="1", times=1)
    start = time.monotonic()
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "a" and not res.is_fallback
    assert time.monotonic() - start >= 0.95  # it waited as told
    assert oa.attempts("model-a") == 2
    assert [a.ok for a in res.attempts] == [False, True]


async def test_retry_after_http_date(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"timeout_s": 10}))
    oa.inject("model-a", status=429, retry_after=email.utils.formatdate(time.time() + 1, usegmt=True), times=1)
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "a" and oa.attempts("model-a") == 2


async def test_retry_after_beyond_deadline_fails_over_at_once(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"timeout_s": 3}))
    oa.inject("model-a", status=429, retry_after="60")
    start = time.monotonic()
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "b" and res.is_fallback
    assert time.monotonic() - start < 1.0
    assert oa.attempts("model-a") == 1


async def test_persistent_429_and_503_are_bounded_with_backoff(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"max_attempts": 5, "retries": 1}))
    oa.inject("*", status=503)
    start = time.monotonic()
    with pytest.raises(AllAttemptsFailedError) as info:
        await gw.chat(MSG, raise_on_error=True)
    assert oa.attempts() == 5  # max_attempts, never a tight loop
    assert info.value.status == 503
    assert time.monotonic() - start >= 0.1  # exponential backoff between same-model retries
    models = [a["model"] for a in info.value.attempts]
    assert models == ["a", "a", "b", "b", "c"]


async def test_reset_before_headers_retries_then_fails_over(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa))
    oa.inject("model-a", reset=True)
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "b"
    assert oa.attempts("model-a") == 2  # one same-model retry (retries: 1)
    assert res.attempts[0].error_class == "connection"


async def test_silent_upstream_is_bounded_and_not_retried(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "timeout_s": 0.3},
        "b": {"provider": "p", "model": "model-b"},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models))
    oa.inject("model-a", hang=True)
    start = time.monotonic()
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "b"
    assert time.monotonic() - start < 2
    assert oa.attempts("model-a") == 1
    assert res.attempts[0].error_class == "timeout_total"


async def test_slow_first_token_fails_over(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "ttft_timeout_s": 0.3},
        "b": {"provider": "p", "model": "model-b"},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models))
    oa.inject("model-a", first_token_delay_s=3)
    out = StreamResult()
    start = time.monotonic()
    text = "".join([d async for d in gw.stream(MSG, into=out)])
    assert time.monotonic() - start < 2
    assert out.result is not None and out.result.model_used == "b" and out.result.is_fallback
    assert text == "model-b says: one two three four five six"
    assert out.result.attempts[0].error_class == "timeout_ttft"


async def test_stream_cut_mid_answer_continues_on_prefill_model(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a"},
        "b": {"provider": "p", "model": "model-b", "supports_prefill": True},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models))
    oa.inject("model-a", cut_after=4)  # role chunk + 3 words, then the connection drops
    out = StreamResult()
    text = "".join([d async for d in gw.stream(MSG, into=out)])
    assert text == "model-a says: one (continued by model-b)"
    sent = oa.requests[-1]["body"]["messages"]
    assert sent[-1] == {"role": "assistant", "content": "model-a says: one"}  # the partial answer as prefill
    assert out.result is not None
    assert [(a.model, a.ok) for a in out.result.attempts] == [("a", False), ("b", True)]


async def test_stream_cut_without_prefill_model_raises_original(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa))
    oa.inject("model-a", cut_after=4)
    got: list[str] = []
    with pytest.raises(ModelyardError) as info:
        async for d in gw.stream(MSG):
            got.append(d)
    assert got  # content had started: never a silent truncated success
    assert "cut off" in info.value.message or "connection" in info.value.message


async def test_rejected_continuation_surfaces_the_original_failure(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a"},
        "b": {"provider": "p", "model": "model-b", "supports_prefill": True},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models))
    oa.inject("model-a", cut_after=4)
    oa.inject("model-b", status=400, message="assistant prefill not supported")
    with pytest.raises(ModelyardError) as info:
        async for _ in gw.stream(MSG):
            pass
    assert "prefill" not in info.value.message  # the client sees why the stream broke, not the rejection
    assert oa.attempts("model-b") == 1


async def test_stream_stall_is_bounded(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "stall_timeout_s": 0.3},
        "b": {"provider": "p", "model": "model-b"},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models))
    oa.inject("model-a", stall_after=3, stall_s=10)
    start = time.monotonic()
    with pytest.raises(ModelyardError) as info:
        async for _ in gw.stream(MSG):
            pass
    assert time.monotonic() - start < 3
    assert "stalled" in info.value.message


async def test_malformed_chunk_before_content_fails_over(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa))
    oa.inject("model-a", malformed_after=0)
    out = StreamResult()
    text = "".join([d async for d in gw.stream(MSG, into=out)])
    assert text.startswith("model-b says")
    assert out.result is not None and out.result.attempts[0].error_class == "malformed"


async def test_missing_done_is_finalised_promptly_with_usage(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa))
    oa.inject("model-a", no_done=True)
    out = StreamResult()
    start = time.monotonic()
    text = "".join([d async for d in gw.stream(MSG, into=out, stream_options={"include_usage": True})])
    assert time.monotonic() - start < 1
    assert text == "model-a says: one two three four five six"
    assert out.result is not None and out.result.usage is not None and out.result.usage.completion_tokens == 8


async def test_context_length_goes_to_a_larger_model(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "context_window": 4096},
        "b": {"provider": "p", "model": "model-b", "context_window": 2048},
        "c": {"provider": "p", "model": "model-c", "context_window": 128000},
    }
    gw = make_gw(config(oa, models=models))
    oa.inject("model-a", status=400, code="context_length_exceeded")
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "c"
    assert oa.attempts("model-a") == 1 and oa.attempts("model-b") == 0


async def test_context_length_with_no_larger_model_is_a_clean_400(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "context_window": 4096},
        "b": {"provider": "p", "model": "model-b", "context_window": 4096},
        "c": {"provider": "p", "model": "model-c", "context_window": 2048},
    }
    gw = make_gw(config(oa, models=models))
    oa.inject("model-a", status=400, code="context_length_exceeded")
    with pytest.raises(ModelyardError) as info:
        await gw.chat(MSG, raise_on_error=True)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert oa.attempts() == 1


async def test_content_filter_is_returned_with_reason_and_not_retried(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa))
    oa.inject("model-a", status=400, code="content_policy_violation", message="flagged: violence")
    with pytest.raises(ModelyardError) as info:
        await gw.chat(MSG, raise_on_error=True)
    assert info.value.status == 400 and info.value.code == "content_policy_violation"
    assert "flagged: violence" in info.value.message
    assert oa.attempts() == 1


async def test_flapping_primary_opens_breaker_and_traffic_returns(oa: FakeOpenAI, make_gw: Any) -> None:
    breaker = {"failure_threshold": 3, "cooldown_s": 0.5}
    models = {
        "a": {"provider": "p", "model": "model-a", "breaker": breaker},
        "b": {"provider": "p", "model": "model-b"},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models, route={"retries": 0}))
    oa.inject("model-a", status=500)
    for _ in range(3):
        assert (await gw.chat(MSG, raise_on_error=True)).model_used == "b"
    assert gw.runtime.models["a"].state.breaker.state == "open"
    before = oa.attempts("model-a")
    for _ in range(5):
        assert (await gw.chat(MSG, raise_on_error=True)).model_used == "b"
    assert oa.attempts("model-a") == before  # skipped while open: no hammering
    oa.clear_faults()
    await asyncio.sleep(0.6)
    res = await gw.chat(MSG, raise_on_error=True)  # half-open probe succeeds
    assert res.model_used == "a"
    assert gw.runtime.models["a"].state.breaker.state == "closed"


async def test_failover_accounting_names_and_bills_the_answering_model(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "input_cost_per_mtok": 100, "output_cost_per_mtok": 100},
        "b": {"provider": "p", "model": "model-b", "input_cost_per_mtok": 1, "output_cost_per_mtok": 2},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models, route={"retries": 0}))
    oa.inject("model-a", status=500)
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "b" and res.is_fallback
    assert res.response is not None and res.usage is not None
    assert res.attempts[0].usage is None and not res.attempts[0].ok  # the failure is not billed
    assert res.attempts[1].usage == res.usage
    expected = (res.usage.prompt_tokens * 1 + res.usage.completion_tokens * 2) / 1e6
    assert res.cost_usd == pytest.approx(expected)


async def test_full_model_uses_another_free_model_before_queueing(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "max_concurrency": 1, "max_queue": 0},
        "b": {"provider": "p", "model": "model-b", "max_concurrency": 1, "max_queue": 1, "queue_timeout_s": 5},
        "c": {"provider": "p", "model": "model-c"},
    }
    gw = make_gw(config(oa, models=models, route={"models": ["a", "b"], "fallbacks": [], "strategy": "priority"}))
    oa.inject("*", delay_s=0.3)
    results = await asyncio.gather(*(gw.chat(MSG) for _ in range(3)))
    used = sorted(r.model_used or "" for r in results)
    assert used == ["a", "b", "b"]  # a busy, b free, then b's queue
    oa.clear_faults()
    oa.inject("*", delay_s=0.5)
    results = await asyncio.gather(*(gw.chat(MSG) for _ in range(4)))
    errors = [r.error for r in results if r.error]
    assert len(errors) == 1 and "queue" in errors[0]


async def test_queue_full_is_429_with_retry_after(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {"a": {"provider": "p", "model": "model-a", "max_concurrency": 1, "max_queue": 0}}
    gw = make_gw({**config(oa, models=models), "routes": {"r": {"models": ["a"]}}})
    oa.inject("*", delay_s=0.3)
    results = await asyncio.gather(*(gw.chat(MSG, raise_on_error=False) for _ in range(2)), return_exceptions=True)
    assert sum(1 for r in results if getattr(r, "error", None)) == 1
    both = await asyncio.gather(
        gw.chat(MSG, raise_on_error=True), gw.chat(MSG, raise_on_error=True), return_exceptions=True
    )
    errors = [r for r in both if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], RateLimitError)
    assert errors[0].status == 429 and "Retry-After" in errors[0].headers()


async def test_rpm_limit(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {"a": {"provider": "p", "model": "model-a", "rpm": 2, "queue_timeout_s": 0.2}}
    gw = make_gw({**config(oa, models=models), "routes": {"r": {"models": ["a"]}}})
    assert (await gw.chat(MSG)).ok and (await gw.chat(MSG)).ok
    res = await gw.chat(MSG)
    assert not res.ok and "rpm" in (res.error or "")
    assert oa.attempts() == 2


async def test_round_robin_spreads_the_pool(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"models": ["a", "b", "c"], "fallbacks": []}))
    for _ in range(9):
        await gw.chat(MSG, raise_on_error=True)
    assert [oa.attempts(m) for m in ("model-a", "model-b", "model-c")] == [3, 3, 3]


async def test_weighted_strategy(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "a": {"provider": "p", "model": "model-a", "weight": 9},
        "b": {"provider": "p", "model": "model-b", "weight": 1},
        "c": {"provider": "p", "model": "model-c", "weight": 0},
    }
    gw = make_gw(config(oa, models=models, route={"models": ["a", "b", "c"], "fallbacks": [], "strategy": "weighted"}))
    # Unseeded draws: 240 calls make "b never drawn" (0.9**240, about 1e-11) and a share of "a"
    # under 75 % (about 8 standard deviations below 90 %) practically impossible.  With 60 calls
    # "b never drawn" was 0.9**60, about 1 in 550 runs, and failed a CI run.
    n = 240
    for _ in range(n):
        await gw.chat(MSG, raise_on_error=True)
    a, b = oa.attempts("model-a"), oa.attempts("model-b")
    assert a + b == n and 0.75 * n < a < n and b > 0 and oa.attempts("model-c") == 0


async def test_no_fallback_option(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"retries": 0}))
    oa.inject("model-a", status=500)
    res = await gw.chat(MSG, modelyard={"fallback": False})
    assert not res.ok and oa.attempts("model-b") == 0


async def test_local_only_never_calls_the_cloud(oa: FakeOpenAI, oa2: FakeOpenAI, make_gw: Any) -> None:
    cfg = config(
        oa,
        extra_providers={
            "home": {"kind": "openai", "base_url": oa2.base_url, "local": True, "health_check_interval_s": 0}
        },
    )
    cfg["models"]["loc"] = {"provider": "home", "model": "local-llm"}
    cfg["routes"]["r"] = {"models": ["loc"], "fallbacks": ["a", "b"], "retries": 0}
    gw = make_gw(cfg)
    oa2.inject("local-llm", status=503)
    res = await gw.chat(MSG, modelyard={"local_only": True})
    assert not res.ok and "local_only was enforced" in (res.error or "")
    assert oa.attempts() == 0  # the cloud fake saw nothing
    res = await gw.chat(MSG)  # without local_only the cloud answers, and says so
    assert res.ok and res.model_used == "a" and res.is_fallback


async def test_local_first_orders_local_models_first(oa: FakeOpenAI, oa2: FakeOpenAI, make_gw: Any) -> None:
    cfg = config(
        oa,
        extra_providers={
            "home": {"kind": "openai", "base_url": oa2.base_url, "local": True, "health_check_interval_s": 0}
        },
    )
    cfg["models"]["loc"] = {"provider": "home", "model": "local-llm"}
    cfg["routes"]["r"] = {"models": ["a", "loc"], "local_first": True, "strategy": "priority"}
    gw = make_gw(cfg)
    assert (await gw.chat(MSG, raise_on_error=True)).model_used == "loc"


async def test_prefer_custom_and_explicit_provider_model(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        "cust": {"provider": "p", "model": "my-finetune", "tags": ["custom"]},
        "gpt": {"provider": "p", "model": "gpt-4o"},
    }
    cfg = {**config(oa, models=models), "routes": {"r": {"models": ["gpt"], "fallbacks": ["cust"], "prefer": "custom"}}}
    gw = make_gw(cfg)
    assert (await gw.chat(MSG, raise_on_error=True)).model_used == "cust"
    res = await gw.chat(MSG, model="p:gpt-4o", raise_on_error=True)  # an explicit provider:model bypasses it
    assert res.model_used == "p:gpt-4o"
    assert oa.requests[-1]["body"]["model"] == "gpt-4o"


async def test_task_picks_the_model(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"tasks": {"mermaid": "c", "code": "b"}}))
    assert (await gw.chat(MSG, modelyard={"task": "mermaid"}, raise_on_error=True)).model_used == "c"
    assert (await gw.chat(MSG, modelyard={"task": "code"}, raise_on_error=True)).model_used == "b"
    with pytest.raises(ModelyardError) as info:
        await gw.chat(MSG, modelyard={"task": "poetry"}, raise_on_error=True)
    assert info.value.status == 400


async def test_every_answer_failing_validation_is_a_502_listing_them(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"validators": ["json"]}))
    with pytest.raises(AllAttemptsFailedError) as info:
        await gw.chat(MSG, raise_on_error=True)  # plain text from every model: all fail validation
    assert info.value.status == 502
    assert [a["error"] for a in info.value.attempts] == ["validation"] * 3
    assert oa.attempts() == 3  # a bad answer is not retried on the same model
    res = await gw.chat(MSG, response_format={"type": "json_object"}, raise_on_error=True)
    assert res.model_used == "a"


async def test_validators_json(oa: FakeOpenAI, make_gw: Any) -> None:
    gw = make_gw(config(oa, route={"validators": ["non_empty", "regex:model-b"]}))
    res = await gw.chat(MSG, raise_on_error=True)
    assert res.model_used == "b"
    assert res.attempts[0].error_class == "validation" and "model-a" not in (res.content or "")
    out = StreamResult()
    text = "".join([d async for d in gw.stream(MSG, into=out)])
    assert text.startswith("model-b") and out.result is not None and out.result.model_used == "b"


async def test_validated_stream_longer_than_its_first_token_limit_is_served(oa: FakeOpenAI, make_gw: Any) -> None:
    # a validated stream is held back whole, but only its first token is bound by the first-token
    # limit: an answer that takes longer than that limit (here 0.3 s for its first token, about
    # 0.8 s for the whole answer) is served, not cut as "no first token"
    models = {
        "a": {"provider": "p", "model": "model-a", "ttft_timeout_s": 0.3},
        "b": {"provider": "p", "model": "model-b"},
    }
    gw = make_gw(config(oa, models=models, route={"validators": ["non_empty"], "fallbacks": ["b"]}))
    oa.inject("model-a", chunk_delay_s=0.1)
    out = StreamResult()
    text = "".join([d async for d in gw.stream(MSG, into=out)])
    assert out.result is not None and out.result.model_used == "a" and not out.result.is_fallback
    assert text == "model-a says: one two three four five six"


async def test_validated_stream_stall_fails_over(oa: FakeOpenAI, make_gw: Any) -> None:
    # after its first token, a validated stream held back whole is bound by the stall timeout
    models = {
        "a": {"provider": "p", "model": "model-a", "stall_timeout_s": 0.3},
        "b": {"provider": "p", "model": "model-b"},
    }
    gw = make_gw(config(oa, models=models, route={"validators": ["non_empty"], "fallbacks": ["b"]}))
    oa.inject("model-a", stall_after=3, stall_s=10)
    out = StreamResult()
    start = time.monotonic()
    text = "".join([d async for d in gw.stream(MSG, into=out)])
    assert time.monotonic() - start < 3
    assert out.result is not None and out.result.model_used == "b"
    assert text == "model-b says: one two three four five six"
    assert out.result.attempts[0].error_class == "timeout_stall"


async def test_anthropic_fallback_stream(oa: FakeOpenAI, make_gw: Any) -> None:
    async with FakeAnthropic() as an:
        cfg = config(
            oa,
            extra_providers={
                "claude": {"kind": "anthropic", "base_url": an.url, "api_key": "sk-ant", "health_check_interval_s": 0}
            },
        )
        cfg["models"]["son"] = {"provider": "claude", "model": "claude-sonnet-4-6"}
        cfg["routes"]["r"] = {"models": ["a"], "fallbacks": ["son"]}
        gw = make_gw(cfg)
        oa.inject("model-a", status=503)
        out = StreamResult()
        text = "".join([d async for d in gw.stream(MSG, into=out)])
        assert out.result is not None and out.result.model_used == "son"
        assert text == "claude-sonnet-4-6 says: one two three four five six"
        await gw.aclose()


async def test_soak_5000_requests_with_30_percent_faults(oa: FakeOpenAI, make_gw: Any) -> None:
    models = {
        m: {"provider": "p", "model": f"model-{m}", "breaker": {"failure_threshold": 50, "min_requests": 1000}}
        for m in ("a", "b", "c")
    }
    gw = make_gw(
        config(oa, models=models, route={"models": ["a", "b", "c"], "fallbacks": [], "max_attempts": 6, "retries": 0})
    )
    oa.inject("model-a", status=500, probability=0.3)
    oa.inject("model-b", reset=True, probability=0.3)
    sem = asyncio.Semaphore(32)
    attempts = 0
    failures = 0

    async def one(i: int) -> None:
        nonlocal attempts, failures
        async with sem:
            res = await gw.chat([{"role": "user", "content": f"req {i}"}], max_tokens=8)
            attempts += len(res.attempts)
            failures += 0 if res.ok else 1
            if res.ok:
                assert res.attempts[-1].ok and all(not a.ok for a in res.attempts[:-1])
                assert res.model_used == res.attempts[-1].model

    await asyncio.gather(*(one(i) for i in range(5000)))
    assert failures == 0
    assert attempts == oa.attempts()  # every attempt the fakes saw is recorded, and nothing else
    assert attempts > 5000
