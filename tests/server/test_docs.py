"""``/docs`` loads nothing from outside the gateway (the security probe saw cdn.jsdelivr.net)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = {
        "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"}},
        "models": {"gpt": {"provider": "o", "model": "gpt-4o"}},
    }
    proc = ServerProcess(cfg, Path(tmp_path_factory.mktemp("docs")))
    try:
        yield proc
    finally:
        proc.stop()


def test_docs_reference_no_external_url(srv: ServerProcess) -> None:
    html = httpx.get(srv.url + "/docs").text
    assert "swagger-ui" in html.lower()
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
    assert urls, html
    for url in urls:
        assert not url.startswith(("http:", "https:", "//")), url
        if url.startswith("/docs/assets/"):
            assert httpx.get(srv.url + url).status_code == 200, url
    public = httpx.get(srv.url + "/openapi.json").json()
    admin = httpx.get(srv.url + "/admin/openapi.json").json()
    assert "/v1/chat/completions" in public["paths"] and "/admin/keys" in admin["paths"]
