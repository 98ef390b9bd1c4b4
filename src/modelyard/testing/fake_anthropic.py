"""A fake Anthropic Messages API: ``/v1/messages``, ``/v1/messages/count_tokens``, ``/v1/models``.

It checks what the real API checks (an API key in ``x-api-key``, or as ``Authorization: Bearer``
as anthropic SDK 2.x sends it, else 401 ``authentication_error``; the
``anthropic-version`` header; ``model``, ``max_tokens`` and ``messages``; roles ``user`` /
``assistant`` only; non-empty content; ``tool_result`` blocks answering the ``tool_use``
blocks of the previous turn, and every ``tool_use`` answered in the next one), answers with
the real response and event-stream shapes, and applies injected faults (see
:mod:`._fake_base`).  Consecutive messages of one role are combined, as the real API does.

Anthropic-specific fault uses (``code`` without ``status``):

* ``code="refusal"``: the answer stops with ``stop_reason: "refusal"``;
* ``code="<anthropic error type>"`` (``overloaded_error``, ``api_error``, ...): streamed
  requests get an in-band ``event: error`` after ``message_start``; others get the HTTP error.

Extended thinking: with ``thinking: {type: enabled, budget_tokens}`` (at least 1024, below
``max_tokens``) the answer starts with a ``thinking`` block signed by the fake (and a
``redacted_thinking`` block when the prompt holds Anthropic's documented trigger string
:data:`REDACTED_TRIGGER`).  Thinking blocks sent back must carry the fake's own signature (400
"Invalid `signature`" otherwise), and, as the real API requires, with thinking enabled the
assistant turn answered by tool results must start with a thinking block. A model without
extended thinking (Claude 3.5 and older) answers ``thinking`` with the API's 400.

Prompt caching: when the request carries a ``cache_control`` marker (top level, on a system
block, a message block or a tool) and the prompt has at least 1024 tokens, the first request
reports ``cache_creation_input_tokens`` and identical later ones ``cache_read_input_tokens``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from typing import Any

import orjson
from aiohttp import web

from modelyard.testing._fake_base import FakeServer, Prompt, Reply, _default_message, count_tokens, make_reply

__all__ = ["REDACTED_TRIGGER", "FakeAnthropic", "thinking_signature"]

#: the prompt string that makes the real API answer with a redacted_thinking block (documented)
REDACTED_TRIGGER = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253D5E2D82641AC0E52CC2876CB"
)
_REDACTED_PREFIX = b"fake-redacted-thinking:"
#: models without extended thinking (Claude 3.7 Sonnet has it): ``thinking`` is a 400 for them
_NO_THINKING = ("claude-3", "claude-2", "claude-instant")
#: models that think only with a budget (``type: "enabled"``; no adaptive thinking, no effort)
_BUDGET_ONLY = (
    "claude-3-7",
    "claude-sonnet-4-5",
    "claude-opus-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-opus-4-0",
    "claude-sonnet-4-0",
    "claude-opus-4-2025",
    "claude-sonnet-4-2025",
)
#: models with both: Claude 4.6 (``enabled`` deprecated there); any other model is adaptive only
_BOTH = ("claude-opus-4-6", "claude-sonnet-4-6")
_EFFORTS = ("low", "medium", "high", "xhigh", "max")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_TYPE_STATUS = {v: k for k, v in _ERROR_TYPES.items()}
_MESSAGES = {
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "The requested resource could not be found.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed your organization's rate limit. Please try again later.",
    500: "Internal server error",
    529: "Overloaded",
}
_MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_MIN_CACHEABLE = 1024


class FakeAnthropic(FakeServer):
    """Fake Anthropic API. Point a provider's ``base_url`` (or the SDK's) at :attr:`base_url`."""

    kind = "anthropic"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: list[str] | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(host, port)
        self.models = models or ["claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5-20251001"]
        #: when set, requests must carry exactly this key
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return self.url

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model_id}", self.get_model)

    def error_response(self, status: int, message: str, code: str | None) -> web.Response:
        etype = code if code in _TYPE_STATUS else None
        if etype is None:
            etype = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        if message == _default_message(status, code):
            message = _anthropic_message(status, code)
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        resp = self.json(
            {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}, status
        )
        resp.headers["request-id"] = request_id
        return resp

    # -- endpoints -----------------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.Response:
        self._check_headers(request)
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise self.bad_request("limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise self.bad_request("limit: Input should be between 1 and 1000")
        ids = list(self.models)
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after in ids:
            ids = ids[ids.index(after) + 1 :]
        if before in ids:
            ids = ids[: ids.index(before)]
        page = ids[:limit]
        data = [_model_info(m) for m in page]
        return self.json(
            {
                "data": data,
                "has_more": len(ids) > limit,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def get_model(self, request: web.Request) -> web.Response:
        self._check_headers(request)
        model_id = request.match_info["model_id"]
        if model_id not in self.models:
            raise self.bad_request(f"model: {model_id}", status=404)
        return self.json(_model_info(model_id))

    async def count_tokens(self, request: web.Request) -> web.Response:
        self._check_headers(request)
        body = await self.read_json(request)
        prompt, _ = self._validate(body, need_max_tokens=False)
        await self.begin(request, prompt.model, body)
        return self.json({"input_tokens": make_reply(prompt).input_tokens})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self._check_headers(request)
        body = await self.read_json(request)
        prompt, cacheable = self._validate(body, need_max_tokens=True)
        fault = await self.begin(request, prompt.model, body)
        stream = bool(body.get("stream"))
        in_band = fault.code if fault is not None and fault.code in _TYPE_STATUS else None
        if in_band is not None and not stream:
            status = _TYPE_STATUS[in_band]
            raise self.bad_request(
                fault.message if fault and fault.message else _anthropic_message(status, None), in_band, status
            )
        seen = self.seen_before([body.get("system"), body.get("messages"), body.get("tools")])
        reply = make_reply(prompt, script=self.scripted(prompt))
        message = _message(prompt, reply, cacheable=cacheable, seen=seen, one_hour=_one_hour(body))
        if fault is not None and fault.code == "refusal":
            message["content"] = []
            message["stop_reason"] = "refusal"
            message["stop_details"] = {"type": "refusal", "category": None, "explanation": None}
        if not stream:
            return self.json(message)
        frames = _stream_frames(message)
        if in_band is not None:
            err = {"type": in_band, "message": (fault.message if fault else None) or _anthropic_message(0, in_band)}
            frames = [frames[0], _sse("error", {"type": "error", "error": err})]
            return await self.write_stream(request, frames, fault, terminal=None, malformed=b"")
        return await self.write_stream(
            request,
            frames[:-1],
            fault,
            terminal=frames[-1],
            malformed=b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n',
        )

    # -- validation ----------------------------------------------------------------------

    def _check_headers(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        if not key:  # recent SDKs (anthropic >= 2) send the API key as a bearer token
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise self.bad_request("x-api-key header is required", "authentication_error", 401)
        if self.api_key is not None and key != self.api_key:
            raise self.bad_request("invalid x-api-key", "authentication_error", 401)
        if not request.headers.get("anthropic-version"):
            raise self.bad_request("anthropic-version: header is required")

    def _validate(self, body: Any, *, need_max_tokens: bool) -> tuple[Prompt, bool]:
        """What the request asks, and whether it carries a cache_control marker."""
        if not isinstance(body, dict):
            raise self.bad_request("Input should be a valid dictionary or object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise self.bad_request("model: Field required")
        prompt = Prompt(model=model)
        cacheable = "cache_control" in body
        if need_max_tokens:
            max_tokens = body.get("max_tokens")
            if max_tokens is None:
                raise self.bad_request("max_tokens: Field required")
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
                raise self.bad_request("max_tokens: Input should be a valid integer greater than or equal to 0")
            prompt.max_tokens = max_tokens
        texts: list[str] = []
        system = body.get("system")
        if isinstance(system, str):
            texts.append(system)
        elif isinstance(system, list):
            for j, block in enumerate(system):
                if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                    raise self.bad_request(f"system.{j}: Input should be a valid text block")
                cacheable = cacheable or "cache_control" in block
                texts.append(block["text"])
        elif system is not None:
            raise self.bad_request("system: Input should be a valid string or a list of text blocks")
        turns = self._turns(body.get("messages"))
        prompt.message_count = len(turns)
        pending: set[str] = set()  # tool_use ids of the previous (assistant) turn
        for i, (role, blocks) in enumerate(turns):
            text = result_text = ""
            uses: set[str] = set()
            has_result = False
            for j, block in enumerate(blocks):
                where = f"messages.{i}.content.{j}"
                cacheable = cacheable or "cache_control" in block
                btype = block.get("type")
                if btype == "text":
                    value = block.get("text")
                    if not isinstance(value, str) or not value.strip():
                        raise self.bad_request(f"{where}.text: text content blocks must contain non-whitespace text")
                    text += value
                elif btype == "image":
                    self._check_image(block.get("source"), where)
                    prompt.image_count += 1
                elif btype == "tool_use":
                    if role != "assistant":
                        raise self.bad_request(f"{where}: tool_use blocks can only be in assistant messages")
                    if not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict):
                        raise self.bad_request(f"{where}: tool_use blocks need an id, a name and an input object")
                    uses.add(str(block["id"]))
                elif btype == "tool_result":
                    if role != "user":
                        raise self.bad_request(f"{where}: tool_result blocks can only be in user messages")
                    if block.get("tool_use_id") not in pending:
                        raise self.bad_request(
                            f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                            f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                            "`tool_use` block in the previous message."
                        )
                    if any(b.get("type") != "tool_result" for b in blocks[:j]):
                        raise self.bad_request(
                            f"messages.{i}: tool_result blocks must come first in the content, before any other block"
                        )
                    has_result = True
                    result_text += self._tool_result_text(block.get("content"), where)
                elif btype == "thinking":
                    signature = block.get("signature")
                    if role != "assistant" or not isinstance(block.get("thinking"), str):
                        raise self.bad_request(f"{where}: thinking blocks can only be in assistant messages")
                    if signature != thinking_signature(block["thinking"]):
                        raise self.bad_request(f"{where}: Invalid `signature` in `thinking` block")
                elif btype == "redacted_thinking":
                    if role != "assistant" or not _redacted_ok(block.get("data")):
                        raise self.bad_request(f"{where}: Invalid `data` in `redacted_thinking` block")
                elif btype == "document":
                    pass
                else:
                    raise self.bad_request(f"{where}.type: Input tag {btype!r} does not match any of the expected tags")
            if pending and role == "user":
                missing = pending - {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
                if missing:
                    raise self.bad_request(
                        f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                        f"after: {', '.join(sorted(missing))}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message."
                    )
            if role == "user":
                prompt.has_tool_result = has_result
                if text or not has_result:
                    prompt.last_user_text = text
            pending = uses
            texts += [result_text, text]
        self._thinking(body, prompt, turns)
        if turns and turns[-1][0] == "assistant":
            last = turns[-1][1][-1]
            if last.get("type") == "text" and last["text"] != last["text"].rstrip():
                raise self.bad_request("final assistant content cannot end with trailing whitespace")
        prompt.all_text = " ".join(t for t in texts if t)
        stops = body.get("stop_sequences")
        if stops is not None:
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise self.bad_request("stop_sequences: Input should be a valid list of strings")
            prompt.stop = stops
        model = str(body.get("model") or "")
        if not model.startswith(_BUDGET_ONLY + _BOTH + _NO_THINKING):  # Claude Opus 4.7 and later
            for key in ("temperature", "top_p", "top_k"):
                value = body.get(key)
                if value is not None and (key == "top_k" or value != 1):
                    raise self.bad_request(f"`{key}` is deprecated for this model.")
        for key, high in (("temperature", 1.0), ("top_p", 1.0)):
            value = body.get(key)
            if value is not None and (not isinstance(value, int | float) or not 0 <= value <= high):
                raise self.bad_request(f"{key}: range: 0..{high}")
        cacheable = self._tools(body, prompt) or cacheable
        self._output_config(body, prompt)
        user_id = (body.get("metadata") or {}).get("user_id")
        if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 256):
            raise self.bad_request("metadata.user_id: String should have at most 256 characters")
        return prompt, cacheable

    def _turns(self, messages: Any) -> list[tuple[str, list[dict[str, Any]]]]:
        """The conversation as (role, content blocks), consecutive same-role messages combined."""
        if messages is None:
            raise self.bad_request("messages: Field required")
        if not isinstance(messages, list):
            raise self.bad_request("messages: Input should be a valid list")
        if not messages:
            raise self.bad_request("messages: at least one message is required")
        turns: list[tuple[str, list[dict[str, Any]]]] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise self.bad_request(f"messages.{i}: Input should be a valid dictionary")
            role = m.get("role")
            if role not in ("user", "assistant"):
                raise self.bad_request(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = m.get("content")
            if isinstance(content, str):
                blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
            elif isinstance(content, list) and all(isinstance(b, dict) for b in content):
                blocks = list(content)
            else:
                raise self.bad_request(f"messages.{i}.content: Input should be a valid string or list of blocks")
            if not blocks and not (role == "assistant" and i == len(messages) - 1):
                raise self.bad_request(
                    f"messages.{i}: all messages must have non-empty content except for the optional final "
                    "assistant message"
                )
            if turns and turns[-1][0] == role:
                turns[-1][1].extend(blocks)
            elif blocks:
                turns.append((role, blocks))
        return turns

    def _check_image(self, source: Any, where: str) -> None:
        if not isinstance(source, dict):
            raise self.bad_request(f"{where}.source: Field required")
        if source.get("type") == "base64":
            if source.get("media_type") not in _MEDIA_TYPES:
                raise self.bad_request(
                    f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' "
                    "or 'image/webp'"
                )
            if not isinstance(source.get("data"), str) or not source["data"]:
                raise self.bad_request(f"{where}.source.base64.data: Field required")
        elif source.get("type") == "url":
            url = source.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise self.bad_request(f"{where}.source.url.url: Input should be a valid URL")
        else:
            raise self.bad_request(f"{where}.source.type: Input should be 'base64' or 'url'")

    def _tool_result_text(self, content: Any, where: str) -> str:
        if content is None or isinstance(content, str):
            return content or ""
        if not isinstance(content, list):
            raise self.bad_request(f"{where}.content: Input should be a valid string or list of blocks")
        text = ""
        for k, block in enumerate(content):
            btype = block.get("type") if isinstance(block, dict) else None
            if btype == "text":
                text += str(block.get("text") or "")
            elif btype == "image":
                self._check_image(block.get("source"), f"{where}.content.{k}")
            else:
                raise self.bad_request(f"{where}.content.{k}.type: Input should be 'text' or 'image'")
        return text

    def _tools(self, body: dict[str, Any], prompt: Prompt) -> bool:
        cacheable = False
        tools = body.get("tools")
        names: list[str] = []
        if tools is not None:
            if not isinstance(tools, list):
                raise self.bad_request("tools: Input should be a valid list")
            for k, tool in enumerate(tools):
                if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                    raise self.bad_request(f"tools.{k}.name: Field required")
                if not _TOOL_NAME.match(tool["name"]):
                    raise self.bad_request(
                        f"tools.{k}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                    )
                schema = tool.get("input_schema")
                if not isinstance(schema, dict):
                    raise self.bad_request(f"tools.{k}.custom.input_schema: Field required")
                if schema.get("type") != "object":
                    raise self.bad_request(f"tools.{k}.custom.input_schema.type: Input should be 'object'")
                if tool["name"] in names:
                    raise self.bad_request("tools: Tool names must be unique.")
                names.append(tool["name"])
                cacheable = cacheable or "cache_control" in tool
                prompt.tools.append((tool["name"], schema))
        choice = body.get("tool_choice")
        if choice is not None:
            ctype = choice.get("type") if isinstance(choice, dict) else None
            if ctype not in ("auto", "any", "tool", "none"):
                raise self.bad_request("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
            if ctype == "tool":
                if choice.get("name") not in names:
                    raise self.bad_request(f"tool_choice: tool {choice.get('name')!r} is not among the provided tools")
                prompt.tool_choice = str(choice["name"])
            elif ctype == "any":
                prompt.tool_choice = "required"
            elif ctype == "none":
                prompt.tool_choice = "none"
            if ctype in ("any", "tool"):  # the API forces a tool call, even after tool results
                prompt.has_tool_result = False
        return cacheable

    def _thinking(self, body: dict[str, Any], prompt: Prompt, turns: list[tuple[str, list[dict[str, Any]]]]) -> None:
        config = body.get("thinking")
        if config is None or (isinstance(config, dict) and config.get("type") == "disabled"):
            return
        kind = config.get("type") if isinstance(config, dict) else None
        if kind not in ("enabled", "adaptive"):
            raise self.bad_request("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
        assert isinstance(config, dict)
        model = str(body.get("model") or "")
        if model.startswith(_NO_THINKING) and not model.startswith("claude-3-7"):
            raise self.bad_request(f"'{model}' does not support thinking.")  # the real API's words
        if kind == "adaptive" and model.startswith(_BUDGET_ONLY):
            raise self.bad_request(f"'{model}' does not support adaptive thinking.")
        if kind == "enabled" and not model.startswith(_BUDGET_ONLY + _BOTH):
            raise self.bad_request(
                '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
                '"output_config.effort" to control thinking behavior.'
            )
        # what thinking cannot be combined with (the API's feature compatibility)
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            raise self.bad_request("`temperature` may only be set to 1 when thinking is enabled.")
        if body.get("top_k") is not None:
            raise self.bad_request("`top_k` is not supported when thinking is enabled.")
        top_p = body.get("top_p")
        if isinstance(top_p, int | float) and top_p < 0.95:
            raise self.bad_request("`top_p` must be greater than or equal to 0.95 when thinking is enabled.")
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
            raise self.bad_request("Thinking may not be enabled when tool_choice forces tool use.")
        if turns and turns[-1][0] == "assistant":
            raise self.bad_request("Prefilling the assistant message is not supported when thinking is enabled.")
        if kind == "adaptive":
            prompt.thinking_budget = 1  # the model decides how much
            return
        budget = config.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
            raise self.bad_request("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if prompt.max_tokens is not None and budget >= prompt.max_tokens:
            raise self.bad_request("`max_tokens` must be greater than `thinking.budget_tokens`")
        prompt.thinking_budget = budget
        last = len(turns) - 1
        if last >= 1 and any(b.get("type") == "tool_result" for b in turns[last][1]):
            first = turns[last - 1][1][0].get("type")
            if first not in ("thinking", "redacted_thinking"):
                raise self.bad_request(
                    f"messages.{last - 1}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                    f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking "
                    "block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
                    "include thinking blocks from previous turns. To avoid this requirement, disable `thinking`."
                )

    def _output_config(self, body: dict[str, Any], prompt: Prompt) -> None:
        config = body.get("output_config") or {}
        effort = config.get("effort")
        if effort is not None:
            model = str(body.get("model") or "")
            if effort not in _EFFORTS:
                raise self.bad_request(
                    "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
                )
            if model.startswith(_BUDGET_ONLY) or (
                model.startswith(_NO_THINKING) and not model.startswith("claude-3-7")
            ):
                raise self.bad_request(f"'{model}' does not support the effort parameter.")
            if effort == "xhigh" and model.startswith(_BOTH):
                raise self.bad_request(f"output_config.effort: 'xhigh' is not supported by '{model}'.")
            prompt.effort = effort
        fmt = config.get("format")
        if fmt is None:
            return
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise self.bad_request("output_config.format: expected {type: 'json_schema', schema: {...}}")
        prompt.json_schema = fmt["schema"]


# -- response shapes ---------------------------------------------------------------------


def thinking_signature(text: str) -> str:
    """The fake's signature of a thinking block's text (the real one is opaque too)."""
    return base64.b64encode(b"fake-sig:" + hashlib.sha256(text.encode()).digest()).decode()


def _redacted_ok(data: Any) -> bool:
    try:
        return isinstance(data, str) and base64.b64decode(data, validate=True).startswith(_REDACTED_PREFIX)
    except ValueError:
        return False


def _thinking_blocks(prompt: Prompt) -> list[dict[str, Any]]:
    if not prompt.thinking_budget:
        return []
    text = f"The user asks: {prompt.last_user_text or 'a follow-up'}. I will answer briefly."
    blocks: list[dict[str, Any]] = [{"type": "thinking", "thinking": text, "signature": thinking_signature(text)}]
    if REDACTED_TRIGGER in prompt.all_text:
        data = base64.b64encode(_REDACTED_PREFIX + uuid.uuid4().bytes).decode()
        blocks.append({"type": "redacted_thinking", "data": data})
    return blocks


def _anthropic_message(status: int, code: str | None) -> str:
    if code == "context_length_exceeded":
        return "prompt is too long: 212345 tokens > 200000 maximum"
    if code == "content_policy_violation":
        return "Output blocked by content filtering policy"
    if code in _TYPE_STATUS:
        status = _TYPE_STATUS[code]
    return _MESSAGES.get(status, _default_message(status, None))


def _model_info(model: str) -> dict[str, Any]:
    parts = [p for p in model.removeprefix("claude-").split("-") if not (p.isdigit() and len(p) == 8)]  # no date
    words = [p.title() for p in parts if not p.isdigit()]
    version = ".".join(p for p in parts if p.isdigit())
    name = " ".join(words + ([version] if version else []))
    return {
        "type": "model",
        "id": model,
        "display_name": f"Claude {name}",
        "created_at": "2025-09-29T00:00:00Z",
        "max_input_tokens": 200000,
        "max_tokens": 64000,
        "lifecycle": "active",
    }


def _one_hour(value: Any) -> bool:
    """Whether any cache_control marker in the request asks for the 1 h lifetime."""
    if isinstance(value, dict):
        mark = value.get("cache_control")
        if isinstance(mark, dict) and mark.get("ttl") == "1h":
            return True
        return any(_one_hour(v) for v in value.values() if isinstance(v, dict | list))
    if isinstance(value, list):
        return any(_one_hour(v) for v in value)
    return False


def _usage(reply: Reply, *, cacheable: bool, seen: bool, one_hour: bool = False) -> dict[str, Any]:
    prefix = (reply.input_tokens // 128) * 128 if cacheable and reply.input_tokens >= _MIN_CACHEABLE else 0
    read, write = (prefix, 0) if seen else (0, prefix)
    return {
        "input_tokens": reply.input_tokens - prefix,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if one_hour else write,
            "ephemeral_1h_input_tokens": write if one_hour else 0,
        },
        "output_tokens": reply.output_tokens,
        "service_tier": "standard",
    }


def _stop(prompt: Prompt, reply: Reply) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a reply."""
    if reply.finish == "stop" and prompt.stop and reply.text is not None:
        full = make_reply(Prompt(**{**_fields(prompt), "stop": ()})).text or ""
        hits = [(full.index(s), s) for s in prompt.stop if s and s in full]
        if hits:
            return "stop_sequence", min(hits)[1]
    return _STOP_REASONS[reply.finish], None


