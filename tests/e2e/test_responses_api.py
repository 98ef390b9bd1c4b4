"""The OpenAI Responses API served by the gateway (#15 point 2, first part), driven by the official
openai SDK's ``client.responses`` against fakes of several provider kinds: plain and streamed,
function tools and their outputs, structured output, and the 400s for what is not served."""

from __future__ import annotations

import openai
import pytest

from modelyard.testing import FakeServer
from tests.helpers import ServerProcess

TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0)


@pytest.mark.compat("openai", "Responses API", "streaming")
@pytest.mark.parametrize("model", ("gpt", "claude", "gem", "llama"))
def test_create_and_stream(server: ServerProcess, model: str) -> None:
    with client(server) as c:
        r = c.responses.create(model=model, instructions="Be brief.", input="Say hello")
        assert r.object == "response" and r.status == "completed" and r.model == model
        assert r.output_text and r.usage is not None and r.usage.output_tokens > 0
        events = list(c.responses.create(model=model, input="Say hello", stream=True))
        kinds = [e.type for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        final = events[-1].response  # type: ignore[union-attr]
        assert deltas and final.output_text == deltas
        assert [e.sequence_number for e in events] == list(range(len(events)))
        with c.responses.stream(model=model, input="Say hello") as s:
            text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
            assert s.get_final_response().output_text == text


@pytest.mark.parametrize("model", ("gpt", "claude"))
def test_function_tools_round_trip(server: ServerProcess, model: str) -> None:
    ask = [{"role": "user", "content": "What's the weather in Paris? use get_weather"}]
    with client(server) as c:
        first = c.responses.create(model=model, input=ask, tools=[TOOL], tool_choice="required")  # type: ignore[arg-type,list-item]
        call = next(o for o in first.output if o.type == "function_call")
        assert call.name == "get_weather" and call.arguments
        follow = [*ask, call.model_dump(), {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
        second = c.responses.create(model=model, input=follow, tools=[TOOL])  # type: ignore[arg-type,list-item]
        assert second.output_text
        with c.responses.stream(model=model, input=ask, tools=[TOOL], tool_choice="required") as s:  # type: ignore[arg-type,list-item]
            final = s.get_final_response()
        streamed = next(o for o in final.output if o.type == "function_call")
        assert streamed.name == "get_weather" and streamed.arguments.startswith("{")


def test_structured_output_reaches_the_upstream(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    fakes["openai"].reset()
    with client(server) as c:
        c.responses.create(
            model="gpt", input="json please",
            text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
            max_output_tokens=50,
        )  # fmt: skip
    body = fakes["openai"].requests[-1]["body"]
    assert (
        body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["schema"] == schema
    )
    assert body["max_tokens"] == 50 or body.get("max_completion_tokens") == 50


def test_what_is_not_served_is_a_400_naming_it(server: ServerProcess) -> None:
    with client(server) as c:
        with pytest.raises(openai.BadRequestError) as info:
            c.responses.create(model="gpt", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "tools[0].type"
        with pytest.raises(openai.NotFoundError) as nf:
            c.responses.create(model="gpt", input="x", previous_response_id="resp_123")
        assert isinstance(nf.value.body, dict) and nf.value.body["param"] == "previous_response_id"
        with pytest.raises(openai.BadRequestError) as info:
            c.responses.create(model="gpt", input=[{"type": "function_call_output", "call_id": "c1", "output": "x"}])  # type: ignore[list-item]
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "input[0].call_id"
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve("resp_123")
        with pytest.raises(openai.NotFoundError):
            c.responses.delete("resp_123")
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="nope", input="x")


def test_stored_responses_continue_a_conversation(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    with client(server) as c:
        first = c.responses.create(model="gpt", instructions="Be brief.", input="My name is Ada.")
        assert first.store is True
        fakes["openai"].reset()
        second = c.responses.create(model="gpt", input="What is my name?", previous_response_id=first.id)
        assert second.previous_response_id == first.id
        sent = fakes["openai"].requests[-1]["body"]["messages"]
        contents = [m.get("content") for m in sent]
        # the stored turn (input and answer) comes first; instructions are not carried over
        assert contents[0] == "My name is Ada." and contents[1] == first.output_text
        assert contents[2] == "What is my name?" and all(m["role"] != "system" for m in sent)
        again = c.responses.retrieve(second.id)
        assert again.id == second.id and again.output_text == second.output_text
        # a streamed answer is stored too, before response.completed reaches the client
        with c.responses.stream(model="claude", input="And again?", previous_response_id=second.id) as s:
            third = s.get_final_response()
        assert c.responses.retrieve(third.id).output_text == third.output_text
        # store: false keeps nothing; a deleted one is gone
        loose = c.responses.create(model="gpt", input="x", store=False)
        assert loose.store is False
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(loose.id)
        c.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="gpt", input="x", previous_response_id=first.id)


def test_function_call_outputs_across_stored_turns(server: ServerProcess) -> None:
    ask = "What's the weather in Paris? use get_weather"
    with client(server) as c:
        first = c.responses.create(model="gpt", input=ask, tools=[TOOL], tool_choice="required")  # type: ignore[list-item]
        call = next(o for o in first.output if o.type == "function_call")
        answer = c.responses.create(
            model="gpt",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
            tools=[TOOL],  # type: ignore[list-item]
        )
        assert answer.output_text


def test_reasoning_effort_reaches_the_upstream(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].reset()
    with client(server) as c:
        c.responses.create(model="gpt", input="think hard", reasoning={"effort": "high", "summary": "auto"})
        assert fakes["openai"].requests[-1]["body"]["reasoning_effort"] == "high"
        with pytest.raises(openai.BadRequestError) as bad:
            c.responses.create(model="gpt", input="x", reasoning={"effort": "extreme"})  # type: ignore[typeddict-item]
    assert "reasoning.effort" in str(bad.value)


@pytest.mark.compat("openai", "reasoning")
@pytest.mark.parametrize("stream", (False, True))
def test_a_thinking_tool_loop_against_claude(server: ServerProcess, fakes: dict[str, FakeServer], stream: bool) -> None:
    """reasoning.effort turns Claude's thinking on; its signed blocks come back in the reasoning
    item's encrypted_content, and sent back (as items, or through previous_response_id) they reach
    Anthropic unchanged, which the fake, like the API, requires in a tool loop."""
    ask = "What's the weather in Paris? use get_weather"
    kwargs: dict[str, object] = {"model": "claude", "tools": [TOOL], "reasoning": {"effort": "low"}}
    with client(server) as c:
        if stream:
            with c.responses.stream(input=ask, **kwargs) as s:  # type: ignore[arg-type]
                first = s.get_final_response()
        else:
            first = c.responses.create(input=ask, **kwargs)  # type: ignore[arg-type]
        reasoning = next(i for i in first.output if i.type == "reasoning")
        assert reasoning.encrypted_content and reasoning.encrypted_content.startswith("myrs1.")
        call = next(i for i in first.output if i.type == "function_call")
        sent = fakes["anthropic"].requests[-1]["body"]
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
        items = [{"role": "user", "content": ask}, *[i.model_dump(exclude_none=True) for i in first.output], result]
        again = c.responses.create(input=items, **kwargs)  # type: ignore[arg-type]
        assert again.output_text
        replayed = fakes["anthropic"].requests[-1]["body"]["messages"][1]["content"][0]
        assert replayed["type"] == "thinking" and replayed["signature"]
        chained = c.responses.create(input=[result], previous_response_id=first.id, **kwargs)  # type: ignore[arg-type]
        assert chained.output_text
        without = [i for i in items if i.get("type") != "reasoning"]
        with pytest.raises(openai.BadRequestError):  # the upstream refuses the loop without its thinking
            c.responses.create(input=without, **kwargs)  # type: ignore[arg-type]
