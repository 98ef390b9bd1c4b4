"""The OpenAPI documents cover every endpoint the app serves (contracts: "OpenAPI").

``/openapi.json`` has every public endpoint (the hot ones served by the fast path included, with
their request and response schemas); ``/admin/openapi.json`` every ``/admin`` endpoint.  A new
route without a schema fails here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.routing import Route

from modelyard.config import parse_config
from modelyard.config.source import ConfigSource
from modelyard.runtime import RuntimeHolder
from modelyard.server.app import FastPath, create_app
from modelyard.server.openapi import build_documents
from modelyard.server.state import AppState

#: served but not API endpoints
_NOT_API = {"/openapi.json", "/admin/openapi.json", "/docs"}


@pytest.fixture
def app() -> FastPath:
    cfg = parse_config(
        {
            "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"}},
            "models": {"gpt": {"provider": "o"}},
        }
    )
    return create_app(AppState(holder=RuntimeHolder(cfg), source=ConfigSource(None)))


def served(fp: FastPath) -> set[tuple[str, str]]:
    """(method, path) of everything the app answers, in OpenAPI's path syntax."""
    out = {(m, p) for m, p in fp.routes}
    for route in fp.app.routes:
        if isinstance(route, Route) and route.path not in _NOT_API:
            path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
            out |= {(m, path) for m in route.methods or () if m != "HEAD"}
    for route in fp.app.router.routes:  # FastAPI's included routers (admin, stats)
        included = getattr(route, "original_router", route)
        for sub in getattr(included, "routes", ()) or ():
            if isinstance(sub, Route):
                path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", sub.path)
                out |= {(m, path) for m in sub.methods or () if m != "HEAD"}
    # the dashboard's pages (HTML, its CSV export) are not API: docs/dashboard.md describes them
    return {(m, p) for m, p in out if not p.startswith("/ui")}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item}


def test_every_served_endpoint_is_documented(app: FastPath) -> None:
    public, admin = build_documents(app.app)
    endpoints = served(app)
    assert ("POST", "/admin/keys") in endpoints and ("POST", "/v1/chat/completions") in endpoints
    missing = endpoints - documented(public) - documented(admin)
    assert not missing, f"endpoints without an OpenAPI description: {sorted(missing)}"
    assert all(not p.startswith("/admin") for p in public["paths"])
    assert all(p.startswith("/admin") for p in admin["paths"])


def test_the_hot_endpoints_have_their_schemas(app: FastPath) -> None:
    public, _ = build_documents(app.app)
    chat = public["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    schemas = public["components"]["schemas"]
    assert {"messages", "model", "modelyard"} <= set(schemas["ChatCompletionRequest"]["properties"])
    assert "cost_usd" in schemas["Usage"]["properties"]
    assert set(schemas["ErrorBody"]["properties"]) == {"error"}
    assert public["paths"]["/v1/embeddings"]["post"]["requestBody"]
    assert "/v1/stats" in public["paths"] and "/v1/estimate" in public["paths"]


def test_the_management_endpoints_have_request_and_response_schemas(app: FastPath) -> None:
    """#12 "Done when": every management endpoint in the OpenAPI document with its schemas."""
    _, admin = build_documents(app.app)
    untyped = []
    for path, ops in admin["paths"].items():
        for method, op in ops.items():
            if "management" not in op.get("tags", ()) or path in ("/admin/events", "/admin/config/export"):
                continue  # a server-sent event stream and a YAML file: described in their summaries
            ok = next((r for code, r in op["responses"].items() if code.startswith("2")), {})
            schema = ok.get("content", {}).get("application/json", {}).get("schema", {})
            if not schema:
                untyped.append(f"{method.upper()} {path}: response")
            if (
                method in ("post", "put", "patch")
                and "requestBody" not in op
                and not path.endswith(("/test", "/enable", "/disable"))
            ):
                untyped.append(f"{method.upper()} {path}: request")
    assert not untyped, untyped
