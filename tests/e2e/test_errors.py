"""Bad input and failed upstreams: the right status, OpenAI error JSON, a message that says what to do."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.testing import FakeServer
from tests.helpers import ServerProcess


def post(server: ServerProcess, body: Any, path: str = "/v1/chat/completions", **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        server.url + path, content=content, headers={"content-type": "application/json"}, timeout=30, **kw
    )


def assert_openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    return dict(err)


def test_malformed_json(server: ServerProcess) -> None:
    err = assert_openai_error(post(server, b'{"model": "gpt", '), 400)
    assert "not valid JSON" in err["message"]


def test_wrong_types(server: ServerProcess) -> None:
    err = assert_openai_error(post(server, {"model": "gpt", "messages": "hello"}), 400)
    assert err["param"] == "messages"
    err = assert_openai_error(
        post(server, {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "temperature": "warm"}), 400
    )
    assert err["param"] == "temperature"


def test_missing_model(server: ServerProcess) -> None:
    """#17: a body without a model goes to default_route (this server has one); without a
    default route it is a 400 naming `model` (tests/e2e/test_auto_route.py)."""
    resp = post(server, {"messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 200 and resp.headers["x-modelyard-route"] == "main"


def test_unknown_model(server: ServerProcess) -> None:
    err = assert_openai_error(post(server, {"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}), 404)
    assert err["code"] == "model_not_found"
    assert "GET /v1/models" in err["message"]


def test_unknown_provider_prefix(server: ServerProcess) -> None:
    assert_openai_error(post(server, {"model": "azure:gpt-4o", "messages": [{"role": "user", "content": "x"}]}), 404)


def test_oversized_body(server: ServerProcess) -> None:
    big = {"model": "gpt", "messages": [{"role": "user", "content": "x" * (1024 * 1024 + 10)}]}
    err = assert_openai_error(post(server, big), 413)
    assert "max_body_mb" in err["message"]


def test_oversized_chunked_body(server: ServerProcess) -> None:
    def gen() -> Any:
        for _ in range(300):
            yield b"x" * 8192

    headers = {"content-type": "application/json"}  # no-key mode refuses other POSTs (403)
    resp = httpx.post(server.url + "/v1/chat/completions", content=gen(), headers=headers, timeout=30)
    assert_openai_error(resp, 413)


def test_unknown_path_and_method(server: ServerProcess) -> None:
    assert_openai_error(httpx.get(server.url + "/v1/nothing"), 404)
    assert_openai_error(httpx.get(server.url + "/v1/chat/completions"), 405)


def test_unknown_option(server: ServerProcess) -> None:
    err = assert_openai_error(
        post(server, {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "modelyard": {"colour": "red"}}),
        400,
    )
    assert err["param"] == "modelyard.colour"


def test_all_attempts_failed_lists_attempts_without_secrets(
    server: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["openai"].inject("*", status=500)
    fakes["anthropic"].inject("*", status=529)
    resp = post(server, {"model": "main", "messages": [{"role": "user", "content": "x"}]})
    err = assert_openai_error(resp, 502)
    assert err["code"] == "all_attempts_failed"
    # one same-model retry each (retries: 1), then max_attempts (4) stops before claude
    assert [a["model"] for a in err["attempts"]] == ["gpt", "gpt", "gpt-mini", "gpt-mini"]
    assert all(a["status"] == 500 for a in err["attempts"])
    assert fakes["anthropic"].attempts() == 0
    assert "secret" not in resp.text


def test_upstream_timeout_is_504(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", hang=True)
    resp = post(
        server, {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "modelyard": {"timeout_s": 0.5}}
    )
    assert_openai_error(resp, 504)
    assert fakes["openai"].attempts("gpt-4o") == 1  # a silent upstream is not asked again


def test_upstream_400_passes_through(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", status=400, message="Unsupported parameter: 'foo'")
    err = assert_openai_error(post(server, {"model": "gpt", "messages": [{"role": "user", "content": "x"}]}), 400)
    assert "Unsupported parameter" in err["message"]
    assert fakes["openai"].attempts("gpt-4o") == 1


def test_upstream_429_with_retry_after(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", status=429, retry_after="30")
    resp = post(server, {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "modelyard": {"timeout_s": 5}})
    # every candidate refused for rate limits: 429 (contracts: status codes), with the upstream's time
    assert_openai_error(resp, 429)
    assert resp.headers["retry-after"] == "30"
    assert resp.json()["error"]["type"] == "rate_limit_error" and resp.json()["error"]["code"] == "rate_limit_exceeded"
    assert fakes["openai"].attempts("gpt-4o") == 1  # 30 s does not fit a 5 s deadline: no waiting, no hammering


@pytest.mark.compat("openai", "typed errors")
def test_sdk_raises_typed_errors(server: ServerProcess) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as c:
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="gpt", messages=[])


def test_stream_cut_after_start_ends_with_error_event(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", cut_after=3)
    got: list[str] = []
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as c,
        pytest.raises(openai.APIError) as info,
    ):
        for chunk in c.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "a b c d e f"}], stream=True
        ):
            got += [ch.delta.content or "" for ch in chunk.choices]
    assert got  # content had started: no silent failover, no truncated "success"
    assert "incomplete" in str(info.value)


def test_stream_failure_before_first_token_fails_over(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", status=500)
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as c:
        stream = c.chat.completions.with_raw_response.create(
            model="main", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert stream.headers["x-modelyard-model"] == "gpt-mini"
        assert stream.headers["x-modelyard-fallback"] == "true"
        text = "".join(ch.choices[0].delta.content or "" for ch in stream.parse() if ch.choices)
    assert text == "gpt-4o-mini says: hi"


def test_health_and_ready(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready").json()
    assert ready["status"] == "ready" and ready["config_version"] >= 1


bodies = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=6),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "model",
                    "messages",
                    "role",
                    "content",
                    "stream",
                    "tools",
                    "n",
                    "max_tokens",
                    "input",
                    "type",
                    "modelyard",
                    "response_format",
                    "tool_choice",
                    "stop",
                ]
            ),
            c,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]))
def test_no_body_gives_a_500(server: ServerProcess, body: Any, path: str) -> None:
    resp = post(server, body, path)
    assert resp.status_code < 500 or resp.status_code in (502, 503, 504), resp.text
    if resp.status_code >= 400:
        assert "error" in resp.json()
