"""Google Gemini API (Google AI ``generativelanguage.googleapis.com``, ``v1beta``) wire format.

Endpoints: ``models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``,
``:batchEmbedContents`` and ``GET models`` (paged).  The credential goes in ``x-goog-api-key``.

Translation notes:

* system/developer messages become ``systemInstruction``; assistant turns are role ``model``;
  tool results are ``functionResponse`` parts in a ``user`` turn, named after the function of the
  assistant tool call they answer; consecutive turns of the same role are merged.
* Gemini gives function calls no ids (newer models may): modelyard makes ``call_...`` ids.  Gemini 3
  attaches an opaque ``thoughtSignature`` to function-call parts that must be sent back with the
  call on the next turn; it travels inside the tool call id (``<id>__thought__<signature>``) so a
  stateless OpenAI client hands it back without knowing.
* Tool parameter schemas are converted to Gemini's OpenAPI-subset ``Schema`` (``parameters``);
  a schema the subset cannot express (free-form objects, recursive ``$ref``) is sent unchanged as
  ``parametersJsonSchema`` instead.  ``json_schema`` response formats use ``responseJsonSchema``.
* A prompt or answer blocked by Gemini's safety filters is an error
  (``content_policy_violation``), not an empty answer.
"""

from __future__ import annotations

import copy
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from modelyard.config.schema import GeminiProviderConfig
from modelyard.errors import (
    InvalidRequestError,
    UpstreamConnectionError,
    UpstreamStatusError,
)
from modelyard.providers._http import iter_sse_data, retry_after_from_headers
from modelyard.providers.base import CallOptions, Provider, classify_error_message, translated_stream
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChoiceDelta,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishReason,
    ForcedTool,
    Message,
    Tool,
    ToolCall,
    ToolCallDelta,
    UpstreamModel,
    Usage,
)

__all__ = [
    "GeminiProvider",
    "StreamDecoder",
    "decode_response",
    "decode_usage",
    "encode_request",
    "parse_google_error",
    "to_gemini_schema",
]

API_VERSION = "v1beta"
#: separates a tool call id from the Gemini thought signature carried inside it
SIGNATURE_SEP = "__thought__"

_FILTER_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE"}) | {
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
}
_MIME_BY_EXT = {ext: f"image/{ext}" for ext in ("png", "webp", "gif", "heic", "heif", "bmp")} | {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "pdf": "application/pdf",
}
#: ``Schema`` fields (Gemini's OpenAPI 3.0 subset) copied unchanged from a JSON schema
_PLAIN_SCHEMA_KEYS = (
    *("title", "description", "minItems", "maxItems", "minLength", "maxLength", "pattern", "minProperties"),
    *("maxProperties", "minimum", "maximum", "default", "propertyOrdering"),
)
_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
#: ``format`` values Gemini accepts, per type
_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}

#: OpenAI ``reasoning_effort`` -> Gemini 2.5 thinking budget (Gemini's own OpenAI-compatible
#: mapping; ``xhigh``: the model's most), clamped to each model's range (_BUDGET_RANGE)
_EFFORT_BUDGET = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
#: thinking budget ranges by model prefix (longest first): (least, most, can thinking be off)
_BUDGET_RANGE = (
    ("gemini-2.5-flash-lite", (512, 24576, True)),
    ("gemini-2.5-flash", (1, 24576, True)),
    ("gemini-2.5-pro", (128, 32768, False)),
)
#: OpenAI ``reasoning_effort`` -> Gemini 3 ``thinkingLevel`` (every Gemini 3 model takes low and
#: high; thinking cannot be turned off)
_EFFORT_LEVEL = {"none": "low", "minimal": "low", "low": "low", "medium": "high", "high": "high", "xhigh": "high"}

_MAJOR = re.compile(r"^gemini-(\d+)")
_VERSIONED = re.compile(r"/v1(?:alpha|beta)?$")
_RETRY_DELAY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)s\s*$")


class _NotExpressible(Exception):
    """A JSON schema construct with no equivalent in Gemini's OpenAPI-subset Schema."""


# -- internal -> Gemini ------------------------------------------------------------------


