"""The OpenAI Responses API we serve (``POST /v1/responses``), in and out of the internal shape.

Going in:

* ``instructions`` becomes a system message;
* ``input`` (a string, or items) becomes messages: ``message`` items with ``input_text``,
  ``input_image`` and ``output_text`` parts, ``function_call`` items as an assistant's tool calls,
  ``function_call_output`` items as tool messages (each must answer a call made earlier in the
  input);
* function ``tools``, ``tool_choice``, ``max_output_tokens``, ``temperature``, ``top_p`` and
  ``text.format`` (json_schema, json_object) carry over.

Built-in tools (web_search, file_search, code_interpreter, computer_use, ...) are a 400 naming
the tool. Coming out, the answer is a ``response`` with ``reasoning``, ``message`` and
``function_call`` items, or, streamed, the event sequence ``response.created`` ...
``response.completed``. Responses are not stored yet: ``store`` is answered as false, and
``previous_response_id`` is a 400.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import orjson

from modelyard.errors import InvalidRequestError
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ContentPart,
    ForcedTool,
    Message,
    ReasoningParts,
    ResponseFormat,
    Tool,
    ToolCall,
    Usage,
)
from modelyard.wire.openai import REASONING_EFFORTS, _bad, _int, _model, _num, _options, signed_reasoning

__all__ = ["ResponsesStream", "encode_response_object", "input_items", "parse_responses_request", "response_object"]

_KNOWN = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "store",
    "previous_response_id",
    "text",
    "metadata",
    "user",
    "parallel_tool_calls",
    "reasoning",
    "truncation",
    "modelyard",
    "include",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
}


def _parts(content: Any, path: str) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(path, "expected a string or an array of content parts")
    parts: list[ContentPart] = []
    for i, p in enumerate(content):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append(ContentPart(type="text", text=str(p.get("text") or "")))
        elif kind == "input_image" and isinstance(p.get("image_url"), str):
            parts.append(ContentPart(type="image", image_url=p["image_url"], detail=p.get("detail")))
        elif kind == "refusal":
            parts.append(ContentPart(type="text", text=str(p.get("refusal") or "")))
        else:
            raise InvalidRequestError(
                f"content part type {kind!r} is not supported (input_text, input_image, output_text)",
                param=f"{path}[{i}].type",
                code="unsupported_content_part",
            )
    if all(p.type == "text" for p in parts):
        return "".join(p.text for p in parts)
    return parts


def _input(raw: Any, instructions: Any) -> list[Message]:
    out: list[Message] = []
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("instructions", "expected a string")
        out.append(Message(role="system", content=instructions))
    if isinstance(raw, str):
        out.append(Message(role="user", content=raw))
        return out
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("'input' must be a string or a non-empty array of items", param="input")
    calls: set[str] = set()
    signed: list[dict[str, Any]] = []  # an earlier answer's signed reasoning, for its next item

    def assistant(message: Message) -> Message:
        nonlocal signed
        if signed:
            message.reasoning_blocks, signed = signed, []
        out.append(message)
        return message

    for i, item in enumerate(raw):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(path, "expected an item object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"{path}.role", "expected user, assistant, system or developer")
            message = Message(role=role, content=_parts(item.get("content"), f"{path}.content"))
            if role == "assistant":
                assistant(message)
            else:
                out.append(message)
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _bad(path, "a function_call needs call_id and name")
            call = ToolCall(id=call_id, name=name, arguments=str(item.get("arguments") or "{}"))
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and last.tool_calls is not None and not last.content:
                last.tool_calls.append(call)
            else:
                assistant(Message(role="assistant", content=None, tool_calls=[call]))
            calls.add(call_id)
        elif kind == "function_call_output":
            ref = item.get("call_id")
            if ref not in calls:
                raise InvalidRequestError(
                    f"function_call_output for {ref!r} answers no function_call earlier in the input "
                    "(previous_response_id is not supported yet: send the whole conversation)",
                    param=f"{path}.call_id",
                )
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            out.append(Message(role="tool", content=text, tool_call_id=str(ref)))
        elif kind == "reasoning":
            # an earlier answer's reasoning: its summary is not sent on, but signed blocks (Anthropic
            # thinking, carried in encrypted_content) go back with the answer's next item
            sealed = item.get("encrypted_content")
            if sealed is not None:
                signed += unseal(sealed, f"{path}.encrypted_content")
        else:
            raise InvalidRequestError(
                f"input item type {kind!r} is not supported (message, function_call, function_call_output)",
                param=f"{path}.type",
            )
    return out


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _bad("tools", "expected an array of tools")
    tools: list[Tool] = []
    for i, t in enumerate(raw):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind != "function":
            raise InvalidRequestError(
                f"built-in tool {kind!r} is not available through the gateway (only function tools)",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )
        if not isinstance(t.get("name"), str):
            raise _bad(f"tools[{i}].name", "a function tool needs a name")
        tools.append(
            Tool(
                name=t["name"], description=t.get("description"), parameters=t.get("parameters"), strict=t.get("strict")
            )
        )
    return tools or None


def _tool_choice(raw: Any) -> Any:
    if raw is None or raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return ForcedTool(raw["name"])
    raise _bad("tool_choice", "expected auto, none, required or {type: function, name}")


def _format(text: Any) -> ResponseFormat | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type="json_object")
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        return ResponseFormat(type="json_schema", schema=fmt["schema"], name=fmt.get("name"), strict=fmt.get("strict"))
    raise _bad("text.format", "expected {type: text | json_object | json_schema (with a schema)}")


def parse_responses_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidRequestError(f"unknown parameter {unknown[0]!r}", param=unknown[0])
    if body.get("previous_response_id") is not None:  # the front end merges it when it can
        raise InvalidRequestError(
            "previous_response_id needs stored responses, and this gateway runs without its database: "
            "send the conversation as input",
            param="previous_response_id",
            code="unsupported_parameter",
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "expected a boolean")
    user = body.get("user")
    return ChatRequest(
        model=_model(body),
        messages=_input(body.get("input"), body.get("instructions")),
        stream=bool(stream),
        include_usage=True,
        temperature=_num(body, "temperature", 0, 2),
        top_p=_num(body, "top_p", 0, 1),
        max_tokens=_int(body, "max_output_tokens", 1),
        user=user if isinstance(user, str) else None,
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=body.get("parallel_tool_calls")
        if isinstance(body.get("parallel_tool_calls"), bool)
        else None,
        response_format=_format(body.get("text")),
        extra=_reasoning(body.get("reasoning")),
        options=_options(body),
    )


def _reasoning(value: Any) -> dict[str, Any]:
    """``reasoning.effort`` becomes chat's ``reasoning_effort`` (OpenAI-compatible and Gemini
    upstreams read it); ``reasoning.summary`` needs no translation: summaries come when the
    upstream gives its reasoning."""
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"effort", "summary", "generate_summary"}:
        raise _bad("reasoning", "expected {effort?, summary?}")
    effort = value.get("effort")
    if effort is None:
        return {}
    if effort not in REASONING_EFFORTS:
        raise _bad("reasoning.effort", f"expected one of {', '.join(REASONING_EFFORTS)}")
    return {"reasoning_effort": effort}


# -- internal shapes -> Responses JSON ------------------------------------------------------


def _usage(u: Usage | None, cost_usd: float | None) -> dict[str, Any]:
    u = u or Usage()
    out: dict[str, Any] = {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }
    if cost_usd is not None:
        out["cost_usd"] = cost_usd
    return out


def input_items(raw: Any) -> list[Any]:
    """``input`` as a list of items (a string is one user message), for storing a conversation."""
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return list(raw) if isinstance(raw, list) else []


def _shell(
    response_id: str,
    model: str,
    req: ChatRequest,
    status: str,
    created: float,
    store: bool = False,
    previous: str | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": model,
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": next((m.text() for m in req.messages if m.role == "system"), None),
        "max_output_tokens": req.max_tokens,
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "previous_response_id": previous,
        "store": store,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tool_choice": req.tool_choice
        if isinstance(req.tool_choice, str)
        else ({"type": "function", "name": req.tool_choice.name} if req.tool_choice is not None else "auto"),
        "tools": [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": t.strict,
            }
            for t in req.tools or ()
        ],
        "text": {"format": {"type": "text"}},
        "usage": None,
        "metadata": {},
    }


def response_id(request_id: str) -> str:
    return f"resp_{request_id.removeprefix('req_')[:40]}"


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


_SEAL = "myrs1."


def seal(blocks: list[dict[str, Any]]) -> str:
    """Signed reasoning blocks as a reasoning item's ``encrypted_content`` (opaque to the client,
    like OpenAI's; the signatures inside are the upstream's, which verifies them)."""
    return _SEAL + base64.urlsafe_b64encode(orjson.dumps(blocks)).decode()


def unseal(value: Any, path: str) -> list[dict[str, Any]]:
    """The blocks :func:`seal` made; [] for another gateway's or OpenAI's own encrypted reasoning
    (it cannot be replayed to another provider, so it is dropped like the summary)."""
    if not isinstance(value, str):
        raise _bad(path, "expected a string")
    if not value.startswith(_SEAL):
        return []
    try:
        blocks = orjson.loads(base64.urlsafe_b64decode(value[len(_SEAL) :]))
    except (ValueError, orjson.JSONDecodeError):
        raise _bad(path, "not reasoning this gateway sealed") from None
    if not isinstance(blocks, list):
        raise _bad(path, "not reasoning this gateway sealed")
    kept = []
    for k, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") not in ("thinking", "redacted_thinking"):
            raise _bad(f"{path}[{k}]", "not reasoning this gateway sealed")
        one = signed_reasoning(block, f"{path}[{k}]")
        if one is not None:
            kept.append(one)
    return kept


def _output(message: Message) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if message.reasoning or message.reasoning_blocks:
        item: dict[str, Any] = {
            "type": "reasoning",
            "id": _item_id("rs"),
            "summary": [{"type": "summary_text", "text": message.reasoning or ""}],
        }
        if message.reasoning_blocks:
            item["encrypted_content"] = seal(message.reasoning_blocks)
        items.append(item)
    text = message.text()
    if text or not message.tool_calls:
        items.append(
            {
                "type": "message",
                "id": _item_id("msg"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for call in message.tool_calls or ():
        items.append(
            {
                "type": "function_call",
                "id": _item_id("fc"),
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
        )
    return items


def response_object(
    resp: ChatResponse,
    req: ChatRequest,
    model: str,
    request_id: str,
    cost_usd: float,
    *,
    store: bool = False,
    previous: str | None = None,
) -> dict[str, Any]:
    created = float(resp.created or time.time())
    body = _shell(response_id(request_id), model, req, "completed", created, store, previous)
    choice = resp.choices[0] if resp.choices else None
    if choice is not None:
        body["output"] = _output(choice.message)
        if choice.finish_reason == "length":
            body["status"] = "incomplete"
            body["incomplete_details"] = {"reason": "max_output_tokens"}
    body["usage"] = _usage(resp.usage, cost_usd)
    return body


def encode_response_object(resp: ChatResponse, req: ChatRequest, model: str, request_id: str, cost_usd: float) -> bytes:
    return orjson.dumps(response_object(resp, req, model, request_id, cost_usd))


class ResponsesStream:
    """Chat chunks in, the Responses event sequence out (one per stream; pure, no I/O)."""

    def __init__(
        self, req: ChatRequest, model: str, request_id: str, *, store: bool = False, previous: str | None = None
    ) -> None:
        self.req = req
        self.store = store
        self.previous = previous
        #: the finished response object (after :meth:`end`), for storing
        self.final: dict[str, Any] | None = None
        self.model = model
        self.id = response_id(request_id)
        self.created = time.time()
        self.seq = 0
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.reasoning = ReasoningParts()

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        body = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    def start(self) -> bytes:
        shell = _shell(self.id, self.model, self.req, "in_progress", self.created, self.store, self.previous)
        return self._event("response.created", {"response": shell}) + self._event(
            "response.in_progress", {"response": shell}
        )

    def _close_open(self) -> bytes:
        item = self.open
        if item is None:
            return b""
        self.open = None
        index = self.items.index(item)
        out = b""
        if item["type"] == "message":
            text = item["content"][0]["text"]
            out += self._event(
                "response.output_text.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "text": text, "logprobs": []},
            )
            out += self._event(
                "response.content_part.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "part": item["content"][0]},
            )
        elif item["type"] == "reasoning":
            text = item["summary"][0]["text"]
            out += self._event(
                "response.reasoning_summary_text.done",
                {"item_id": item["id"], "output_index": index, "summary_index": 0, "text": text},
            )
        elif item["type"] == "function_call":
            out += self._event(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": item["arguments"], "name": item["name"]},
            )
        item["status"] = "completed"
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def _add(self, item: dict[str, Any]) -> bytes:
        out = self._close_open()
        self.items.append(item)
        self.open = item
        index = len(self.items) - 1
        added = dict(item)
        out += self._event("response.output_item.added", {"output_index": index, "item": added})
        if item["type"] == "message":
            out += self._event(
                "response.content_part.added",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                },
            )
        return out

    def feed(self, chunk: ChatChunk) -> bytes:
        out = b""
        if chunk.usage is not None:
            self.usage = chunk.usage
        for d in chunk.choices:
            if d.index != 0:
                continue
            signature = d.reasoning_signature is not None or d.redacted_reasoning
            if d.reasoning or signature:
                if self.open is None or self.open["type"] != "reasoning":
                    out += self._add(
                        {"type": "reasoning", "id": _item_id("rs"), "summary": [{"type": "summary_text", "text": ""}]}
                    )
                assert self.open is not None
                self.reasoning.feed(d)
                if signature:
                    self.open["encrypted_content"] = seal(self.reasoning.blocks)
            if d.reasoning:
                assert self.open is not None
                self.open["summary"][0]["text"] += d.reasoning
                out += self._event(
                    "response.reasoning_summary_text.delta",
                    {
                        "item_id": self.open["id"],
                        "output_index": len(self.items) - 1,
                        "summary_index": 0,
                        "delta": d.reasoning,
                    },
                )
            if d.content:
                if self.open is None or self.open["type"] != "message":
                    out += self._add(
                        {
                            "type": "message",
                            "id": _item_id("msg"),
                            "status": "in_progress",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": "", "annotations": []}],
                        }
                    )
                assert self.open is not None
                self.open["content"][0]["text"] += d.content
                out += self._event(
                    "response.output_text.delta",
                    {
                        "item_id": self.open["id"],
                        "output_index": len(self.items) - 1,
                        "content_index": 0,
                        "delta": d.content,
                        "logprobs": [],
                    },
                )
            for call in d.tool_calls or ():
                item = self.calls.get(call.index)
                if item is None:
                    item = {
                        "type": "function_call",
                        "id": _item_id("fc"),
                        "call_id": call.id or _item_id("call"),
                        "name": call.name or "",
                        "arguments": "",
                        "status": "in_progress",
                    }
                    self.calls[call.index] = item
                    out += self._add(item)
                if call.arguments:
                    item["arguments"] += call.arguments
                    out += self._event(
                        "response.function_call_arguments.delta",
                        {"item_id": item["id"], "output_index": self.items.index(item), "delta": call.arguments},
                    )
            if d.finish_reason is not None:
                self.finish = d.finish_reason
        return out

    def end(self, cost_usd: float | None) -> bytes:
        out = self._close_open()
        body = _shell(self.id, self.model, self.req, "completed", self.created, self.store, self.previous)
        body["output"] = self.items
        body["usage"] = _usage(self.usage, cost_usd)
        if self.finish == "length":
            body["status"] = "incomplete"
            body["incomplete_details"] = {"reason": "max_output_tokens"}
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        self.final = body
        return out + self._event(kind, {"response": body})

    def failed(self, error: dict[str, Any]) -> bytes:
        body = _shell(self.id, self.model, self.req, "failed", self.created)
        body["output"] = self.items
        body["error"] = error
        return self._event("response.failed", {"response": body})
