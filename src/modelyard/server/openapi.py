"""The OpenAPI documents: ``/openapi.json`` (every public endpoint) and ``/admin/openapi.json``
(every ``/admin`` endpoint), built once per app.

FastAPI describes the routes it validates itself (admin, stats, estimate).  The hot endpoints
(chat completions, embeddings, models) are served by the fast path in ``server/app.py`` and parse
their bodies with the wire codec, not with FastAPI; the status and health endpoints are plain
Starlette routes.  Their request and response schemas are declared here, as pydantic models used
for documentation only (nothing on the request path reads them), and added to the document.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["install_openapi"]

_REF = "#/components/schemas/{model}"
_SSE = "chat.completion.chunk events, then data: [DONE]"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelyardOptions(BaseModel):
    """Per-request options (the body's ``modelyard`` object, or ``X-Modelyard-*`` headers)."""

    route: str | None = None
    fallback: bool | None = None
    local_only: bool | None = None
    prefer: Literal["custom", "provider", "local"] | None = None
    task: str | None = None
    timeout_s: float | None = Field(None, gt=0, le=3600)
    max_attempts: int | None = Field(None, ge=1)
    max_cost_usd: float | None = Field(None, gt=0, le=1e9)
    cache: bool | None = None
    cache_ttl_s: float | None = Field(None, gt=0, le=31536000)


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_Open):
    """OpenAI's chat completion request; fields modelyard does not know are passed through to
    OpenAI-compatible upstreams."""

    model: str | None = Field(
        None,
        description="a route, a configured model, `default`, or `provider:model`; "
        "absent: the configured default_route (400 without one)",
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    modelyard: ModelyardOptions | None = None


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    cost_usd: float | None = Field(None, description="what the call cost (modelyard's extension; 0 for a cache hit)")
    estimated: bool | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: Any = None
    finish_reason: str | None = None


class ChatCompletion(_Open):
    """The answer; streamed (``stream: true``) as ``chat.completion.chunk`` server-sent events
    ending with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="the configured name of the model that answered")
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class EmbeddingRequest(_Open):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    modelyard: ModelyardOptions | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, int]


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    modelyard: dict[str, Any] = Field(description="route or model details: type, models, provider, tags...")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelEntry]


class ErrorDetail(_Open):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


_DOC_MODELS = (ChatCompletionRequest, ChatCompletion, EmbeddingRequest, EmbeddingList, ModelList, ErrorBody)


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=ref)}}}


def _errors() -> dict[str, Any]:
    return {
        str(code): {"description": what, "content": _json("ErrorBody")}
        for code, what in (
            (400, "invalid request (the parameter is named)"),
            (401, "missing or invalid key"),
            (402, "no candidate fits max_cost_usd"),
            (403, "the key may not use this route or model; no-key mode refusals"),
            (404, "unknown route or model"),
            (413, "body over server.max_body_mb"),
            (429, "rate limit, key limit or budget"),
            (502, "every attempt failed"),
            (503, "nothing can serve the request now"),
            (504, "the deadline passed"),
        )
    }


def _hand_paths() -> dict[str, dict[str, Any]]:
    chat = {
        "post": {
            "summary": "Chat completion (OpenAI-compatible; streaming with stream: true)",
            "operationId": "chat_completions",
            "requestBody": {"required": True, "content": _json("ChatCompletionRequest")},
            "responses": {
                "200": {
                    "description": "the answer (headers X-Modelyard-Model, -Route, -Attempts, -Fallback, -Cost-Usd)",
                    "content": {
                        **_json("ChatCompletion"),
                        "text/event-stream": {
                            "schema": {"type": "string", "description": "chat.completion.chunk events"}
                        },
                    },
                },
                **_errors(),
            },
        }
    }
    embeddings = {
        "post": {
            "summary": "Embeddings (OpenAI-compatible)",
            "operationId": "embeddings",
            "requestBody": {"required": True, "content": _json("EmbeddingRequest")},
            "responses": {"200": {"description": "the vectors", "content": _json("EmbeddingList")}, **_errors()},
        }
    }
    models = {
        "get": {
            "summary": "Routes and models (OpenAI's model list, with modelyard details)",
            "operationId": "models",
            "responses": {"200": {"description": "routes first, then models", "content": _json("ModelList")}},
        }
    }

    model = {
        "get": {
            "summary": "One route or model (client.models.retrieve); 404 when there is none",
            "operationId": "model",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the route or model", "content": _json("ModelEntry")}, **_errors()},
        }
    }

    completions = {
        "post": {
            "summary": "Legacy completions, translated to chat (prompt as one user message); suffix, echo, "
            "best_of > 1, logprobs and several prompts are a 400 naming the parameter",
            "operationId": "completions",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["model", "prompt"],
                            "properties": {
                                "model": {"type": "string"},
                                "prompt": {"type": "string"},
                                "max_tokens": {"type": "integer", "default": 16},
                                "stream": {"type": "boolean"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "a text_completion (or its stream)",
                    "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}},
                },
                **_errors(),
            },
        }
    }

    def anthropic(summary: str, op: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "operationId": op,
                "parameters": [
                    {"name": "x-api-key", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "anthropic-version", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["model", "messages"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "max_tokens": {"type": "integer"},
                                    "system": {},
                                    "messages": {"type": "array", "items": {"type": "object"}},
                                    "tools": {"type": "array", "items": {"type": "object"}},
                                    "tool_choice": {"type": "object"},
                                    "stop_sequences": {"type": "array", "items": {"type": "string"}},
                                    "stream": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "a message (or its event stream), in Anthropic's shape",
                        "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}},
                    },
                    "400": {"description": "invalid request, in Anthropic's error shape"},
                },
            }
        }

    def plain(summary: str, op: str, media: str = "application/json") -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "operationId": op,
                "responses": {"200": {"description": summary, "content": {media: {"schema": {"type": "object"}}}}},
            }
        }

    def local_model(action: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": f"{action.title()} a local model (master key)",
                "operationId": f"local_model_{action}",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the model's state"}, **_errors()},
            }
        }

    return {
        "/v1/chat/completions": chat,
        "/chat/completions": {"post": {**chat["post"], "operationId": "chat_completions_unversioned"}},
        "/v1/embeddings": embeddings,
        "/embeddings": {"post": {**embeddings["post"], "operationId": "embeddings_unversioned"}},
        "/v1/models": models,
        "/models": {"get": {**models["get"], "operationId": "models_unversioned"}},
        "/v1/models/{model_id}": model,
        "/v1/completions": completions,
        "/v1/responses": {
            "post": {
                "summary": "OpenAI Responses API (function tools, structured output, streaming, stored "
                "responses and previous_response_id), routed to any provider",
                "operationId": "responses",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["model", "input"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "input": {},
                                    "instructions": {"type": "string"},
                                    "tools": {"type": "array", "items": {"type": "object"}},
                                    "stream": {"type": "boolean"},
                                    "max_output_tokens": {"type": "integer"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "a response object (or its event stream)",
                        "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}},
                    },
                    **_errors(),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "summary": "A stored response (your organisation's; 404 otherwise)",
                "operationId": "response_get",
                "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"404": {"description": "not stored", "content": _json("ErrorBody")}},
            },
            "delete": {
                "summary": "Delete a stored response",
                "operationId": "response_delete",
                "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"404": {"description": "not stored", "content": _json("ErrorBody")}},
            },
        },
        "/v1/messages": anthropic(
            "Anthropic Messages API (the anthropic SDK, Claude Code), routed to any provider", "messages"
        ),
        "/v1/messages/count_tokens": anthropic("Estimated input tokens of a Messages request", "count_tokens"),
        "/completions": {"post": {**completions["post"], "operationId": "completions_unversioned"}},
        "/models/{model_id}": {"get": {**model["get"], "operationId": "model_unversioned"}},
        "/v1/status": plain("Providers and models: health, breaker, in flight, queue, latency, last error", "status"),
        "/v1/status/local": plain("Local models and their lifecycle state", "status_local"),
        "/v1/status/events": plain(
            "Local lifecycle and health events (server-sent events)", "status_events", "text/event-stream"
        ),
        "/health": plain("Liveness (always 200 while the process serves)", "health"),
        "/ready": plain("Readiness: config version, store reachability", "ready"),
        "/metrics": plain("Prometheus metrics (master key or server.metrics_token)", "metrics", "text/plain"),
        "/admin/models/{name}/load": local_model("load"),
        "/admin/models/{name}/unload": local_model("unload"),
    }


def build_documents(app: FastAPI) -> tuple[dict[str, Any], dict[str, Any]]:
    """(public document, admin document), of every route: those built on first use are built now."""
    build_routes = getattr(app.state, "build_routes", None)
    if build_routes is not None:
        build_routes()
    full = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    paths: dict[str, Any] = {**full.get("paths", {}), **_hand_paths()}
    _, defs = models_json_schema([(m, "validation") for m in _DOC_MODELS], ref_template=_REF)
    components = {**full.get("components", {})}
    components["schemas"] = {**components.get("schemas", {}), **defs.get("$defs", {})}

    def document(keep: bool, title: str) -> dict[str, Any]:
        chosen = {p: v for p, v in paths.items() if p.startswith("/admin") == keep}
        return {**full, "info": {**full["info"], "title": title}, "paths": chosen, "components": components}

    return document(False, app.title), document(True, f"{app.title} admin")


def install_openapi(app: FastAPI) -> None:
    """``/openapi.json`` (public endpoints, FastAPI's own route) and ``/admin/openapi.json``."""
    built: dict[str, dict[str, Any]] = {}

    def documents() -> dict[str, dict[str, Any]]:
        if not built:
            public, admin = build_documents(app)
            built.update(public=public, admin=admin)
        return built

    def public_openapi() -> dict[str, Any]:
        return documents()["public"]

    app.openapi = public_openapi  # type: ignore[method-assign]

    async def admin_openapi(request: Request) -> JSONResponse:
        return JSONResponse(documents()["admin"])

    app.add_route("/admin/openapi.json", admin_openapi, methods=["GET"], include_in_schema=False)
