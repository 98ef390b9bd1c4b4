"""A fake Google Gemini API (``generativelanguage.googleapis.com``): generateContent, streamGenerateContent,
embedContent, batchEmbedContents, countTokens and the models list, under ``/v1beta`` (and ``/v1``).

It checks requests the way the real API does: an API key (``x-goog-api-key`` header or ``key``
query parameter), field names (camelCase or snake_case, unknown names rejected), roles ``user`` /
``model``, part shapes, function-call / function-response turn pairing, Gemini 3 thought
signatures, Schema subsets; errors come in Google's shape ``{"error": {code, message, status}}``.

Safety blocks: inject ``Fault(code="safety")`` for a blocked prompt (``promptFeedback.blockReason``,
no candidates), or put ``BLOCKME`` in the user's text for a candidate that finishes with
``SAFETY`` and no content.  Models named ``gemini-3*`` attach thought signatures to function
calls and require them back, as the real ones do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from typing import Any

import orjson
from aiohttp import web

from modelyard.testing._fake_base import (
    FakeServer,
    Fault,
    Prompt,
    Reply,
    _default_message,
    count_tokens,
    fake_embedding,
    make_reply,
)

__all__ = ["FakeGemini"]

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_TOP = {"contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig"} | {
    "cachedContent",
    "model",
    "serviceTier",
    "store",
}
_GEN = {"stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities"} | {
    *("candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty"),
    *("frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig"),
    *("thinkingConfig", "imageConfig", "mediaResolution"),
}
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_PART = {*_PART_DATA, "thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"}
_TOOL = {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"} | {
    "fileSearch",
    "computerUse",
    "googleMaps",
    "mcpServers",
}
_DECL = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior"}
_SCHEMA = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties"} | {
    *("required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf"),
    *("propertyOrdering", "default", "items", "minimum", "maximum"),
}
_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}
_MIME_TYPES = {"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"}
_FN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_EMBED_DIMS = {"text-embedding-004": 768, "gemini-embedding-001": 3072}
_SKIP_SIGNATURE = "skip_thought_signature_validator"
_SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
]
_DEFAULT_MODELS = [
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.0-flash",
    "gemini-3-pro-preview",
    "gemini-embedding-001",
    "text-embedding-004",
]


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def _where(path: str) -> str:
    return f" at '{path}'" if path else ""


def _lower_types(schema: Any) -> Any:
    """A Gemini Schema with JSON-Schema-style lower-case types, for :func:`make_reply`."""
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _lower_types(v) for k, v in schema.items()}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    return out


def _signature(name: str) -> str:
    return base64.b64encode(b"fake-thought-signature:" + hashlib.sha256(name.encode()).digest()[:12]).decode()


class FakeGemini(FakeServer):
    """Fake Gemini API. Point a provider's ``base_url`` (or the SDK's ``HttpOptions.base_url``) at :attr:`base_url`.

    ``api_key``: when set, any other key is rejected like an invalid key (400 ``API_KEY_INVALID``);
    otherwise any non-empty key is accepted.  ``page_size``: the most models one list page holds.
    """

    kind = "gemini"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: list[str] | None = None,
        api_key: str | None = None,
        page_size: int = 1000,
    ) -> None:
        super().__init__(host, port)
        self.models = models or list(_DEFAULT_MODELS)
        self.api_key = api_key
        self.page_size = page_size

    @property
    def base_url(self) -> str:
        return self.url

    def add_routes(self, app: web.Application) -> None:
        for version in ("v1beta", "v1", "v1alpha"):
            app.router.add_get(f"/{version}/models", self.list_models)
            app.router.add_get(f"/{version}/models/{{name}}", self.get_model)
            app.router.add_post(f"/{version}/models/{{call}}", self.dispatch)

    def error_response(self, status: int, message: str, code: str | None) -> web.Response:
        name = _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        if code == "context_length_exceeded" and message == _default_message(status, code):
            message = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
        elif status == 429 and message == _default_message(status, code):
            message = (
                "You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
            )
        error: dict[str, Any] = {"code": status, "message": message, "status": name}
        if code == "API_KEY_INVALID":
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
        return self.json({"error": error}, status)

    # -- endpoints -----------------------------------------------------------------------

    def _auth(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise self.bad_request(
                "Method doesn't allow unregistered callers (callers without established identity). Please use API "
                "Key or other form of API consumer identity to call this API.",
                status=403,
            )
        if self.api_key is not None and key != self.api_key:
            raise self.bad_request("API key not valid. Please pass a valid API key.", "API_KEY_INVALID")

    def _model_info(self, name: str) -> dict[str, Any]:
        embedding = "embedding" in name
        info: dict[str, Any] = {
            "name": f"models/{name}",
            "version": "001",
            "displayName": name.replace("-", " ").title(),
            "description": f"Fake {name}",
            "inputTokenLimit": 2048 if embedding else 1048576,
            "outputTokenLimit": 1 if embedding else 65536,
            "supportedGenerationMethods": ["embedContent", "batchEmbedContents"]
            if embedding
            else ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"],
        }
        if not embedding:
            info.update({"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": _thinks(name)})
        return info

    async def list_models(self, request: web.Request) -> web.Response:
        self._auth(request)
        try:
            size = int(request.query.get("pageSize") or 50)
            token = request.query.get("pageToken") or ""
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:")) if token else 0
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise self.bad_request("Invalid page token or page size") from None
        size = max(1, min(size, 1000, self.page_size))
        page = self.models[start : start + size]
        body: dict[str, Any] = {"models": [self._model_info(m) for m in page]}
        if start + size < len(self.models):
            body["nextPageToken"] = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
        return self.json(body)

    async def get_model(self, request: web.Request) -> web.Response:
        self._auth(request)
        name = request.match_info["name"]
        if name not in self.models:
            raise self.bad_request(f"models/{name} is not found for API version v1beta", status=404)
        return self.json(self._model_info(name))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].rpartition(":")
        self._auth(request)
        handlers = {
            "generateContent": self.generate,
            "streamGenerateContent": self.generate,
            "embedContent": self.embed,
            "batchEmbedContents": self.embed,
            "countTokens": self.count_tokens,
        }
        if not model or method not in handlers:
            raise self.bad_request(f"Method not found: {method or request.match_info['call']}", status=404)
        wants_embedding = method in ("embedContent", "batchEmbedContents")
        if ("embedding" in model) != wants_embedding:
            raise self.bad_request(
                f"models/{model} is not found for API version v1beta, or is not supported for {method}. Call "
                "ListModels to see the list of available models and their supported methods.",
                status=404,
            )
        return await handlers[method](request, model, method)

    async def generate(self, request: web.Request, model: str, method: str) -> web.StreamResponse:
        body = self._object(await self.read_json(request), _TOP, "")
        prompt, options = self._validate(body, model)
        fault = await self.begin(request, model, body)
        rid = uuid.uuid4().hex[:22]
        if fault is not None and fault.code == "safety":
            events = [self._blocked_prompt(prompt, model, rid)]
        elif "BLOCKME" in prompt.last_user_text:
            events = [self._blocked_answer(prompt, model, rid)]
        else:
            seen = self.seen_before([body.get("systemInstruction"), body.get("contents")])
            reply = make_reply(prompt, seen_before=seen, script=self.scripted(prompt))
            if method == "generateContent":
                return self.json(self._response(reply, model, rid, options))
            events = self._events(reply, model, rid, options)
        if method == "generateContent":
            return self.json(events[0])
        return await self._stream(request, events, fault)

    async def embed(self, request: web.Request, model: str, method: str) -> web.Response:
        name = f"models/{model}"
        known = {"model", "content", "taskType", "title", "outputDimensionality"}
        raw = self._object(await self.read_json(request), {"requests"} if method == "batchEmbedContents" else known, "")
        if method == "batchEmbedContents":
            items = raw.get("requests")
            if not isinstance(items, list) or not items:
                raise self.bad_request("* BatchEmbedContentsRequest.requests: requests must not be empty")
            if len(items) > 100:
                raise self.bad_request("* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch")
            reqs = [self._object(r, known, f"requests[{i}]") for i, r in enumerate(items)]
            for i, r in enumerate(reqs):
                if r.get("model") != name:
                    raise self.bad_request(
                        f"* BatchEmbedContentsRequest.requests[{i}].model: model must be {name!r}, as in the URL"
                    )
        else:
            reqs = [raw]
        vectors = []
        for i, r in enumerate(reqs):
            content = self._content(r.get("content"), f"requests[{i}].content", embedding=True)
            text = " ".join(p["text"] for p in content["parts"] if isinstance(p.get("text"), str))
            dims = r.get("outputDimensionality", _EMBED_DIMS.get(model, 768))
            if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 3072:
                raise self.bad_request(f"* requests[{i}].output_dimensionality: must be between 1 and 3072")
            vectors.append({"values": fake_embedding(text, dims)})
        await self.begin(request, model, raw)
        if method == "embedContent":
            return self.json({"embedding": vectors[0]})
        return self.json({"embeddings": vectors})

    async def count_tokens(self, request: web.Request, model: str, method: str) -> web.Response:
        raw = self._object(await self.read_json(request), {"contents", "generateContentRequest"}, "")
        inner = raw.get("generateContentRequest")
        body = self._object(inner, _TOP, "generate_content_request") if inner is not None else raw
        prompt, _ = self._validate(body, model)
        tokens = count_tokens(prompt.all_text) + 3 * prompt.message_count
        return self.json({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})

    # -- responses -----------------------------------------------------------------------

    def _usage(self, reply: Reply, model: str, n: int, options: dict[str, Any]) -> dict[str, Any]:
        out = reply.output_tokens * n
        usage: dict[str, Any] = {
            "promptTokenCount": reply.input_tokens,
            "candidatesTokenCount": out,
            "totalTokenCount": reply.input_tokens + out,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
        }
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.cached_tokens}]
        if options["thoughts"]:
            usage["thoughtsTokenCount"] = options["thoughts"]
            usage["totalTokenCount"] += options["thoughts"]
        return usage

    def _parts(self, reply: Reply, model: str, options: dict[str, Any], text: str | None) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if text is not None:
            parts.append({"text": text})
        for k, (_, name, args) in enumerate(reply.tool_calls):
            part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
            if k == 0 and model.startswith("gemini-3"):
                part["thoughtSignature"] = _signature(name)
            parts.append(part)
        return parts

    def _candidate(
        self, index: int, parts: list[dict[str, Any]], finish: str | None, reply: Reply, options: dict[str, Any]
    ) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
        if finish is not None:
            cand["finishReason"] = "MAX_TOKENS" if finish == "length" else "STOP"
            if options["logprobs"]:
                pieces = reply.pieces() or [""]
                cand["avgLogprobs"] = -0.1
                cand["logprobsResult"] = {
                    "topCandidates": [
                        {"candidates": [{"token": p, "logProbability": -0.1}] * options["top"]} for p in pieces
                    ],
                    "chosenCandidates": [{"token": p, "logProbability": -0.1} for p in pieces],
                }
        return cand

    def _thought(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"text": "**Thinking** about the request.", "thought": True}] if options["include_thoughts"] else []

    def _response(self, reply: Reply, model: str, rid: str, options: dict[str, Any]) -> dict[str, Any]:
        n = options["n"]
        parts = self._thought(options) + self._parts(reply, model, options, reply.text)
        return {
            "candidates": [self._candidate(i, parts, reply.finish, reply, options) for i in range(n)],
            "usageMetadata": self._usage(reply, model, n, options),
            "modelVersion": model,
            "responseId": rid,
        }

    def _events(self, reply: Reply, model: str, rid: str, options: dict[str, Any]) -> list[dict[str, Any]]:
        n = options["n"]
        pieces: list[str | None] = list(reply.pieces()) or [None]
        steps: list[tuple[list[dict[str, Any]], str | None]] = []
        if options["include_thoughts"]:
            steps.append((self._thought(options), None))
        for k, piece in enumerate(pieces):
            last = k == len(pieces) - 1
            parts = self._parts(reply, model, options, piece) if last else [{"text": piece}]
            steps.append((parts or [{"text": ""}], reply.finish if last else None))
        events = []
        for parts, finish in steps:
            event: dict[str, Any] = {
                "candidates": [self._candidate(i, parts, finish, reply, options) for i in range(n)],
                "usageMetadata": {"promptTokenCount": reply.input_tokens, "totalTokenCount": reply.input_tokens},
                "modelVersion": model,
                "responseId": rid,
            }
            if finish is not None:
                event["usageMetadata"] = self._usage(reply, model, n, options)
            events.append(event)
        return events

    def _blocked_prompt(self, prompt: Prompt, model: str, rid: str) -> dict[str, Any]:
        tokens = count_tokens(prompt.all_text)
        return {
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _SAFETY_RATINGS},
            "usageMetadata": {"promptTokenCount": tokens, "totalTokenCount": tokens},
            "modelVersion": model,
            "responseId": rid,
        }

    def _blocked_answer(self, prompt: Prompt, model: str, rid: str) -> dict[str, Any]:
        tokens = count_tokens(prompt.all_text)
        return {
            "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": _SAFETY_RATINGS}],
            "usageMetadata": {"promptTokenCount": tokens, "totalTokenCount": tokens},
            "modelVersion": model,
            "responseId": rid,
        }

    async def _stream(
        self, request: web.Request, events: list[dict[str, Any]], fault: Fault | None
    ) -> web.StreamResponse:
        encoded = [orjson.dumps(e) for e in events]
        if request.query.get("alt") == "sse":
            frames = [b"data: " + e + b"\r\n\r\n" for e in encoded]
            return await self.write_stream(
                request,
                frames[:-1],
                fault,
                terminal=frames[-1],
                malformed=b'data: {"candidates": [{"content": \r\n\r\n',
            )
        # Without alt=sse the answer is one JSON array, streamed element by element.
        frames = [(b"[" if i == 0 else b",\r\n") + e for i, e in enumerate(encoded)]
        frames[-1] += b"]"
        return await self.write_stream(
            request,
            frames[:-1],
            fault,
            terminal=frames[-1],
            malformed=b',\r\n{"candidates": [',
            content_type="application/json",
        )

    # -- validation ----------------------------------------------------------------------

    def _object(self, value: Any, known: set[str], path: str) -> dict[str, Any]:
        """``value`` as a dict with camelCase keys; unknown names are rejected like the real API."""
        if not isinstance(value, dict):
            raise self.bad_request(f"Invalid JSON payload received. Expected an object{_where(path)}.")
        out: dict[str, Any] = {}
        for key, item in value.items():
            camel = _camel(key)
            if camel not in known:
                raise self.bad_request(
                    f'Invalid JSON payload received. Unknown name "{key}"{_where(path)}: Cannot find field.'
                )
            out[camel] = item
        return out

    def _content(self, value: Any, path: str, *, embedding: bool = False) -> dict[str, Any]:
        content = self._object(value, {"role", "parts"}, path)
        role = content.get("role")
        if role not in (None, "", "user", "model") or (embedding and role == "model"):
            raise self.bad_request("Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise self.bad_request(f"* GenerateContentRequest.{_snake(path)}.parts: contents.parts must not be empty.")
        content["parts"] = [self._part(p, f"{path}.parts[{j}]") for j, p in enumerate(parts)]
        return content

    def _part(self, value: Any, path: str) -> dict[str, Any]:
        part = self._object(value, _PART, _snake(path))
        data = [k for k in _PART_DATA if k in part]
        if not data:
            raise self.bad_request(
                f"* GenerateContentRequest.{_snake(path)}.data: required oneof field 'data' must have one "
                "initialized field"
            )
        if len(data) > 1:
            raise self.bad_request(
                f"Invalid JSON payload received. Invalid value at '{_snake(path)}': oneof field 'data' is already "
                f"set. Cannot set '{_snake(data[1])}'"
            )
        if "text" in part and not isinstance(part["text"], str):
            raise self.bad_request(f"Invalid value at '{_snake(path)}.text' (TYPE_STRING)")
        if "inlineData" in part:
            blob = self._object(part["inlineData"], {"mimeType", "data"}, f"{_snake(path)}.inline_data")
            if _bytes(blob.get("data")) is None:
                raise self.bad_request(
                    f"Invalid value at '{_snake(path)}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                )
            if not blob.get("mimeType") or not blob.get("data"):
                raise self.bad_request(f"* GenerateContentRequest.{_snake(path)}.inline_data: mime_type and data")
        if "fileData" in part:
            file = self._object(part["fileData"], {"mimeType", "fileUri", "displayName"}, f"{_snake(path)}.file_data")
            if not file.get("fileUri"):
                raise self.bad_request(f"* GenerateContentRequest.{_snake(path)}.file_data.file_uri: required")
        if "functionCall" in part:
            call = self._object(part["functionCall"], {"id", "name", "args"}, f"{_snake(path)}.function_call")
            if not call.get("name") or not isinstance(call.get("args", {}), dict):
                raise self.bad_request(f"* GenerateContentRequest.{_snake(path)}.function_call.name: required")
            part["functionCall"] = call
        if "functionResponse" in part:
            known = {"id", "name", "response", "willContinue", "scheduling", "parts"}
            resp = self._object(part["functionResponse"], known, f"{_snake(path)}.function_response")
            if not resp.get("name") or not isinstance(resp.get("response"), dict):
                raise self.bad_request(
                    f"* GenerateContentRequest.{_snake(path)}.function_response: name and response (an object) "
                    "are required"
                )
            part["functionResponse"] = resp
        return part

    def _schema(self, value: Any, path: str) -> dict[str, Any]:
        schema = self._object(value, _SCHEMA, path)
        kind = schema.get("type")
        if kind is not None and (not isinstance(kind, str) or kind.upper() not in _TYPES):
            raise self.bad_request(f"Invalid value at '{path}.type' (type.googleapis.com/google.ai.Type), {kind!r}")
        upper = kind.upper() if isinstance(kind, str) else ""
        enum = schema.get("enum")
        if enum is not None and (not isinstance(enum, list) or not all(isinstance(v, str) for v in enum)):
            raise self.bad_request(f"Invalid value at '{path}.enum' (TYPE_STRING)")
        fmt = schema.get("format")
        if fmt is not None and upper in _FORMATS and fmt not in _FORMATS[upper] and not (upper == "STRING" and enum):
            allowed = " and ".join(f"'{f}'" for f in sorted(_FORMATS[upper]))
            raise self.bad_request(f"* GenerateContentRequest.{path}.format: only {allowed} are supported for {upper}")
        props = schema.get("properties")
        if upper == "OBJECT" and not props:
            raise self.bad_request(f"* GenerateContentRequest.{path}.properties: should be non-empty for OBJECT type")
        if isinstance(props, dict):
            schema["properties"] = {k: self._schema(v, f"{path}.properties[{k}].value") for k, v in props.items()}
        if "items" in schema:
            schema["items"] = self._schema(schema["items"], f"{path}.items")
        if "anyOf" in schema:
            schema["anyOf"] = [self._schema(s, f"{path}.any_of[{i}]") for i, s in enumerate(schema["anyOf"] or [])]
        return schema

    def _tools(self, body: dict[str, Any], prompt: Prompt) -> set[str]:
        names: set[str] = set()
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            raise self.bad_request("Invalid value at 'tools': expected a list")
        for i, raw in enumerate(tools):
            tool = self._object(raw, _TOOL, f"tools[{i}]")
            for j, decl_raw in enumerate(tool.get("functionDeclarations") or []):
                path = f"tools[{i}].function_declarations[{j}]"
                decl = self._object(decl_raw, _DECL, path)
                name = decl.get("name")
                if not isinstance(name, str) or not _FN_NAME.match(name):
                    raise self.bad_request(
                        f"* GenerateContentRequest.{path}.name: Invalid function name. Must start with a letter or "
                        "an underscore. Must be a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, "
                        "with a maximum length of 64."
                    )
                if "parameters" in decl and "parametersJsonSchema" in decl:
                    raise self.bad_request(f"* GenerateContentRequest.{path}: parameters and parameters_json_schema")
                schema: dict[str, Any] = {}
                if "parameters" in decl:
                    schema = _lower_types(self._schema(decl["parameters"], f"{path}.parameters"))
                elif isinstance(decl.get("parametersJsonSchema"), dict):
                    schema = decl["parametersJsonSchema"]
                names.add(name)
                prompt.tools.append((name, schema))
        return names

    def _tool_config(self, body: dict[str, Any], prompt: Prompt, declared: set[str]) -> None:
        if "toolConfig" not in body:
            return
        config = self._object(body["toolConfig"], {"functionCallingConfig", "retrievalConfig"}, "tool_config")
        fcc = self._object(
            config.get("functionCallingConfig") or {}, {"mode", "allowedFunctionNames"}, "function_calling_config"
        )
        mode = fcc.get("mode", "AUTO")
        if mode not in ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"):
            raise self.bad_request(f"Invalid value at 'tool_config.function_calling_config.mode', {mode!r}")
        allowed = fcc.get("allowedFunctionNames")
        if allowed and mode != "ANY":
            raise self.bad_request("* allowed_function_names may only be set when mode is ANY.")
        for name in allowed or []:
            if name not in declared:
                raise self.bad_request(f"* allowed_function_names: function {name!r} is not declared in tools.")
        if mode == "NONE":
            prompt.tool_choice = "none"
        elif mode == "ANY":
            prompt.tool_choice = allowed[0] if allowed and len(allowed) == 1 else "required"

    def _generation_config(self, body: dict[str, Any], prompt: Prompt, model: str) -> dict[str, Any]:
        gen = self._object(body.get("generationConfig") or {}, _GEN, "generation_config")

        def number(key: str, low: float, high: float, integer: bool = False) -> Any:
            value = gen.get(key)
            ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
            if value is not None and (not ok or not low <= value <= high):
                raise self.bad_request(
                    f"* GenerateContentRequest.generation_config.{_snake(key)}: must be in [{low}, {high}]"
                )
            return value

        number("temperature", 0, 2)
        number("topP", 0, 1)
        number("topK", 1, 1_000_000, integer=True)
        number("presencePenalty", -2, 2)
        number("frequencyPenalty", -2, 2)
        n = number("candidateCount", 1, 8, integer=True) or 1
        prompt.max_tokens = number("maxOutputTokens", 1, 1_000_000, integer=True)
        top = number("logprobs", 0, 20, integer=True) or 0
        stop = gen.get("stopSequences")
        if stop is not None:
            if not isinstance(stop, list) or len(stop) > 5 or not all(isinstance(s, str) for s in stop):
                raise self.bad_request("* GenerateContentRequest.generation_config.stop_sequences: at most 5 strings")
            prompt.stop = stop
        mime = gen.get("responseMimeType")
        if mime is not None and mime not in _MIME_TYPES:
            raise self.bad_request(
                "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, "
                "`application/json`, `application/xml`, `application/yaml` and `text/x.enum`."
            )
        if "responseSchema" in gen and "responseJsonSchema" in gen:
            raise self.bad_request(
                "* GenerateContentRequest.generation_config: response_schema and response_json_schema"
            )
        if ("responseSchema" in gen or "responseJsonSchema" in gen) and mime not in ("application/json", "text/x.enum"):
            raise self.bad_request(
                "* GenerateContentRequest.generation_config.response_mime_type: must be application/json or "
                "text/x.enum when a response schema is set"
            )
        prompt.json_mode = mime == "application/json"
        if "responseSchema" in gen:
            prompt.json_schema = _lower_types(self._schema(gen["responseSchema"], "generation_config.response_schema"))
        elif isinstance(gen.get("responseJsonSchema"), dict):
            prompt.json_schema = gen["responseJsonSchema"]
        thinking = self._object(
            gen.get("thinkingConfig") or {}, {"includeThoughts", "thinkingBudget", "thinkingLevel"}, "thinking_config"
        )
        self._thinking_rules(thinking, model)
        thoughts = 0 if thinking.get("thinkingBudget") == 0 or not _thinks(model) else 12
        return {
            "n": n,
            "logprobs": bool(gen.get("responseLogprobs")),
            "top": top,
            "thoughts": thoughts,
            "include_thoughts": bool(thinking.get("includeThoughts")) and thoughts > 0,
        }

    def _thinking_rules(self, thinking: dict[str, Any], model: str) -> None:
        """What the API refuses in a thinkingConfig: a level before Gemini 3, a budget outside the
        model's range (Gemini 2.5 Pro cannot stop thinking), any thinking on a model without it."""
        level, budget = thinking.get("thinkingLevel"), thinking.get("thinkingBudget")
        if level is None and budget is None:
            return
        if not _thinks(model):
            raise self.bad_request("Thinking is not supported for this model.")
        if level is not None:
            if not model.startswith("gemini-3"):
                raise self.bad_request("Thinking level is not supported for this model.")
            if level not in ("minimal", "low", "medium", "high"):
                raise self.bad_request(
                    f"* GenerateContentRequest.generation_config.thinking_config.thinking_level: {level!r}"
                )
        if budget is not None and model.startswith("gemini-2.5"):
            least, most, off = next((r for p, r in _BUDGETS if model.startswith(p)), (1, 24576, True))
            if budget == 0 and not off:
                raise self.bad_request("Budget 0 is invalid. This model only works in thinking mode.")
            if budget != -1 and budget != 0 and not least <= budget <= most:
                raise self.bad_request(
                    f"The thinking budget {budget} is invalid. Please choose a value between {least} and {most}."
                )

    def _validate(self, body: dict[str, Any], model: str) -> tuple[Prompt, dict[str, Any]]:
        raw_contents = body.get("contents")
        if not isinstance(raw_contents, list) or not raw_contents:
            raise self.bad_request("* GenerateContentRequest.contents: contents is not specified")
        contents = [self._content(c, f"contents[{i}]") for i, c in enumerate(raw_contents)]
        prompt = Prompt(model=model, message_count=len(contents))
        texts: list[str] = []
        if body.get("systemInstruction") is not None:
            system = self._content(body["systemInstruction"], "system_instruction")
            texts += [p["text"] for p in system["parts"] if isinstance(p.get("text"), str)]
            prompt.message_count += 1
        declared = self._tools(body, prompt)
        self._tool_config(body, prompt, declared)
        for i, raw in enumerate(body.get("safetySettings") or []):
            self._object(raw, {"category", "threshold", "method"}, f"safety_settings[{i}]")
        self._check_turns(contents, model)
        for content in contents:
            turn_text = ""
            has_response = False
            for part in content["parts"]:
                if isinstance(part.get("text"), str) and not part.get("thought"):
                    turn_text += part["text"]
                elif "functionResponse" in part:
                    has_response = True
                    texts.append(orjson.dumps(part["functionResponse"]["response"]).decode())
                elif "inlineData" in part or "fileData" in part:
                    prompt.image_count += 1
            texts.append(turn_text)
            if content.get("role") != "model":
                if turn_text:
                    prompt.last_user_text = turn_text
                prompt.has_tool_result = has_response
        prompt.all_text = " ".join(t for t in texts if t)
        options = self._generation_config(body, prompt, model)
        return prompt, options

    def _check_turns(self, contents: list[dict[str, Any]], model: str) -> None:
        """Function-call turns follow user turns; function-response turns answer the call turn just before."""
        last_user_text = max((i for i, c in enumerate(contents) if _text_turn(c)), default=-1)
        for i, content in enumerate(contents):
            calls = [p for p in content["parts"] if "functionCall" in p]
            responses = [p["functionResponse"] for p in content["parts"] if "functionResponse" in p]
            role = content.get("role") or "user"
            if (calls and role != "model") or (responses and role != "user"):
                raise self.bad_request("Please use a valid role: user, model.")
            prev = contents[i - 1] if i else None
            if calls and (prev is None or (prev.get("role") or "user") != "user"):
                raise self.bad_request(
                    "Please ensure that function call turn comes immediately after a user turn or after a function "
                    "response turn."
                )
            if calls and model.startswith("gemini-3") and i > last_user_text:
                signature = calls[0].get("thoughtSignature")
                expected = _signature(calls[0]["functionCall"]["name"])
                if signature != _SKIP_SIGNATURE and _bytes(signature) != _bytes(expected):
                    name = calls[0]["functionCall"]["name"]
                    raise self.bad_request(
                        "Function call is missing a thought_signature in functionCall parts. This is required for "
                        "tools to work correctly, and missing thought_signature may lead to degraded model "
                        f"performance. Additional data, function call `default_api:{name}` , position {i + 1}. "
                        "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                    )
            if not responses:
                continue
            prev_calls = [p["functionCall"] for p in (prev or {}).get("parts", []) if "functionCall" in p]
            if not prev_calls or (prev or {}).get("role") != "model":
                raise self.bad_request(
                    "Please ensure that function response turn comes immediately after a function call turn."
                )
            if len(prev_calls) != len(responses):
                raise self.bad_request(
                    "Please ensure that the number of function response parts is equal to the number of function "
                    "call parts of the function call turn."
                )
            if sorted(c["name"] for c in prev_calls) != sorted(r["name"] for r in responses):
                raise self.bad_request(
                    "Please ensure that the name of each function response part matches the name of a function "
                    f"call part of the function call turn (contents[{i}])."
                )


def _text_turn(content: dict[str, Any]) -> bool:
    """A user turn with text of its own (not only function responses)."""
    return (content.get("role") or "user") == "user" and any(
        isinstance(p.get("text"), str) and p["text"] for p in content["parts"]
    )


def _bytes(value: Any) -> bytes | None:
    """A proto ``bytes`` field as JSON carries it: base64, standard or URL-safe alphabet."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True)
    except binascii.Error:
        return None


def _thinks(model: str) -> bool:
    return model.startswith(("gemini-2.5", "gemini-3")) or "thinking" in model


#: thinking budget ranges (least, most, 0 allowed), longest prefix first, as the API documents them
_BUDGETS = (
    ("gemini-2.5-flash-lite", (512, 24576, True)),
    ("gemini-2.5-flash", (1, 24576, True)),
    ("gemini-2.5-pro", (128, 32768, False)),
)
