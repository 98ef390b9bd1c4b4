"""Fuzzing the real app (#19 point 2): Hypothesis throws generated and mutated bodies and headers
at every request endpoint of a running gateway (in front of the fakes, over loopback): never a
5xx, never a hang, and the process is healthy afterwards.

``make test`` runs a fixed budget (``MODELYARD_FUZZ_EXAMPLES``, default 40 per endpoint);
``make fuzz`` runs it unbounded (a large budget, no deadline).  A failure prints the request, so
it can be replayed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess

EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_EXAMPLES", "40"))
MSG = [{"role": "user", "content": "hello"}]
#: a valid body per endpoint: the fuzzer mutates these (and also sends wholly generated ones)
VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "main", "messages": MSG, "max_tokens": 8},
    "/v1/completions": {"model": "main", "prompt": "hello", "max_tokens": 8},
    "/v1/embeddings": {"model": "emb", "input": ["hello", "world"]},
    "/v1/messages": {"model": "main", "max_tokens": 8, "messages": MSG},
    "/v1/messages/count_tokens": {"model": "main", "messages": MSG},
    "/v1/responses": {"model": "main", "input": "hello", "max_output_tokens": 16},
    "/v1/estimate": {"model": "main", "messages": MSG},
}
FIELDS = sorted({k for body in VALID.values() for k in body} | {
    "stream", "stream_options", "temperature", "top_p", "n", "stop", "seed", "tools", "tool_choice", "response_format",
    "logprobs", "top_logprobs", "user", "modelyard", "system", "thinking", "metadata", "instructions",
    "previous_response_id", "store", "encoding_format", "dimensions", "reasoning_effort", "max_completion_tokens",
})  # fmt: skip
OPTION_HEADERS = ["x-modelyard-route", "x-modelyard-timeout-s", "x-modelyard-fallback", "x-modelyard-max-cost-usd",
                  "x-modelyard-task", "x-modelyard-session", "x-modelyard-cache-ttl-s", "x-modelyard-local-only",
                  "anthropic-version", "anthropic-beta"]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["main", "emb", "gpt", "user", "assistant", "system", "tool", "text", "image_url", "auto", ""])
)
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), kids, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn, path: str) -> Any:
    """A valid body with a few fields replaced, dropped or added; or something else entirely."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    body = dict(VALID[path])
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(set(body) | set(FIELDS))))
        action = draw(st.sampled_from(["replace", "drop", "nest"]))
        if action == "drop":
            body.pop(key, None)
        elif action == "nest" and isinstance(body.get("messages"), list):
            body["messages"] = [*body["messages"], draw(json_values)]
        else:
            body[key] = draw(json_values)
    return body


headers = st.dictionaries(
    st.sampled_from(OPTION_HEADERS),
    # what an HTTP client can send at all: printable ASCII, no surrounding blanks
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(str.strip),
    max_size=3,
)


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(gateway_config(fakes), tmp_path_factory.mktemp("fuzz"))
    try:
        yield proc
    finally:
        proc.stop()


def send(srv: ServerProcess, path: str, body: Any, extra: dict[str, str]) -> None:
    try:
        with httpx.stream("POST", srv.url + path, json=body, headers=extra, timeout=30) as resp:
            resp.read()  # a stream is read to its end: a hang is a timeout
            status = resp.status_code
    except httpx.TimeoutException:
        pytest.fail(f"no answer within 30 s: POST {path} {extra!r} {body!r}")
    assert status < 500, f"{status} for POST {path} headers={extra!r} body={body!r}: {resp.text[:300]}"


@pytest.mark.parametrize("path", sorted(VALID))
def test_no_body_or_header_gets_a_5xx_or_hangs(srv: ServerProcess, path: str) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies(path), extra=headers)
    def run(body: Any, extra: dict[str, str]) -> None:
        send(srv, path, body, extra)

    run()
    assert httpx.get(srv.url + "/health", timeout=5).status_code == 200
    assert srv.proc.poll() is None


def test_raw_bytes_are_refused_cleanly(srv: ServerProcess) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(raw=st.binary(max_size=300), path=st.sampled_from(sorted(VALID)))
    def run(raw: bytes, path: str) -> None:
        r = httpx.post(srv.url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code < 500, (path, raw, r.text[:200])

    run()
    assert httpx.get(srv.url + "/health", timeout=5).status_code == 200