def model_path(model: str) -> str:
    """``models/NAME`` for a bare model name; ``models/NAME`` and ``tunedModels/NAME`` keep their prefix.

    Only that prefix keeps its ``/``: the name is one percent-encoded path segment, and a name with
    a ``.`` or ``..`` segment is refused (even encoded: a proxy may decode ``%2F``), so a model
    name cannot move the request (and its API key) to another path.
    """
    collection, name = "models", model
    for prefix in ("models/", "tunedModels/"):
        if model.startswith(prefix):
            collection, name = prefix[:-1], model.removeprefix(prefix)
            break
    if not name or any(segment in (".", "..") for segment in name.split("/")):
        raise InvalidRequestError(f"Invalid 'model': not a Gemini model name: {model[:100]!r}", param="model")
    return f"{collection}/{quote(name, safe='-._~@')}"


def guess_mime(url: str) -> str:
    path = urlsplit(url).path
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _MIME_BY_EXT.get(ext, "image/jpeg")


def encode_part(part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"text": part.text}
    if part.image_url.startswith("data:"):
        data = part.base64_data
        if data is None:
            raise InvalidRequestError("image data: URIs must be base64-encoded", param="messages")
        return {"inlineData": {"mimeType": part.media_type or "image/jpeg", "data": data}}
    return {"fileData": {"fileUri": part.image_url, "mimeType": guess_mime(part.image_url)}}


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """(id, thought signature) of a tool call id made by :func:`join_call_id`."""
    base, sep, signature = call_id.partition(SIGNATURE_SEP)
    return base, (signature or None) if sep else None


def join_call_id(call_id: str, signature: str | None) -> str:
    return f"{call_id}{SIGNATURE_SEP}{signature}" if signature else call_id


def _tool_response(text: str) -> dict[str, Any]:
    """A tool result as Gemini's ``functionResponse.response`` (a JSON object)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    return {"output": text}


def _arguments(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"tool call arguments are not valid JSON: {raw[:100]!r}", param="messages") from exc
    if not isinstance(value, dict):
        raise InvalidRequestError("tool call arguments must be a JSON object", param="messages")
    return value


def encode_contents(messages: list[Message]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(systemInstruction, contents) for a conversation."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        parts: list[dict[str, Any]] = []
        if m.role in ("system", "developer"):
            text = m.text()
            if text:
                system.append({"text": text})
            continue
        if m.role == "user":
            role = "user"
            if isinstance(m.content, list):
                parts = [encode_part(p) for p in m.content if p.type != "text" or p.text]
            elif m.content:
                parts = [{"text": m.content}]
        elif m.role == "assistant":
            role = "model"
            text = m.text()
            if text:
                parts.append({"text": text})
            for call in m.tool_calls or []:
                base_id, signature = split_call_id(call.id)
                call_names[call.id] = call_names[base_id] = call.name
                fc: dict[str, Any] = {"functionCall": {"name": call.name, "args": _arguments(call.arguments)}}
                if signature:
                    fc["thoughtSignature"] = signature
                parts.append(fc)
        else:  # tool
            role = "user"
            name = call_names.get(m.tool_call_id or "") or call_names.get(split_call_id(m.tool_call_id or "")[0])
            name = name or m.name
            if not name:
                raise InvalidRequestError(
                    f"messages[{i}]: tool result {m.tool_call_id!r} answers no earlier assistant tool call",
                    param=f"messages[{i}].tool_call_id",
                )
            parts = [{"functionResponse": {"name": name, "response": _tool_response(m.text())}}]
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return ({"parts": system} if system else None), contents


def _resolve_ref(ref: str, defs: Mapping[str, Any]) -> Any:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix) and ref[len(prefix) :] in defs:
            return defs[ref[len(prefix) :]]
    raise _NotExpressible(f"unresolvable $ref {ref!r}")


def _convert(schema: Any, defs: Mapping[str, Any], depth: int) -> dict[str, Any]:
    if depth > 24:
        raise _NotExpressible("schema too deep or recursive")
    if not isinstance(schema, dict):
        raise _NotExpressible("schema is not an object")
    schema = dict(schema)
    if "$ref" in schema:
        target = _resolve_ref(str(schema.pop("$ref")), defs)
        schema = {**target, **schema}
    all_of = schema.pop("allOf", None)
    if isinstance(all_of, list):
        if len(all_of) != 1:
            raise _NotExpressible("allOf")
        schema = {**all_of[0], **schema}
        if "$ref" in schema:
            return _convert(schema, defs, depth + 1)
    out: dict[str, Any] = {}
    any_of = schema.get("anyOf", schema.get("oneOf"))
    kind = schema.get("type")
    nullable = bool(schema.get("nullable"))
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        nullable = nullable or len(kinds) < len(kind)
        if len(kinds) == 1:
            kind = kinds[0]
        else:
            kind = None
            any_of = [{"type": k} for k in kinds]
    if isinstance(any_of, list):
        branches = [b for b in any_of if not (isinstance(b, dict) and b.get("type") == "null")]
        nullable = nullable or len(branches) < len(any_of)
        if len(branches) == 1:
            merged = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            inner = _convert({**branches[0], **{k: v for k, v in merged.items() if k != "type"}}, defs, depth + 1)
            if nullable:
                inner["nullable"] = True
            return inner
        out["anyOf"] = [_convert(b, defs, depth + 1) for b in branches]
    if isinstance(kind, str):
        upper = kind.upper()
        if upper not in _TYPES:
            raise _NotExpressible(f"type {kind!r}")
        out["type"] = upper
    elif "properties" in schema:
        out["type"] = "OBJECT"
    if nullable:
        out["nullable"] = True
    if "const" in schema:
        schema.setdefault("enum", [schema["const"]])
    out.update((key, schema[key]) for key in _PLAIN_SCHEMA_KEYS if key in schema)
    if "example" in schema:
        out["example"] = schema["example"]
    elif isinstance(schema.get("examples"), list) and schema["examples"]:
        out["example"] = schema["examples"][0]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        if all(isinstance(v, str) for v in enum):
            out["enum"] = list(enum)
            out.setdefault("type", "STRING")
        elif out.get("type") in (None, "STRING"):
            out["enum"] = [str(v) for v in enum if v is not None]
            out["type"] = "STRING"
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), ()):
        out["format"] = fmt
    if out.get("type") == "OBJECT":
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            raise _NotExpressible("object without properties")
        out["properties"] = {name: _convert(sub, defs, depth + 1) for name, sub in props.items()}
        required = schema.get("required")
        if isinstance(required, list):
            out["required"] = [r for r in required if r in props]
    if out.get("type") == "ARRAY" and "items" in schema:
        out["items"] = _convert(schema["items"], defs, depth + 1)
    return out


def to_gemini_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` (JSON Schema) as Gemini's OpenAPI-subset ``Schema``, or None if it cannot be expressed.

    Keys Gemini rejects (``additionalProperties``, ``$schema``, ``strict``, ...) are dropped,
    ``$ref`` is inlined, ``const`` becomes ``enum``, ``["string", "null"]`` becomes ``nullable``.
    """
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    try:
        return _convert(schema, defs, 0)
    except _NotExpressible:
        return None