def _fields(prompt: Prompt) -> dict[str, Any]:
    return {name: getattr(prompt, name) for name in Prompt.__dataclass_fields__}


def _message(prompt: Prompt, reply: Reply, *, cacheable: bool, seen: bool, one_hour: bool = False) -> dict[str, Any]:
    content = _thinking_blocks(prompt)
    reply.output_tokens += sum(count_tokens(b.get("thinking", "")) for b in content)
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for call_id, name, args in reply.tool_calls:
        content.append(
            {"type": "tool_use", "id": "toolu_" + call_id.removeprefix("call_"), "name": name, "input": args}
        )
    stop_reason, stop_sequence = _stop(prompt, reply)
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(reply, cacheable=cacheable, seen=seen, one_hour=one_hour),
    }


def _stream_frames(message: dict[str, Any]) -> list[bytes]:
    """The event stream of a whole message; the last frame is ``message_stop``."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    head = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    head.pop("stop_details", None)
    frames = [_sse("message_start", {"type": "message_start", "message": head})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w} for w in [words[0]] + [" " + w for w in words[1:]]]
        elif block["type"] == "thinking":
            start = {"type": "thinking", "thinking": ""}
            words = block["thinking"].split(" ")
            deltas = [{"type": "thinking_delta", "thinking": w} for w in [words[0]] + [" " + w for w in words[1:]]]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "redacted_thinking":
            start, deltas = block, []
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            args = orjson.dumps(block["input"]).decode()
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": args[k : k + 8]} for k in range(0, len(args), 8)]
        frames.append(
            _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        )
        if index == 0:
            frames.append(_sse("ping", {"type": "ping"}))
        frames += [
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
        ]
        frames.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta: dict[str, Any] = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    if "stop_details" in message:
        delta["stop_details"] = message["stop_details"]
    frames.append(
        _sse(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}},
        )
    )
    frames.append(_sse("message_stop", {"type": "message_stop"}))
    return frames


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
