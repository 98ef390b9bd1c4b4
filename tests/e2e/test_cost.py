"""Cost in every answer (issue #14, point 2; contracts "Cost in answers"), read by the official SDK.

Non-streamed: ``X-Modelyard-Cost-Usd`` and ``usage.cost_usd``; streamed: ``usage.cost_usd`` in the
final usage chunk; a cache hit costs 0; the SDK's ``cost_usd`` is the same figure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from modelyard import Gateway
from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess

MASTER = "master-key-cost-0123456789"
IN, OUT = 1000.0, 2000.0  # USD per million tokens


def config(fakes: dict[str, FakeServer]) -> dict[str, object]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["models"]["gpt"].update(input_cost_per_mtok=IN, output_cost_per_mtok=OUT)  # type: ignore[index]
    cfg["routes"]["cached"] = {"models": ["gpt"], "cache_ttl_s": 60}  # type: ignore[index]
    return cfg


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(config(fakes), tmp_path_factory.mktemp("cost"))
    try:
        yield proc
    finally:
        proc.stop()


def client(srv: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0)


def expected(prompt: int, completion: int) -> float:
    return (prompt * IN + completion * OUT) / 1_000_000


def test_a_json_answer_says_what_it_cost(srv: ServerProcess) -> None:
    raw = client(srv).chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "what does it cost"}]
    )
    resp = raw.parse()
    assert resp.usage is not None
    cost = expected(resp.usage.prompt_tokens, resp.usage.completion_tokens)
    assert float(raw.headers["x-modelyard-cost-usd"]) == pytest.approx(cost, rel=1e-6)
    assert resp.usage.model_extra is not None
    assert resp.usage.model_extra["cost_usd"] == pytest.approx(cost, rel=1e-6)


def test_a_stream_says_it_in_the_final_usage_chunk(srv: ServerProcess) -> None:
    chunks = list(
        client(srv).chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": "stream the cost"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    final = chunks[-1]
    assert final.usage is not None and final.usage.model_extra is not None
    cost = expected(final.usage.prompt_tokens, final.usage.completion_tokens)
    assert final.usage.model_extra["cost_usd"] == pytest.approx(cost, rel=1e-6)


def test_a_cache_hit_costs_nothing(srv: ServerProcess) -> None:
    text = f"cache {time.time_ns()}"
    c = client(srv)
    first = c.chat.completions.with_raw_response.create(model="cached", messages=[{"role": "user", "content": text}])
    hit = c.chat.completions.with_raw_response.create(model="cached", messages=[{"role": "user", "content": text}])
    assert float(first.headers["x-modelyard-cost-usd"]) > 0
    assert hit.headers["x-modelyard-cache"] == "hit"
    assert float(hit.headers["x-modelyard-cost-usd"]) == 0
    usage = hit.parse().usage
    assert usage is not None and usage.model_extra is not None and usage.model_extra["cost_usd"] == 0


def test_the_sdk_reports_the_same_figure(fakes: dict[str, FakeServer], srv: ServerProcess) -> None:
    messages = [{"role": "user", "content": "same figure"}]
    with Gateway.from_config(config(fakes), database=None) as gw:
        result = gw.chat_sync(messages, model="gpt")
    raw = client(srv).chat.completions.with_raw_response.create(model="gpt", messages=messages)  # type: ignore[arg-type]
    assert result.usage is not None
    assert result.cost_usd == pytest.approx(expected(result.usage.prompt_tokens, result.usage.completion_tokens))
    assert result.cost_usd == pytest.approx(float(raw.headers["x-modelyard-cost-usd"]), rel=1e-6)
