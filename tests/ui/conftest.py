"""The dashboard in a real browser: Playwright driving Debian's chromium (no browser download).

Without a chromium the tests are skipped with the reason, except under CI (``CI=true``), where
they fail: .ci/run installs it.  ``MODELYARD_SCREENSHOTS=DIR`` makes the page tour save a PNG of
every page (``make screenshots`` writes docs/img/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer, fake_class
from tests.e2e.conftest import base_url, gateway_config
from tests.e2e.conftest import fakes as fakes
from tests.helpers import ServerProcess

MASTER = "sk-master-dashboard-test"
H = {"Authorization": f"Bearer {MASTER}"}


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        message = "no chromium on this machine: `apt-get install chromium` (.ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def spare() -> Iterator[FakeServer]:
    """A provider of its own, to take down."""
    fake = fake_class("openai")().start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()


def dashboard_config(fakes: dict[str, FakeServer], spare: FakeServer) -> dict[str, Any]:
    config = gateway_config(fakes)
    config["providers"]["spare"] = {
        "kind": "openai",
        "base_url": base_url(spare),
        "api_key": "sk-spare-secret",
        "health": {"interval_s": 1},
    }
    config["providers"]["local"] = {"kind": "llamacpp", "keep_alive": "10m"}
    config["models"]["spare-gpt"] = {"provider": "spare", "model": "gpt-4o-mini"}
    config["models"]["tiny"] = {"provider": "local", "model": "gemma3-270m"}
    config["routes"]["spare"] = {"models": ["spare-gpt"]}
    config["budgets"] = [
        {"name": "monthly", "scope": "global", "limit_usd": 1.0, "period": "month", "alert_at": [0.5, 0.8]}
    ]
    return config


@pytest.fixture(scope="module")
def gateway(
    fakes: dict[str, FakeServer], spare: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        dashboard_config(fakes, spare), tmp_path_factory.mktemp("ui"), env={"MODELYARD_MASTER_KEY": MASTER}
    )
    try:
        yield proc
    finally:
        proc.stop()


def admin(gw: ServerProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{gw.url}/admin{path}", headers={**H, **kw.pop("headers", {})}, timeout=30, **kw)


def screenshot_dir() -> Path | None:
    value = os.environ.get("MODELYARD_SCREENSHOTS")
    return Path(value) if value else None
