"""``/docs``: Swagger UI for ``/openapi.json``, served from the package (no CDN).

The assets come from the ``swagger-ui-bundle`` package (Swagger UI's own distribution files), so the
page works on a gateway without internet access and loads nothing from a third party.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

__all__ = ["add_docs"]

ASSETS = "/docs/assets"


def add_docs(app: FastAPI) -> None:
    """``GET /docs`` and its assets under ``/docs/assets``."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    app.add_route("/docs", docs, methods=["GET"], include_in_schema=False)
