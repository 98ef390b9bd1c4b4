"""A fake OpenAI (and OpenAI-compatible) server: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

It validates requests the way the real API does (400 with OpenAI's error JSON), answers with
the real response and chunk shapes, and applies injected faults (see :mod:`._fake_base`).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from modelyard.testing._fake_base import (
    FakeServer,
    Prompt,
    Reply,
    count_tokens,
    embedding_base64,
    fake_embedding,
    make_reply,
)

__all__ = ["FakeOpenAI"]

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
#: OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and later, not the gpt-5 chat models)
_REASONING = re.compile(r"^(o[1-9](?![0-9])|gpt-([5-9]|\d{2,})(?![0-9])(?!.*-chat))")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


class FakeOpenAI(FakeServer):
    """Fake OpenAI-compatible API. Point a provider's ``base_url`` at :attr:`base_url`."""

    kind = "openai"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, models: list[str] | None = None) -> None:
        super().__init__(host, port)
        self.models = models or ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.list_models)

    def error_response(self, status: int, message: str, code: str | None) -> web.Response:
        etype = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return self.json({"error": {"message": message, "type": etype, "param": None, "code": code}}, status)

    # -- endpoints -----------------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]
        return self.json({"object": "list", "data": data})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self.read_json(request)
        prompt = self._validate_chat(body)
        fault = await self.begin(request, prompt.model, body)
        n = int(body.get("n") or 1)
        reply = make_reply(prompt, seen_before=self.seen_before(body.get("messages")), script=self.scripted(prompt))
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        usage = _usage(reply, n)
        if not body.get("stream"):
            choices = [_choice(i, reply, bool(body.get("logprobs"))) for i in range(n)]
            return self.json(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": prompt.model,
                    "system_fingerprint": "fp_fake",
                    "choices": choices,
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        frames = [
            _sse(c) for c in _stream_chunks(cid, created, prompt.model, reply, n, usage if include_usage else None)
        ]
        return await self.write_stream(
            request,
            frames,
            fault,
            terminal=b"data: [DONE]\n\n",
            malformed=b'data: {"id": "broken", "choices": [{"delta": \n\n',
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self.read_json(request)
        if not isinstance(body, dict) or not body.get("model"):
            raise self.bad_request("you must provide a model parameter")
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            inputs: list[Any] = [raw_input]
        elif isinstance(raw_input, list) and raw_input:
            inputs = raw_input if not isinstance(raw_input[0], int) else [raw_input]
        else:
            raise self.bad_request("'input' must be a string or a non-empty array", "invalid_input")
        await self.begin(request, body["model"], body)
        dims = int(body.get("dimensions") or 16)
        fmt = body.get("encoding_format") or "float"
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(str(t) for t in item)
            tokens += count_tokens(text) if isinstance(item, str) else len(item)
            vec = fake_embedding(text, dims)
            data.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": embedding_base64(vec) if fmt == "base64" else vec,
                }
            )
        return self.json(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -- validation ----------------------------------------------------------------------

    def _reasoning_rules(self, body: dict[str, Any]) -> None:
        """What OpenAI's reasoning models refuse, in the API's words."""
        if "max_tokens" in body:
            raise self.unsupported(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        for key in ("presence_penalty", "frequency_penalty"):
            if key in body:
                raise self.unsupported(
                    f"Unsupported parameter: '{key}' is not supported with this model.", key, "unsupported_parameter"
                )
        if body.get("reasoning_effort") == "none":
            return
        for key in ("temperature", "top_p"):
            value = body.get(key)
            if value is not None and value != 1:
                raise self.unsupported(
                    f"Unsupported value: '{key}' does not support {value} with this model. "
                    "Only the default (1) value is supported.",
                    key,
                    "unsupported_value",
                )

    def unsupported(self, message: str, param: str, code: str) -> Exception:
        """A 400 naming the parameter, as the API's ``unsupported_*`` errors do."""
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        return self.answer_with(self.json(body, status=400))

    def _validate_chat(self, body: Any) -> Prompt:
        if not isinstance(body, dict):
            raise self.bad_request("request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise self.bad_request("you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise self.bad_request("'messages' must be a non-empty array", "invalid_value")
        prompt = Prompt(model=model, message_count=len(messages))
        texts: list[str] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise self.bad_request(f"Invalid value for 'messages[{i}].role'", "invalid_value")
            content = m.get("content")
            text = ""
            if isinstance(content, str):
                text = content
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    ptype = part.get("type") if isinstance(part, dict) else None
                    if ptype == "text":
                        text += str(part.get("text", ""))
                    elif ptype == "image_url":
                        url = (part.get("image_url") or {}).get("url")
                        if not isinstance(url, str) or not url:
                            raise self.bad_request(f"messages[{i}].content[{j}].image_url.url is required")
                        prompt.image_count += 1
                    else:
                        raise self.bad_request(f"Invalid content part type at messages[{i}].content[{j}]")
            elif content is None and not (m["role"] == "assistant" and m.get("tool_calls")):
                raise self.bad_request(f"messages[{i}].content is required", "invalid_value")
            if m["role"] == "tool":
                if not m.get("tool_call_id"):
                    raise self.bad_request(f"messages[{i}].tool_call_id is required")
                prompt.has_tool_result = True
            elif m["role"] == "user":
                prompt.last_user_text = text
                prompt.has_tool_result = False
            texts.append(text)
        prompt.all_text = " ".join(texts)
        last = messages[-1]
        if last.get("role") == "assistant" and isinstance(last.get("content"), str) and not last.get("tool_calls"):
            prompt.prefill = last["content"]
        if _REASONING.match(model.rsplit("/", 1)[-1].lower()):
            self._reasoning_rules(body)
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise self.bad_request(f"Invalid '{key}': must be a positive integer", "invalid_value")
                prompt.max_tokens = value
        n = body.get("n")
        if n is not None and (not isinstance(n, int) or n < 1 or n > 128):
            raise self.bad_request("Invalid 'n': must be an integer between 1 and 128", "invalid_value")
        stop = body.get("stop")
        if stop is not None:
            prompt.stop = [stop] if isinstance(stop, str) else list(stop)
        for tool in body.get("tools") or []:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or tool.get("type") != "function" or not fn.get("name"):
                raise self.bad_request("Invalid tool: expected {type: 'function', function: {name, ...}}")
            prompt.tools.append((fn["name"], fn.get("parameters") or {}))
        choice = body.get("tool_choice")
        if isinstance(choice, str):
            prompt.tool_choice = choice
        elif isinstance(choice, dict):
            prompt.tool_choice = (choice.get("function") or {}).get("name") or "auto"
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_object":
            prompt.json_mode = True
        elif fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise self.bad_request("response_format.json_schema.schema is required")
            prompt.json_schema = schema
        return prompt


def _usage(reply: Reply, n: int) -> dict[str, Any]:
    completion = reply.output_tokens * n
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": completion,
        "total_tokens": reply.input_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
        for cid, name, args in reply.tool_calls
    ]


def _logprobs(reply: Reply) -> dict[str, Any]:
    return {
        "content": [
            {"token": p, "logprob": -0.1, "bytes": list(p.encode()), "top_logprobs": []} for p in reply.pieces()
        ],
        "refusal": None,
    }


def _choice(index: int, reply: Reply, logprobs: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = _tool_calls(reply)
    return {
        "index": index,
        "message": message,
        "logprobs": _logprobs(reply) if logprobs else None,
        "finish_reason": reply.finish,
    }


def _stream_chunks(
    cid: str, created: int, model: str, reply: Reply, n: int, usage: dict[str, Any] | None
) -> list[dict[str, Any]]:
    # As OpenAI sends them: ``service_tier``, ``logprobs: null`` in each choice, ``usage: null`` in
    # every chunk but the last when usage was asked for, and ``obfuscation`` padding on content deltas.
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [{**c, "logprobs": None} for c in choices],
        }
        if usage is not None:
            out["usage"] = None
        if choices and choices[0]["delta"].get("content"):
            out["obfuscation"] = "x" * (len(choices[0]["delta"]["content"]) % 7 + 3)
        out.update(extra)
        return out

    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
    for i in range(n):
        for piece in reply.pieces():
            out.append(chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}]))
        for t, call in enumerate(_tool_calls(reply)):
            head = {
                "index": t,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            out.append(chunk([{"index": i, "delta": {"tool_calls": [head]}, "finish_reason": None}]))
            args = call["function"]["arguments"]
            for k in range(0, len(args), 8):
                frag = {"index": t, "function": {"arguments": args[k : k + 8]}}
                out.append(chunk([{"index": i, "delta": {"tool_calls": [frag]}, "finish_reason": None}]))
        out.append(chunk([{"index": i, "delta": {}, "finish_reason": reply.finish}]))
    if usage is not None:
        out.append(chunk([], usage=usage))
    return out


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"
