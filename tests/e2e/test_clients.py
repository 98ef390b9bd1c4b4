"""Real client libraries other than the official SDKs, against the gateway (#15 tests): langchain
(``langchain-openai`` on chat completions and the Responses API, ``langchain-anthropic`` on the
Messages API) and pydantic-ai (its OpenAI chat, OpenAI Responses and Anthropic models), each
streaming and not, with tools, against fakes of several provider kinds.

Every test carries a ``compat(client, feature, ...)`` mark: the client x feature matrix in
docs/api.md is generated from these marks (``make compat-matrix``) and checked against them
(tests/test_compat_matrix.py), so a cell says yes only where a test here proves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from modelyard.testing import FakeServer
from tests.helpers import ServerProcess

KEY = "sk-any"


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class City(BaseModel):
    name: str
    country: str


def lc_openai(server: ServerProcess, model: str, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, **kw)  # type: ignore[arg-type]


def lc_anthropic(server: ServerProcess, model: str, **kw: Any) -> ChatAnthropic:
    return ChatAnthropic(model=model, base_url=server.url, api_key=KEY, max_retries=0, max_tokens=2048, **kw)  # type: ignore[call-arg,arg-type]


# -- langchain-openai ----------------------------------------------------------------------------


@pytest.mark.compat("langchain-openai", "Chat Completions", "streaming")
@pytest.mark.parametrize("model", ("gpt", "claude", "gem", "llama"))
def test_langchain_openai_invoke_and_stream(server: ServerProcess, model: str) -> None:
    llm = lc_openai(server, model)
    answer = llm.invoke([HumanMessage("Say hello")])
    assert isinstance(answer, AIMessage) and answer.content and answer.response_metadata["model_name"] == model
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(c.content) for c in llm.stream("Say hello"))
    assert streamed == answer.content


# langchain keeps one async HTTP client per base URL for the whole process, bound to the event loop
# that first used it: every async call of a client library goes through this one loop
@pytest.mark.compat("langchain-openai", "async")
@pytest.mark.compat("langchain-anthropic", "async")
def test_langchain_async(server: ServerProcess) -> None:
    async def go() -> None:
        for model in ("gpt", "claude", "gem", "llama"):
            sync = lc_openai(server, model).invoke("Say hello")
            answer = await lc_openai(server, model).ainvoke("Say hello")
            assert answer.content == sync.content
            streamed = "".join([str(c.content) async for c in lc_openai(server, model).astream("Say hello")])
            assert streamed == sync.content
        for model in ("claude", "gpt"):
            sync = lc_anthropic(server, model).invoke("Say hello")
            assert (await lc_anthropic(server, model).ainvoke("Say hello")).text == sync.text

    asyncio.run(go())


@pytest.mark.compat("langchain-openai", "tools", "streaming")
@pytest.mark.parametrize("model", ("gpt", "claude"))
def test_langchain_openai_tool_loop(server: ServerProcess, model: str) -> None:
    llm = lc_openai(server, model).bind_tools([get_weather])
    ask = HumanMessage("What's the weather in Paris? use get_weather")
    first = llm.invoke([ask])
    assert isinstance(first, AIMessage) and first.tool_calls and first.tool_calls[0]["name"] == "get_weather"
    call = first.tool_calls[0]
    chunks = list(llm.stream([ask]))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c  # type: ignore[assignment]
    assert merged.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = llm.invoke([ask, first, result])
    assert final.content and not final.tool_calls  # type: ignore[attr-defined]


@pytest.mark.compat("langchain-openai", "structured output")
@pytest.mark.parametrize("model", ("gpt", "claude", "gem"))
def test_langchain_openai_structured_output(server: ServerProcess, model: str) -> None:
    out = lc_openai(server, model).with_structured_output(City, method="json_schema").invoke("Paris?")
    assert isinstance(out, City)


@pytest.mark.compat("langchain-openai", "Responses API", "tools")
@pytest.mark.parametrize("model", ("gpt", "claude"))
def test_langchain_openai_on_the_responses_api(server: ServerProcess, fakes: dict[str, FakeServer], model: str) -> None:
    llm = lc_openai(server, model, use_responses_api=True)
    answer = llm.invoke("Say hello")
    assert answer.text and answer.response_metadata.get("id", "").startswith("resp_")
    streamed = "".join(c.text for c in llm.stream("Say hello"))
    assert streamed == answer.text
    first = llm.bind_tools([get_weather]).invoke("What's the weather in Paris? use get_weather")
    assert first.tool_calls and first.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]


@pytest.mark.compat("langchain-openai", "embeddings")
def test_langchain_openai_embeddings(server: ServerProcess) -> None:
    emb = OpenAIEmbeddings(
        model="emb",
        base_url=f"{server.url}/v1",
        api_key=KEY,
        max_retries=0,
        check_embedding_ctx_length=False,  # type: ignore[arg-type]
    )
    vectors = emb.embed_documents(["one", "two"])
    assert len(vectors) == 2 and len(vectors[0]) > 8 and vectors[0] != vectors[1]


@pytest.mark.compat("langchain-openai", "typed errors")
def test_langchain_openai_errors_are_the_sdks(server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError):
        lc_openai(server, "no-such-model").invoke("x")


# -- langchain-anthropic ---------------------------------------------------------------------------


@pytest.mark.compat("langchain-anthropic", "Messages API", "streaming")
@pytest.mark.parametrize("model", ("claude", "gpt", "gem"))
def test_langchain_anthropic_invoke_and_stream(server: ServerProcess, model: str) -> None:
    llm = lc_anthropic(server, model)
    answer = llm.invoke("Say hello")
    assert answer.text and answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    streamed = "".join(c.text for c in llm.stream("Say hello"))
    assert streamed == answer.text


@pytest.mark.compat("langchain-anthropic", "tools", "reasoning")
def test_langchain_anthropic_thinking_tool_loop(server: ServerProcess) -> None:
    """With thinking on, langchain keeps the signed thinking block on the AIMessage and sends it
    back: the loop only works if the gateway passes it through unchanged."""
    llm = lc_anthropic(server, "claude", thinking={"type": "enabled", "budget_tokens": 1024}).bind_tools([get_weather])
    ask = HumanMessage("What's the weather in Paris? use get_weather")
    first = llm.invoke([ask])
    assert isinstance(first.content, list) and first.content[0]["type"] == "thinking"  # type: ignore[index]
    call = first.tool_calls[0]  # type: ignore[attr-defined]
    final = llm.invoke([ask, first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])])
    assert final.text


@pytest.mark.compat("langchain-anthropic", "structured output")
def test_langchain_anthropic_structured_output(server: ServerProcess) -> None:
    assert isinstance(lc_anthropic(server, "claude").with_structured_output(City).invoke("Paris?"), City)


# -- pydantic-ai ----------------------------------------------------------------------------------
# Each test owns its SDK client and closes it: an HTTP client left to the garbage collector warns
# from __del__, and on CPython 3.11.7 a traceback formatted inside ast.parse (the warning's) breaks
# every later ast.parse of the process (a shared recursion counter, fixed in 3.11.8).


@contextlib.asynccontextmanager
async def openai_provider(server: ServerProcess) -> AsyncIterator[OpenAIProvider]:
    async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
        yield OpenAIProvider(openai_client=client)


def weather_agent(model: Any) -> Agent[None, str]:
    agent: Agent[None, str] = Agent(model, instructions="Be brief.")

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return agent


def parts(result: Any) -> list[str]:
    return [p.part_kind for m in result.all_messages() for p in m.parts]


@pytest.mark.compat("pydantic-ai", "Chat Completions", "tools", "async")
@pytest.mark.parametrize("model", ("gpt", "claude", "gem", "llama"))
async def test_pydantic_ai_agent_with_a_tool(server: ServerProcess, model: str) -> None:
    """The agent calls the tool (the fake asks for it), gets its result back, and answers."""
    async with openai_provider(server) as provider:
        result = await weather_agent(OpenAIChatModel(model, provider=provider)).run("Weather in Paris? use weather")
    assert "tool-call" in parts(result) and "tool-return" in parts(result) and result.output


@pytest.mark.compat("pydantic-ai", "streaming")
@pytest.mark.parametrize("model", ("gpt", "claude"))
async def test_pydantic_ai_run_stream(server: ServerProcess, fakes: dict[str, FakeServer], model: str) -> None:
    # a model that writes as models do (tokens apart): deltas that arrive in one read may be merged
    kind, upstream = ("openai", "gpt-4o") if model == "gpt" else ("anthropic", "claude-sonnet-4-5")
    fakes[kind].profile(upstream, ttft_s=(0.01, 0.02), tokens_per_s=200)
    async with openai_provider(server) as provider:
        agent: Agent[None, str] = Agent(OpenAIChatModel(model, provider=provider))
        async with agent.run_stream("Say hello") as run:
            pieces = [t async for t in run.stream_text(delta=True, debounce_by=None)]
            output = await run.get_output()
    assert len(pieces) > 1 and "".join(pieces) == output


@pytest.mark.compat("pydantic-ai", "structured output")
@pytest.mark.parametrize("model", ("gpt", "claude"))
async def test_pydantic_ai_structured_output(server: ServerProcess, model: str) -> None:
    async with openai_provider(server) as provider:
        agent: Agent[None, City] = Agent(OpenAIChatModel(model, provider=provider), output_type=City)
        assert isinstance((await agent.run("Paris?")).output, City)


@pytest.mark.compat("pydantic-ai", "Responses API", "tools")
@pytest.mark.parametrize("model", ("gpt", "claude"))
async def test_pydantic_ai_responses_model(server: ServerProcess, model: str) -> None:
    async with openai_provider(server) as provider:
        result = await weather_agent(OpenAIResponsesModel(model, provider=provider)).run("Weather? use weather")
    assert "tool-return" in parts(result) and result.output


@pytest.mark.compat("pydantic-ai", "Messages API", "tools")
@pytest.mark.parametrize("model", ("claude", "gpt"))
async def test_pydantic_ai_anthropic_model(server: ServerProcess, model: str) -> None:
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key=KEY, max_retries=0) as client:
        provider = AnthropicProvider(anthropic_client=client)
        result = await weather_agent(AnthropicModel(model, provider=provider)).run("Weather? use weather")
    assert "tool-return" in parts(result) and result.output
