"""The status-code rule (contracts: "Status codes when a request fails", #15 point 4, #14 point 5).

What a request asks for that no candidate can serve (n, tools, images, embeddings) is a 400 naming
the parameter and the models; every candidate rate-limited is a 429 with the earliest time a
candidate frees; open breakers are a 503 with the remaining cooldown; an upstream's own
Retry-After on a 503 is passed on.  Driven with the official openai SDK, whose typed errors and
retries depend on exactly this.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def gw(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = gateway_config(fakes)
    config["providers"]["local"] = {"kind": "llamacpp"}
    config["models"]["tiny"] = {"provider": "local", "model": "gemma3-270m"}
    config["models"]["old"] = {"provider": "openai", "model": "gpt-3.5-turbo"}
    config["models"]["fragile"] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "breaker": {"failure_threshold": 1, "cooldown_s": 40},
    }
    config["routes"].update(
        {
            "local": {"models": ["tiny"]},
            "mixed": {"models": ["claude", "gpt"], "strategy": "priority"},
            "claude-only": {"models": ["claude"]},
            "fragile-route": {"models": ["fragile"], "retries": 0},
        }
    )
    proc = ServerProcess(config, tmp_path_factory.mktemp("status"))
    try:
        yield proc
    finally:
        proc.stop()


def client(gw: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="k", max_retries=0)


MSG: list[Any] = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def test_a_local_model_asked_for_tools_n_or_embeddings_is_400(gw: ServerProcess) -> None:
    with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="local", messages=MSG, tools=[TOOL])  # type: ignore[list-item]
        err = info.value.body
        assert isinstance(err, dict) and err["param"] == "tools" and "tiny" in err["message"]
        assert err["code"] == "unsupported_parameter"
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="tiny", messages=MSG, n=2)
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "n"
        with pytest.raises(openai.BadRequestError) as info:
            c.embeddings.create(model="tiny", input="x")
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "model"


def test_anthropic_n2_is_400_and_a_mixed_route_uses_the_model_that_can(gw: ServerProcess) -> None:
    with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="claude-only", messages=MSG, n=2)
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "n"
        raw = c.chat.completions.with_raw_response.create(model="mixed", messages=MSG, n=2)
        assert raw.headers["x-modelyard-model"] == "gpt" and len(raw.parse().choices) == 2
        with pytest.raises(openai.BadRequestError):
            c.embeddings.create(model="claude", input="x")
        image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="old", messages=[{"role": "user", "content": image}])  # type: ignore[list-item,misc]
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "messages"


def test_open_breaker_is_503_with_the_remaining_cooldown(gw: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o-mini", status=500, times=1)
    first = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "fragile-route", "messages": MSG}, timeout=30)
    assert first.status_code == 502
    second = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "fragile-route", "messages": MSG}, timeout=30)
    assert second.status_code == 503, second.text
    assert 30 <= int(second.headers["retry-after"]) <= 40
    with client(gw) as c, pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="fragile-route", messages=MSG)


def test_upstream_503_retry_after_is_passed_on(gw: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["anthropic"].inject("claude-sonnet-4-5", status=529, retry_after="17")
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "claude-only", "messages": MSG, "modelyard": {"timeout_s": 3}},
        timeout=30,
    )
    assert r.status_code == 503 and r.headers["retry-after"] == "17", (r.status_code, r.headers, r.text)


def test_every_candidate_rate_limited_is_429_with_the_earliest_time(
    gw: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["anthropic"].inject("claude-sonnet-4-5", status=429, retry_after="20")
    fakes["openai"].inject("gpt-4o", status=429, retry_after="9")
    with client(gw) as c, pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="mixed", messages=MSG, extra_body={"modelyard": {"timeout_s": 3}})
    assert info.value.response.headers["retry-after"] == "9"


def test_models_retrieve(gw: ServerProcess) -> None:
    with client(gw) as c:
        got = c.models.retrieve("gpt")
        assert got.id == "gpt" and got.owned_by == "openai"
        extra = got.model_extra or {}
        assert "tools" in extra["modelyard"]["capabilities"]
        assert c.models.retrieve("mixed").model_extra["modelyard"]["type"] == "route"  # type: ignore[index]
        assert c.models.retrieve("tiny").model_extra["modelyard"]["capabilities"] == ["json_schema", "prefill"]  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("nope")


def test_legacy_completions_through_the_openai_sdk(gw: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    with client(gw) as c:
        raw = c.completions.with_raw_response.create(model="gpt", prompt="Say hi", max_tokens=5)
        done = raw.parse()
        assert done.object == "text_completion" and done.choices[0].text and done.model == "gpt"
        assert done.usage is not None and done.usage.total_tokens > 0
        assert float(raw.headers["x-modelyard-cost-usd"]) >= 0
        body = fakes["openai"].requests[-1]["body"]
        assert body["messages"] == [{"role": "user", "content": "Say hi"}] and body["max_tokens"] == 5
        c.completions.create(model="gpt", prompt=["one prompt"])
        assert fakes["openai"].requests[-1]["body"]["max_tokens"] == 16  # the legacy API's default
        text = "".join(
            ch.choices[0].text for ch in c.completions.create(model="claude", prompt="x", stream=True) if ch.choices
        )
        assert text
        for bad, param in (
            ({"echo": True}, "echo"),
            ({"suffix": "end"}, "suffix"),
            ({"best_of": 3}, "best_of"),
            ({"logprobs": 2}, "logprobs"),
        ):
            with pytest.raises(openai.BadRequestError) as info:
                c.completions.create(model="gpt", prompt="x", **bad)  # type: ignore[arg-type]
            assert isinstance(info.value.body, dict) and info.value.body["param"] == param
        with pytest.raises(openai.BadRequestError) as info:
            c.completions.create(model="gpt", prompt=["a", "b"])
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "prompt"