def _clean_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    out.pop("$schema", None)
    out.pop("strict", None)
    return out


def encode_tool(tool: Tool) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name}
    if tool.description:
        decl["description"] = tool.description
    params = tool.parameters
    if not params:
        return decl
    if not params.get("properties") and params.get("type", "object") == "object":
        # No declared parameters: Gemini rejects an OBJECT schema without properties, so send
        # none, unless the schema allows arbitrary keys (then only JSON Schema can say so).
        if params.get("additionalProperties"):
            decl["parametersJsonSchema"] = _clean_json_schema(params)
        return decl
    converted = to_gemini_schema(params)
    if converted is not None:
        decl["parameters"] = converted
    else:
        decl["parametersJsonSchema"] = _clean_json_schema(params)
    return decl


def _thinking_config(effort: Any, model: str) -> dict[str, Any] | None:
    """OpenAI's ``reasoning_effort`` as the model's ``thinkingConfig``: a ``thinkingLevel`` for
    Gemini 3 and later, else a ``thinkingBudget`` in the model's range (Gemini 2.5 Pro cannot stop
    thinking: ``none`` is its least budget)."""
    if not isinstance(effort, str) or effort not in _EFFORT_BUDGET:
        return None
    name = model.rsplit("/", 1)[-1]
    version = _MAJOR.match(name)
    if version is not None and int(version.group(1)) >= 3:
        return {"thinkingLevel": _EFFORT_LEVEL[effort]}
    # 2.5, and any name without a version (an alias such as gemini-flash-latest): a budget, which
    # Gemini 3 accepts too, where a level is refused by 2.5
    budget = _EFFORT_BUDGET[effort]
    least, most, can_stop = next((r for prefix, r in _BUDGET_RANGE if name.startswith(prefix)), (1, 24576, True))
    if budget == 0 and can_stop:
        return {"thinkingBudget": 0}
    return {"thinkingBudget": min(most, max(least, budget))}


