"""Validation at the edge (issue #11): bad model names, option values and bodies are a 400 in OpenAI
error JSON naming the field, and nothing of them reaches an upstream.

Each case here was a 500, a dropped connection or an upstream call before (see the December
security review, D3/D10/D12/D13).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.e2e.test_errors import assert_openai_error
from tests.helpers import ServerProcess

MSG = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def edge(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes)
    cfg["routes"]["short"] = {"models": ["gpt"], "timeout_s": 1.0, "fallback": False}
    workdir: Path = tmp_path_factory.mktemp("edge")
    (workdir / "models").mkdir()
    (workdir / "outside.gguf").write_bytes(b"GGUF")
    cfg["providers"]["local"] = {"kind": "llamacpp", "models_dir": str(workdir / "models")}
    proc = ServerProcess(cfg, workdir)
    try:
        yield proc
    finally:
        proc.stop()


def post(srv: ServerProcess, body: Any, path: str = CHAT, headers: dict[str, Any] | None = None) -> httpx.Response:
    # the stdlib encoder: orjson itself cannot write the deepest of these bodies
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        srv.url + path, content=content, headers={"content-type": "application/json", **(headers or {})}, timeout=30
    )


def no_upstream_call(fakes: dict[str, FakeServer]) -> None:
    for kind, fake in fakes.items():
        assert not list(fake.requests), f"{kind} was called: {list(fake.requests)[:1]}"


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


BAD_NAMES = [
    pytest.param("openai:a\r\nX-Injected: 1", id="crlf"),
    pytest.param("openai:x\x00y", id="nul"),
    pytest.param("openai:模型", id="non-latin-1"),
    pytest.param("openai:café", id="non-ascii"),
    pytest.param("openai:" + "z" * 30_000, id="30kb"),
    pytest.param("gemini:../../../PATHTRAV", id="gemini-traversal"),
    pytest.param("openai:/abs/path", id="absolute"),
    pytest.param("openai:~/x", id="home"),
    pytest.param("openai:../x", id="dotdot"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"messages": MSG}),
        (CHAT, {"messages": MSG, "stream": True}),
        ("/v1/embeddings", {"input": "x"}),
    ],
    ids=["chat", "stream", "embeddings"],
)
def test_bad_model_name_is_400_and_never_sent(
    edge: ServerProcess, fakes: dict[str, FakeServer], name: str, path: str, body: dict[str, Any]
) -> None:
    resp = post(edge, {"model": name, **body}, path)
    err = assert_openai_error(resp, 400)
    assert err["param"] == "model"
    assert len(resp.content) < 1000  # the name is not echoed
    no_upstream_call(fakes)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_route_option_is_400(edge: ServerProcess, fakes: dict[str, FakeServer], name: str) -> None:
    err = assert_openai_error(post(edge, {"model": "gpt", "messages": MSG, "modelyard": {"route": name}}), 400)
    assert err["param"] == "modelyard.route"
    err = assert_openai_error(post(edge, {"model": "gpt", "messages": MSG, "modelyard": {"task": name}}), 400)
    assert err["param"] == "modelyard.task"
    no_upstream_call(fakes)


@pytest.mark.parametrize("value", [b"\xff", b"openai:\xe6\xa8\xa1", b"../x", b"openai:/etc/passwd", b"a" * 300])
def test_bad_route_header_is_400(edge: ServerProcess, fakes: dict[str, FakeServer], value: bytes) -> None:
    resp = post(edge, {"model": "gpt", "messages": MSG}, headers={"X-Modelyard-Route": value})
    err = assert_openai_error(resp, 400)
    assert err["param"] == "X-Modelyard-Route"
    no_upstream_call(fakes)


def test_non_ascii_byte_in_any_option_header_is_400(edge: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    resp = post(edge, {"model": "gpt", "messages": MSG}, headers={"X-Modelyard-Fallback": b"tr\xffue"})
    assert assert_openai_error(resp, 400)["param"] == "X-Modelyard-Fallback"
    no_upstream_call(fakes)


def test_local_paths_are_refused_alike_whether_or_not_the_file_exists(
    edge: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    for exists, missing in [("/etc/passwd", "/etc/nonexistent-modelyard"), ("../outside", "../missing")]:
        answers = set()
        for name in (exists, missing):
            resp = post(edge, {"model": f"local:{name}", "messages": MSG})
            assert_openai_error(resp, 400)
            answers.add(orjson.dumps(resp.json()["error"]))
        assert len(answers) == 1  # the answer depends on the name only, never on the file system
    status = httpx.get(edge.url + "/v1/status/local", timeout=10).text
    assert "passwd" not in status and "outside" not in status  # nothing was probed or loaded


@pytest.mark.parametrize(
    "name",
    [
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "meta-llama/Llama-3.1-8B-Instruct",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "claude-3-5-sonnet@20240620",
    ],
)
def test_real_model_ids_still_reach_the_upstream(edge: ServerProcess, fakes: dict[str, FakeServer], name: str) -> None:
    resp = post(edge, {"model": f"openai:{name}", "messages": MSG})
    assert resp.status_code == 200, resp.text
    assert [r["model"] for r in fakes["openai"].requests] == [name]


def test_gemini_model_path_names_still_work(edge: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    resp = post(edge, {"model": "gemini:models/gemini-2.5-flash", "messages": MSG})
    assert resp.status_code == 200, resp.text
    assert [r["path"] for r in fakes["gemini"].requests] == ["/v1beta/models/gemini-2.5-flash:generateContent"]


@pytest.mark.parametrize("role", [["user"], {"r": "user"}, 1, None])
def test_role_of_the_wrong_type_is_400(edge: ServerProcess, fakes: dict[str, FakeServer], role: Any) -> None:
    err = assert_openai_error(post(edge, {"model": "gpt", "messages": [{"role": role, "content": "x"}]}), 400)
    assert err["param"] == "messages[0].role"
    no_upstream_call(fakes)


@pytest.mark.parametrize("path", [CHAT, "/v1/estimate"])
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"vendor_field": nested(260)}, "vendor_field"),
        ({"vendor_field": {"a": nested(230)}}, "vendor_field"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": nested(260)}}}]},
            "tools[0].function.parameters",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"x": nested(260)}}}},
            "response_format.json_schema.schema",
        ),
    ],
    ids=["extra-260", "extra-231", "tool-parameters", "response-schema"],
)
def test_json_too_deep_to_forward_is_400(
    edge: ServerProcess, fakes: dict[str, FakeServer], path: str, extra: dict[str, Any], param: str
) -> None:
    err = assert_openai_error(post(edge, {"model": "gpt", "messages": MSG, **extra}, path), 400)
    assert err["param"] == param
    no_upstream_call(fakes)


def test_json_too_deep_to_forward_is_400_on_embeddings(edge: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    err = assert_openai_error(post(edge, {"model": "emb", "input": "x", "vendor": nested(260)}, "/v1/embeddings"), 400)
    assert err["param"] == "vendor"
    no_upstream_call(fakes)


def test_deep_but_forwardable_json_still_passes(edge: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    resp = post(edge, {"model": "gpt", "messages": MSG, "vendor_field": nested(150)})
    assert resp.status_code == 200, resp.text
    assert fakes["openai"].requests[0]["body"]["vendor_field"] == nested(150)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e308", "3601", "0", "-1"])
def test_timeout_must_be_finite_positive_and_bounded(
    edge: ServerProcess, fakes: dict[str, FakeServer], value: str
) -> None:
    resp = post(edge, {"model": "gpt", "messages": MSG}, headers={"X-Modelyard-Timeout-S": value})
    assert assert_openai_error(resp, 400)["param"] == "X-Modelyard-Timeout-S"
    resp = post(edge, {"model": "gpt", "messages": MSG, "modelyard": {"timeout_s": value}})
    assert assert_openai_error(resp, 400)["param"] == "modelyard.timeout_s"
    no_upstream_call(fakes)


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", 0, -1])
def test_max_cost_must_be_finite_and_positive(edge: ServerProcess, fakes: dict[str, FakeServer], value: Any) -> None:
    resp = post(edge, {"model": "gpt", "messages": MSG, "modelyard": {"max_cost_usd": value}})
    assert assert_openai_error(resp, 400)["param"] == "modelyard.max_cost_usd"
    no_upstream_call(fakes)


def test_client_timeout_cannot_extend_the_route_deadline(edge: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", hang=True)
    t0 = time.monotonic()
    resp = post(edge, {"model": "short", "messages": MSG, "modelyard": {"timeout_s": 600}})
    assert_openai_error(resp, 504)
    assert time.monotonic() - t0 < 10  # the route's 1 s, not the client's 600 s


def test_client_timeout_can_shorten_the_route_deadline(edge: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", hang=True)
    t0 = time.monotonic()
    assert_openai_error(post(edge, {"model": "gpt", "messages": MSG}, headers={"X-Modelyard-Timeout-S": "0.3"}), 504)
    assert time.monotonic() - t0 < 10