def encode_request(req: ChatRequest, model: str, *, reasoning: bool = True) -> dict[str, Any]:
    """The ``GenerateContentRequest`` body for ``req`` (the model goes in the URL); ``reasoning``:
    the model can think (else a ``reasoning_effort`` is dropped rather than sent as thinking)."""
    system, contents = encode_contents(req.messages)
    body: dict[str, Any] = {"contents": contents}
    if system is not None:
        body["systemInstruction"] = system
    if req.tools:
        body["tools"] = [{"functionDeclarations": [encode_tool(t) for t in req.tools]}]
        choice = req.tool_choice
        config: dict[str, Any] | None = None
        if isinstance(choice, ForcedTool):
            config = {"mode": "ANY", "allowedFunctionNames": [choice.name]}
        elif choice is not None:
            config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
        if config is not None:
            body["toolConfig"] = {"functionCallingConfig": config}
    gen: dict[str, Any] = {}
    for key, value in (
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("maxOutputTokens", req.max_tokens),
        ("stopSequences", req.stop or None),
        ("candidateCount", req.n),
        ("seed", req.seed),
        ("presencePenalty", req.presence_penalty),
        ("frequencyPenalty", req.frequency_penalty),
        ("responseLogprobs", req.logprobs),
        ("logprobs", req.top_logprobs if req.logprobs else None),
    ):
        if value is not None:
            gen[key] = value
    rf = req.response_format
    if rf is not None and rf.type in ("json_object", "json_schema"):
        gen["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema:
            gen["responseJsonSchema"] = _clean_json_schema(rf.schema)
    # Gemini-native knobs a client may pass as extra body fields
    extra = req.extra
    if extra.get("top_k") is not None:
        gen["topK"] = extra["top_k"]
    thinking = extra.get("thinking_config") or extra.get("thinkingConfig")
    if isinstance(thinking, dict):
        gen["thinkingConfig"] = thinking
    elif reasoning and (effort := _thinking_config(extra.get("reasoning_effort"), model)) is not None:
        gen["thinkingConfig"] = effort
    if gen:
        body["generationConfig"] = gen
    safety = extra.get("safety_settings") or extra.get("safetySettings")
    if isinstance(safety, list):
        body["safetySettings"] = safety
    cached = extra.get("cached_content") or extra.get("cachedContent")
    if isinstance(cached, str):
        body["cachedContent"] = cached
    return body


# -- Gemini -> internal ------------------------------------------------------------------


def decode_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = int(data.get("promptTokenCount") or 0) + int(data.get("toolUsePromptTokenCount") or 0)
    thoughts = int(data.get("thoughtsTokenCount") or 0)
    completion = int(data.get("candidatesTokenCount") or 0) + thoughts
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(data.get("totalTokenCount") or prompt + completion),
        cached_tokens=int(data.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def decode_finish(reason: Any, has_calls: bool) -> FinishReason | None:
    if not reason:
        return None
    reason = str(reason)
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTER_REASONS:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def decode_tool_call(part: dict[str, Any]) -> ToolCall:
    fc = part["functionCall"]
    if not isinstance(fc, dict) or not fc.get("name"):
        raise ValueError("functionCall without a name")
    args = fc.get("args")
    call_id = str(fc.get("id") or new_call_id())
    return ToolCall(
        id=join_call_id(call_id, part.get("thoughtSignature")),
        name=str(fc["name"]),
        arguments=orjson.dumps(args if isinstance(args, dict) else {}).decode(),
    )


def thoughts(content: Any) -> str | None:
    """The thought summaries of a candidate's content (``includeThoughts``), joined; None without."""
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return None
    text = "".join(
        p["text"]
        for p in content["parts"]
        if isinstance(p, dict) and p.get("thought") and isinstance(p.get("text"), str)
    )
    return text or None


def split_parts(content: Any) -> tuple[list[str], list[ToolCall]]:
    """(answer texts, tool calls) of a candidate's content; thought summaries are skipped."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    if not isinstance(content, dict):
        return texts, calls
    parts = content.get("parts") or []
    if not isinstance(parts, list):
        raise ValueError("content.parts is not a list")
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "functionCall" in part:
            calls.append(decode_tool_call(part))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    return texts, calls


def decode_logprobs(result: Any) -> dict[str, Any] | None:
    """Gemini's ``logprobsResult`` in OpenAI's ``logprobs`` shape."""
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    content = []
    for i, c in enumerate(chosen):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        alts = top.get("candidates") or []
        token = str(c.get("token", ""))
        content.append(
            {
                "token": token,
                "logprob": float(c.get("logProbability") or 0.0),
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {
                        "token": str(a.get("token", "")),
                        "logprob": float(a.get("logProbability") or 0.0),
                        "bytes": list(str(a.get("token", "")).encode()),
                    }
                    for a in alts
                ],
            }
        )
    return {"content": content, "refusal": None}


def _block_detail(ratings: Any) -> str:
    if not isinstance(ratings, list):
        return ""
    flagged = [
        f"{r.get('category', '?')}={r.get('probability', '?')}"
        for r in ratings
        if isinstance(r, dict) and (r.get("blocked") or r.get("probability") in ("MEDIUM", "HIGH"))
    ]
    return f" ({', '.join(flagged)})" if flagged else ""


def blocked_error(data: dict[str, Any], provider: str, model: str) -> UpstreamStatusError | None:
    """The error for a response Gemini blocked: the prompt, or every candidate with no output."""
    feedback = data.get("promptFeedback")
    candidates = data.get("candidates") or []
    if isinstance(feedback, dict) and feedback.get("blockReason") and not candidates:
        reason = str(feedback["blockReason"])
        detail = _block_detail(feedback.get("safetyRatings"))
        message = f"{provider}: Gemini blocked the prompt for {model!r}: blockReason {reason}{detail}"
        if feedback.get("blockReasonMessage"):
            message += f": {feedback['blockReasonMessage']}"
        return _policy_error(message, provider, model)
    if not candidates:
        return None
    for cand in candidates:
        if not isinstance(cand, dict) or cand.get("finishReason") not in _FILTER_REASONS:
            return None
        texts, calls = split_parts(cand.get("content"))
        if "".join(texts) or calls:
            return None
    reason = str(candidates[0].get("finishReason"))
    detail = _block_detail(candidates[0].get("safetyRatings"))
    message = f"{provider}: Gemini blocked the response for {model!r}: finishReason {reason}{detail}"
    if candidates[0].get("finishMessage"):
        message += f": {candidates[0]['finishMessage']}"
    return _policy_error(message, provider, model)


def _policy_error(message: str, provider: str, model: str) -> UpstreamStatusError:
    return UpstreamStatusError(
        message, upstream_status=400, provider=provider, model=model, code="content_policy_violation"
    )


def decode_response(data: Any, model: str, *, provider: str = "gemini") -> ChatResponse:
    """A ``GenerateContentResponse`` as a ChatResponse; raises the content-policy error for blocks."""
    if not isinstance(data, dict):
        raise ValueError("response is not an object")
    blocked = blocked_error(data, provider, model)
    if blocked is not None:
        raise blocked
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise ValueError("response has no candidates")
    choices = []
    for i, cand in enumerate(candidates):
        if not isinstance(cand, dict):
            raise ValueError("candidate is not an object")
        texts, calls = split_parts(cand.get("content"))
        text = "".join(texts)
        choices.append(
            Choice(
                index=int(cand.get("index") or i),
                message=Message(
                    role="assistant",
                    content=text if text or not calls else None,
                    tool_calls=calls or None,
                    reasoning=thoughts(cand.get("content")),
                ),
                finish_reason=decode_finish(cand.get("finishReason"), bool(calls)) or "stop",
                logprobs=decode_logprobs(cand.get("logprobsResult")),
            )
        )
    return ChatResponse(
        id=str(data.get("responseId") or f"chatcmpl-{uuid.uuid4().hex[:24]}"),
        created=int(time.time()),
        model=str(data.get("modelVersion") or model),
        choices=choices,
        usage=decode_usage(data.get("usageMetadata")),
    )


@dataclass(slots=True)
class _CandidateState:
    started: bool = False
    emitted: bool = False
    calls: int = 0
    finish: FinishReason | None = None


def _plain_text(candidates: Any) -> str | None:
    """The text of an event that is only that: one candidate (index 0) whose parts are all plain
    text, without a finish reason or log probabilities; None for anything else."""
    if type(candidates) is not list or len(candidates) != 1:
        return None
    cand = candidates[0]
    if type(cand) is not dict or cand.get("finishReason") or cand.get("index") or "logprobsResult" in cand:
        return None
    content = cand.get("content")
    parts = content.get("parts") if type(content) is dict else None
    if type(parts) is not list or not parts:
        return None
    if len(parts) == 1:  # nearly always
        part = parts[0]
        text = part.get("text") if type(part) is dict and len(part) == 1 else None
        return text if type(text) is str else None
    texts = []
    for part in parts:
        if type(part) is not dict or len(part) != 1 or type(part.get("text")) is not str:
            return None
        texts.append(part["text"])
    return "".join(texts)


@dataclass(slots=True)
class StreamDecoder:
    """Turns a stream of ``GenerateContentResponse`` events into OpenAI-style chunks."""

    model: str
    provider: str = "gemini"
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    #: the last ``usageMetadata`` (Gemini repeats it on every event; decoded once, at the end)
    usage_data: Any = None
    candidates: dict[int, _CandidateState] = field(default_factory=dict)

    @property
    def usage(self) -> Usage | None:
        return decode_usage(self.usage_data)

    def more_text(self, data: dict[str, Any]) -> str | None:
        """The text of an event that only continues the answer of candidate 0, already started (the
        bulk of a stream), with the event's model version and usage noted; None for any other event
        (:meth:`feed` takes it).  :meth:`feed` makes such an event a :meth:`text_chunk`; a stream
        merges the texts of one read into one (``translated_stream``) without those chunks."""
        state = self.candidates.get(0)
        if state is None or not state.started:
            return None
        text = _plain_text(data.get("candidates"))
        if not text:
            return None
        version = data.get("modelVersion")
        if version and version != self.model:
            self.model = str(version)
        self.usage_data = data.get("usageMetadata", self.usage_data)
        state.emitted = True
        return text

    def text_chunk(self, text: str) -> ChatChunk:
        """The chunk of answer text ``text`` for candidate 0."""
        return ChatChunk(self.id, self.created, self.model, [ChoiceDelta(content=text)])

    def feed(self, data: dict[str, Any]) -> list[ChatChunk]:
        """The chunks of one event (any event; the stream asks :meth:`more_text` first)."""
        if not self.id:
            self.id = str(data.get("responseId") or f"chatcmpl-{uuid.uuid4().hex[:24]}")
        version = data.get("modelVersion")
        if version and version != self.model:
            self.model = str(version)
        if "usageMetadata" in data:
            self.usage_data = data["usageMetadata"]
        candidates = data.get("candidates") or []
        if not isinstance(candidates, list):
            raise ValueError("candidates is not a list")
        if not candidates or not any(s.emitted for s in self.candidates.values()):
            blocked = blocked_error(data, self.provider, self.model)
            if blocked is not None:
                raise blocked
        out: list[ChatChunk] = []
        for i, cand in enumerate(candidates):
            if not isinstance(cand, dict):
                raise ValueError("candidate is not an object")
            index = int(cand.get("index") or i)
            state = self.candidates.setdefault(index, _CandidateState())
            texts, calls = split_parts(cand.get("content"))
            text = "".join(texts)
            thought = thoughts(cand.get("content"))
            reason = cand.get("finishReason")
            logprobs = decode_logprobs(cand.get("logprobsResult"))
            if not state.started and (text or calls or reason or thought):
                state.started = True
                out.append(self._chunk(ChoiceDelta(index=index, role="assistant", content="")))
            if thought:
                out.append(self._chunk(ChoiceDelta(index=index, reasoning=thought)))
            if text or calls:
                deltas = [
                    ToolCallDelta(index=state.calls + k, id=c.id, name=c.name, arguments=c.arguments)
                    for k, c in enumerate(calls)
                ]
                state.calls += len(calls)
                state.emitted = True
                delta = ChoiceDelta(index=index, content=text or None, tool_calls=deltas or None, logprobs=logprobs)
                out.append(self._chunk(delta))
                logprobs = None
            if reason:
                state.finish = decode_finish(reason, state.calls > 0)
                out.append(self._chunk(ChoiceDelta(index=index, finish_reason=state.finish, logprobs=logprobs)))
        return out

    @property
    def finished(self) -> bool:
        return bool(self.candidates) and all(s.finish is not None for s in self.candidates.values())

    def final(self) -> ChatChunk | None:
        """The usage-only chunk that closes the stream."""
        usage = self.usage
        if usage is None:
            return None
        return ChatChunk(id=self.id, created=self.created, model=self.model, choices=[], usage=usage)

    def _chunk(self, delta: ChoiceDelta) -> ChatChunk:
        return ChatChunk(id=self.id, created=self.created, model=self.model, choices=[delta])


# -- errors ------------------------------------------------------------------------------


def parse_google_error(raw: bytes) -> tuple[str, str | None, str | None, float | None]:
    """(message, code, google status, retry delay) of a Google API error body.

    The body is ``{"error": {"code", "message", "status", "details"}}`` (or a one-element list of
    it, as a non-SSE stream sends).  ``code`` is modelyard's: ``context_length_exceeded``,
    ``content_policy_violation``, ``rate_limit_exceeded``, ``invalid_api_key`` or the Google
    status in lower case.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return (text[:500] or "no error body"), None, None, None
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return str(body)[:500], None, None, None
    message = str(err.get("message") or err.get("status") or "unknown error")
    status = str(err["status"]) if err.get("status") else None
    delay: float | None = None
    reasons: set[str] = set()
    for detail in err.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("reason"):
            reasons.add(str(detail["reason"]))
        match = _RETRY_DELAY.match(str(detail.get("retryDelay") or ""))
        if match:
            delay = float(match.group(1))
    if "API_KEY_INVALID" in reasons or status == "UNAUTHENTICATED":
        code: str | None = "invalid_api_key"
    elif status == "RESOURCE_EXHAUSTED":
        code = "rate_limit_exceeded"
    else:
        code = classify_error_message(message) or (status.lower() if status else None)
    return message, code, status, delay


class GeminiProvider(Provider):
    kind = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    supports_embeddings = True
    config: GeminiProviderConfig

    def auth_headers(self) -> dict[str, str]:
        if self.config.api_key is None:
            return {}
        return {"x-goog-api-key": self.config.api_key.get_secret_value()}

    @property
    def api_root(self) -> str:
        """``{base_url}/v1beta``, or the base URL itself when it already names an API version."""
        return self.base_url if _VERSIONED.search(self.base_url) else f"{self.base_url}/{API_VERSION}"

    def url(self, model: str, method: str) -> str:
        return f"{self.api_root}/{model_path(model)}:{method}"

    # -- chat ----------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> ChatResponse:
        data = await self.request_json(
            "POST",
            self.url(upstream_model, "generateContent"),
            model=upstream_model,
            call=call,
            body=encode_request(request, upstream_model, reasoning=call.reasoning),
        )
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            raise self._inband_error(data, upstream_model)
        try:
            return decode_response(data, upstream_model, provider=self.name)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self.malformed(f"unexpected response shape from {upstream_model!r}: {exc}", upstream_model) from exc

    async def stream(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> AsyncIterator[ChatChunk]:
        decoder = StreamDecoder(model=upstream_model, provider=self.name)
        more_text = decoder.more_text

        def feed(raw: bytes) -> list[ChatChunk] | str:
            data = orjson.loads(raw)  # bytes: orjson checks the UTF-8 itself
            if type(data) is not dict:
                raise TypeError("event is not an object")
            if "error" in data and isinstance(data["error"], dict):
                raise self._inband_error(data, upstream_model)
            return more_text(data) or decoder.feed(data)

        async with self.request(
            "POST",
            self.url(upstream_model, "streamGenerateContent"),
            model=upstream_model,
            call=call,
            body=encode_request(request, upstream_model, reasoning=call.reasoning),
            params={"alt": "sse"},
        ) as resp:
            # Gemini names no events: only their data is read
            async for chunk in translated_stream(self, iter_sse_data(resp), upstream_model, feed, decoder.text_chunk):
                yield chunk
        if not decoder.finished:
            raise UpstreamConnectionError(
                f"{self.name}: stream from {upstream_model!r} ended before the answer was complete",
                provider=self.name,
                model=upstream_model,
            )
        final = decoder.final()
        if final is not None:
            yield final

    # -- embeddings and models -----------------------------------------------------------

    async def embed(self, request: EmbeddingRequest, upstream_model: str, call: CallOptions) -> EmbeddingResponse:
        texts: list[str] = []
        for item in request.input:
            if not isinstance(item, str):
                raise InvalidRequestError(
                    f"provider {self.name!r} (gemini) embeds text only, not token arrays", param="input"
                )
            texts.append(item)
        name = model_path(upstream_model)
        requests = []
        for text in texts:
            req: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if request.dimensions is not None:
                req["outputDimensionality"] = request.dimensions
            task = request.extra.get("task_type") or request.extra.get("taskType")
            if isinstance(task, str):
                req["taskType"] = task
            requests.append(req)
        data = await self.request_json(
            "POST",
            self.url(upstream_model, "batchEmbedContents"),
            model=upstream_model,
            call=call,
            body={"requests": requests},
        )
        try:
            vectors = [[float(v) for v in e["values"]] for e in data["embeddings"]]
            if len(vectors) != len(texts):
                raise ValueError(f"{len(vectors)} embeddings for {len(texts)} inputs")
        except (KeyError, TypeError, ValueError) as exc:
            raise self.malformed(f"unexpected embeddings response from {upstream_model!r}", upstream_model) from exc
        usage = decode_usage(data.get("usageMetadata"))
        if usage is None or not usage.prompt_tokens:
            tokens = sum(max(1, math.ceil(len(t) / 4)) for t in texts)
            usage = Usage(prompt_tokens=tokens, total_tokens=tokens, estimated=True)
        return EmbeddingResponse(model=upstream_model, data=vectors, usage=usage)

    async def list_models(self) -> list[UpstreamModel]:
        out: list[UpstreamModel] = []
        token = ""
        for _ in range(50):
            params = {"pageSize": "1000", **({"pageToken": token} if token else {})}
            data = await self.request_json(
                "GET",
                f"{self.api_root}/models",
                model="(list models)",
                call=CallOptions(timeout_s=15),
                params=params,
            )
            if not isinstance(data, dict):
                break
            for m in data.get("models") or []:
                if isinstance(m, dict) and m.get("name"):
                    out.append(_decode_model(m))
            next_token = str(data.get("nextPageToken") or "")
            if not next_token or next_token == token:
                break
            token = next_token
        return out

    # -- errors --------------------------------------------------------------------------

    def error_from_response(
        self, status: int, raw: bytes, headers: Mapping[str, str], model: str
    ) -> UpstreamStatusError:
        message, code, _, delay = parse_google_error(raw)
        retry_after = retry_after_from_headers(headers)
        if code == "invalid_api_key" and status == 400:
            # Google answers a bad API key with 400 INVALID_ARGUMENT; it is modelyard's credential
            # problem, not the client's request, so report it as the 401 it means.
            status = 401
        return UpstreamStatusError(
            f"{self.name} returned {status} for {model!r}: {message}",
            upstream_status=status,
            provider=self.name,
            model=model,
            code=code,
            retry_after=retry_after if retry_after is not None else delay,
        )

    def parse_error_body(self, raw: bytes) -> tuple[str, str | None, str | None]:
        message, code, _, _ = parse_google_error(raw)
        return message, code, None

    def _inband_error(self, data: dict[str, Any], model: str) -> UpstreamStatusError:
        message, code, _, delay = parse_google_error(orjson.dumps(data))
        status = data["error"].get("code")
        return UpstreamStatusError(
            f"{self.name} reported an error for {model!r}: {message}",
            upstream_status=status if isinstance(status, int) and 400 <= status < 600 else 500,
            provider=self.name,
            model=model,
            code=code,
            retry_after=delay,
        )


def _decode_model(m: dict[str, Any]) -> UpstreamModel:
    name = str(m["name"])
    limit = m.get("inputTokenLimit")
    keys = ("displayName", "description", "version", "outputTokenLimit", "supportedGenerationMethods", "thinking")
    details: dict[str, Any] = {k: m[k] for k in keys if k in m}
    return UpstreamModel(
        id=name.removeprefix("models/"),
        owned_by="google",
        context_window=int(limit) if isinstance(limit, int) else None,
        details=details,
    )
