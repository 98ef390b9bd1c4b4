"""The dashboard (#16) in headless chromium against a gateway with fake providers and the real local
model: log in, watch a provider go down, switch a route and roll back, load a local model, create and
revoke a key; no console errors and no other origin on any page; XSS, CSRF and session rules."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.server.ui import PAGES
from modelyard.testing import FakeServer
from tests.e2e.conftest import base_url, gateway_config
from tests.helpers import ServerProcess
from tests.ui.conftest import MASTER, admin, screenshot_dir

Page = Any  # playwright.sync_api.Page (imported lazily with the browser)


class Watched:
    """A page, with what went wrong in it: console errors, page errors, requests to other origins."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        #: substrings of problems a test expects (a refused login's own 401)
        self.expected: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on(
            "request",
            lambda r: (
                None if r.url.startswith((origin, "data:", "blob:")) else self.problems.append(f"other origin: {r.url}")
            ),
        )

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.accept()

        page.on("dialog", dialog)


@pytest.fixture
def ui(browser: Any, gateway: ServerProcess) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    watched = Watched(page, gateway.url)
    try:
        yield watched
    finally:
        context.close()
    unexpected = [p for p in watched.problems if not any(e in p for e in watched.expected)]
    assert not unexpected, unexpected


def login(ui: Watched, gw: ServerProcess, key: str = MASTER) -> None:
    page = ui.page
    page.goto(f"{gw.url}/ui/login")
    page.get_by_label("Master key or org admin key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/ui/overview$"))


def deployed(page: Page) -> None:
    """Wait for the "Deployed revision N" toast, then clear it: it stays up for 8 s, and the next
    deploy's wait must not see this one's (an edit right after an add once read the old config)."""
    page.wait_for_selector("#toast:has-text('Deployed revision')")
    page.evaluate("document.getElementById('toast').textContent = ''")


def show(page: Page, gw: ServerProcess, path: str) -> None:
    """Open a dashboard page and wait until its script has drawn it."""
    page.goto(f"{gw.url}/ui/{path}")
    page.wait_for_selector("#loading", state="detached")


def served_by(gw: ServerProcess, model: str = "main") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    r = httpx.post(
        f"{gw.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    return r.headers["x-modelyard-model"]


def test_a_wrong_key_cannot_log_in_and_pages_need_a_session(ui: Watched, gateway: ServerProcess) -> None:
    page = ui.page
    ui.expected.append("status of 401")  # the refused login answers 401
    show(page, gateway, "providers")
    assert page.url.endswith("/ui/login")
    page.get_by_label("Master key or org admin key").fill("sk-wrong")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text().startswith("That key cannot log in")
    login(ui, gateway)
    cookie = next(c for c in page.context.cookies() if c["name"] == "modelyard_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert MASTER not in cookie["value"]


def test_every_page_renders_without_errors(ui: Watched, gateway: ServerProcess) -> None:
    for model in ("main", "gpt", "claude", "gem", "llama", "main", "claude"):  # some usage to show
        served_by(gateway, model)
    login(ui, gateway)
    shots = screenshot_dir()
    for path, title in PAGES:
        for width, height in ((1280, 800), (390, 844)):
            ui.page.set_viewport_size({"width": width, "height": height})
            response = ui.page.goto(f"{gateway.url}/ui/{path}")
            assert response.status == 200
            assert "default-src 'self'" in response.headers["content-security-policy"]
            ui.page.wait_for_selector("#loading", state="detached")
            assert ui.page.locator("main h1").inner_text() == title
            assert not ui.page.locator("main .error").count(), ui.page.locator("main .error").all_inner_texts()
            overflow = ui.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} at {width}px scrolls sideways by {overflow}px"
            if shots is not None and width == 1280:
                shots.mkdir(parents=True, exist_ok=True)
                ui.page.screenshot(path=str(shots / f"dashboard-{path}.png"), full_page=True)


def test_no_serious_accessibility_violation_on_any_page(ui: Watched, gateway: ServerProcess) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    login(ui, gateway)
    found: list[str] = []
    for path, _ in [*PAGES, ("login", "")]:
        for width, height in ((1280, 800), (390, 844)):
            ui.page.set_viewport_size({"width": width, "height": height})
            show(ui.page, gateway, path) if path != "login" else ui.page.goto(f"{gateway.url}/ui/login")
            results = axe.run(ui.page)
            for v in results.response["violations"]:
                if v["impact"] in ("serious", "critical"):
                    found.append(f"{path} at {width}px: {v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])}")
    assert not found, "\n".join(found)


def test_provider_cards_and_a_provider_going_down(ui: Watched, gateway: ServerProcess, spare: FakeServer) -> None:
    login(ui, gateway)
    page = ui.page
    show(page, gateway, "providers")
    for name in ("openai", "anthropic", "gemini", "ollama", "spare", "local"):
        assert page.locator(f'[data-provider="{name}"]').count() == 1
    card = page.locator('[data-provider="spare"]')
    card.get_by_role("button", name="Test spare").click()
    page.wait_for_selector('[data-provider="spare"] .result.healthy')
    spare.stop_thread()  # the upstream is gone: health checks (every 1 s) fail
    t0 = time.monotonic()
    page.wait_for_selector('[data-provider="spare"].unhealthy', timeout=10_000)
    print(f"\nprovider down -> card red: {time.monotonic() - t0:.1f} s")
    assert time.monotonic() - t0 < 5 + 1.5  # 5 s, plus the health check's own interval
    show(page, gateway, "overview")
    assert re.match(r"\d+/\d+ healthy", page.get_by_test_id("healthbar").inner_text())
    assert page.get_by_test_id("overall").inner_text() == "degraded"


def test_switch_a_route_then_roll_back(ui: Watched, gateway: ServerProcess) -> None:
    login(ui, gateway)
    page = ui.page
    assert served_by(gateway) == "gpt"
    show(page, gateway, "routes")
    route = page.locator('[data-route="main"]')
    route.get_by_label("Primary model of main").select_option("claude")
    route.get_by_role("button", name="Switch main").click()
    deployed(page)
    assert served_by(gateway) == "claude"
    page.wait_for_selector('[data-route="main"] [data-testid="pool"]:text-is("claude")')
    show(page, gateway, "config")
    revisions = admin(gateway, "GET", "/config/revisions").json()["data"]
    before = revisions[1]["id"]
    page.get_by_role("button", name=f"Diff of revision {revisions[0]['id']}").click()
    page.wait_for_selector("pre.diff:has-text('claude')")
    page.get_by_role("button", name=f"Roll back to revision {before}").click()
    deployed(page)
    assert ui.dialogs and "Roll back" in ui.dialogs[-1]
    assert served_by(gateway) == "gpt"
    page.get_by_label("Filter by action").fill("config.rollback")
    page.wait_for_selector("td:has-text('config.rollback')")


def test_reorder_a_fallback_chain_and_use_a_model_in_a_route(ui: Watched, gateway: ServerProcess) -> None:
    login(ui, gateway)
    page = ui.page
    before = admin(gateway, "GET", "/routes/main").json()["fallbacks"]
    assert len(before) >= 2
    show(page, gateway, "routes")
    page.get_by_role("button", name=f"Move {before[0]} down in main").click()
    deployed(page)
    after = admin(gateway, "GET", "/routes/main").json()["fallbacks"]
    assert after[:2] == [before[1], before[0]]
    show(page, gateway, "models")
    page.get_by_label("Route for gem").select_option("spare")
    page.get_by_role("button", name="Use gem in the chosen route").click()
    deployed(page)
    assert served_by(gateway, "spare") == "gem"


def test_route_and_model_limits_are_edited_in_place(ui: Watched, gateway: ServerProcess) -> None:
    login(ui, gateway)
    page = ui.page
    show(page, gateway, "routes")
    card = page.locator('[data-route="main"]')
    card.get_by_text("Timeouts, retries and rate limits").click()
    card.get_by_label("Timeout (s) of main").fill("42")
    card.get_by_label("Retries of main").fill("2")
    card.get_by_role("button", name="Save limits of main").click()
    deployed(page)
    route = admin(gateway, "GET", "/routes/main").json()["config"]
    assert route["timeout_s"] == 42 and route["retries"] == 2
    model = card.locator("fieldset", has_text="gpt-mini")
    model.get_by_label("Requests per minute of gpt-mini").fill("600")
    before = int(admin(gateway, "GET", "/config").headers["etag"].strip('"'))
    model.get_by_role("button", name="Save limits of gpt-mini").click()
    page.wait_for_selector(f"#toast:has-text('Deployed revision {before + 1}')")  # not the first save's toast
    assert admin(gateway, "GET", "/models/gpt-mini").json()["config"]["rpm"] == 600
    assert served_by(gateway) in ("gpt", "claude")


def test_switch_by_keyboard_alone(ui: Watched, gateway: ServerProcess) -> None:
    login(ui, gateway)
    page = ui.page
    show(page, gateway, "routes")
    page.wait_for_selector('[data-route="main"]')
    for _ in range(80):
        page.keyboard.press("Tab")
        if (
            page.evaluate("document.activeElement.id")
            and page.evaluate(
                "document.activeElement.closest('[data-route]')?.dataset.route === 'main'"
                " && document.activeElement.tagName"
            )
            == "SELECT"
        ):
            break
    else:
        pytest.fail("the route's model picker is not reachable with Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Switch main"
    page.keyboard.press("Enter")
    deployed(page)


def test_load_a_local_model_and_watch_its_state(ui: Watched, gateway: ServerProcess) -> None:
    login(ui, gateway)
    page = ui.page
    show(page, gateway, "local")
    row = page.locator("tr", has=page.locator('[data-local="tiny"]'))
    assert row.locator("[data-state]").get_attribute("data-state") == "not_loaded"
    row.get_by_role("button", name="Load tiny", exact=True).click()
    page.wait_for_selector('tr:has([data-local="tiny"]) [data-state="ready"]', timeout=120_000)
    page.get_by_role("button", name="Unload tiny", exact=True).click()
    page.wait_for_selector('tr:has([data-local="tiny"]) [data-state="not_loaded"]', timeout=30_000)


def test_force_local_only_deploys_local_only_on_every_route(ui: Watched, gateway: ServerProcess) -> None:
    login(ui, gateway)
    page = ui.page
    show(page, gateway, "local")
    before = int(admin(gateway, "GET", "/config").headers["etag"].strip('"'))
    page.get_by_role("button", name="Force local only").click()
    page.wait_for_selector(f"#toast:has-text('Deployed revision {before + 1}')")
    routes = admin(gateway, "GET", "/routes").json()["data"]
    assert routes and all(r["config"]["local_only"] is True for r in routes)
    page.get_by_role("button", name="Allow cloud models").click()
    page.wait_for_selector(f"#toast:has-text('Deployed revision {before + 2}')")
    assert not any(r["config"]["local_only"] for r in admin(gateway, "GET", "/routes").json()["data"])
    assert served_by(gateway) in ("gpt", "claude")


def test_create_and_revoke_a_key(ui: Watched, gateway: ServerProcess) -> None:
    org = admin(gateway, "POST", "/orgs", json={"name": "team-ui"}).json()
    login(ui, gateway)
    page = ui.page
    show(page, gateway, "keys")
    page.get_by_label("Organisation", exact=True).select_option(org["id"])
    page.get_by_label("Key name").fill("ui-made")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-key").inner_text()
    assert key.startswith("my-")
    chat = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        httpx.post(
            f"{gateway.url}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}
        ).status_code
        == 200
    )
    page.reload()
    assert key not in page.content()  # shown once
    page.get_by_role("button", name="Revoke ui-made").click()
    page.wait_for_selector('tr:has([data-key="ui-made"]) .badge.revoked')
    time.sleep(0.1)
    assert (
        httpx.post(
            f"{gateway.url}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}
        ).status_code
        == 401
    )


def test_the_provider_form_asks_what_each_kind_needs(
    ui: Watched, gateway: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    """Add provider: the form shows the chosen kind's keys only; the key is stored as an encrypted
    credential (never shown again); editing can change the kind without leaving the old kind's keys."""
    login(ui, gateway)
    page = ui.page
    show(page, gateway, "providers")
    page.get_by_role("button", name="Add provider").click()
    form = page.get_by_role("form", name="Add a provider")
    timeout, lifecycle = (
        "Timeout per attempt (s)",
        {
            "Keep loaded when idle",
            "Load at start-up (comma-separated models)",
            "Models loaded at once",
            "Memory budget (MB)",
        },
    )
    labels = {
        "openai": {"Base URL", "API key", "Runs on this machine or network", timeout},
        "anthropic": {"Base URL", "API key", "anthropic-version header", timeout},
        "gemini": {"Base URL", "API key", timeout},
        "ollama": {"Base URL", "Pull a missing model", timeout, *lifecycle},
        # in-process: no URL, no key
        "llamacpp": {"Folder of .gguf files", "Context size (tokens)", "Threads per model", *lifecycle},
    }
    for kind, wanted in labels.items():
        form.get_by_label("Kind").select_option(kind)
        assert set(form.locator(".field label").all_inner_texts()) == {"Name", "Kind", *wanted}, kind
    form.get_by_label("Kind").select_option("anthropic")
    assert form.get_by_label("Base URL").get_attribute("placeholder") == "https://api.anthropic.com"
    form.get_by_label("Name").fill("ui-claude")
    form.get_by_label("Base URL").fill(base_url(fakes["anthropic"]))
    form.get_by_label("API key").fill("sk-ant-typed-in-the-browser")
    form.get_by_label("Timeout per attempt (s)").fill("12.5")
    form.get_by_role("button", name="Save and deploy").click()
    deployed(page)
    page.wait_for_selector('[data-provider="ui-claude"]')
    try:
        stored = admin(gateway, "GET", "/providers/ui-claude").json()
        assert stored["config"]["kind"] == "anthropic" and stored["config"]["timeout_s"] == 12.5
        assert "sk-ant-typed-in-the-browser" not in str(stored)
        assert str(stored["config"]["api_key"]).startswith("credential:")
        assert "sk-ant-typed-in-the-browser" not in page.content()
        # edit: the kind becomes openai; the anthropic-only key goes, the rest stays
        page.locator('[data-provider="ui-claude"]').get_by_role("button", name="Edit ui-claude").click()
        edit = page.get_by_role("form", name="Edit ui-claude")
        assert edit.get_by_label("API key").input_value() == ""  # never sent back to the browser
        edit.get_by_label("anthropic-version header").fill("2023-06-01")
        edit.get_by_label("Kind").select_option("openai")
        edit.get_by_label("Base URL").fill(base_url(fakes["openai"]))
        edit.get_by_role("button", name="Save and deploy").click()
        deployed(page)
        config = admin(gateway, "GET", "/providers/ui-claude").json()["config"]
        assert config["kind"] == "openai" and "api_version" not in config
        assert config["timeout_s"] == 12.5 and str(config["api_key"]).startswith("credential:")
    finally:
        admin(gateway, "DELETE", "/providers/ui-claude")


def test_names_are_text_never_markup(ui: Watched, gateway: ServerProcess) -> None:
    evil = "<img src=x onerror=alert(1)>"
    org = admin(gateway, "POST", "/orgs", json={"name": evil}).json()
    admin(gateway, "POST", "/keys", json={"org_id": org["id"], "name": evil})
    login(ui, gateway)
    show(ui.page, gateway, "keys")
    ui.page.wait_for_selector(f'[data-key="{evil}"]')
    assert ui.page.locator(f'[data-key="{evil}"]').first.inner_text() == evil
    assert not ui.page.locator("main img").count() and not ui.dialogs


def test_changes_need_the_csrf_token(ui: Watched, gateway: ServerProcess) -> None:
    login(ui, gateway)
    request = ui.page.context.request  # carries the session cookie, like a forged cross-site post would
    refused = request.post(f"{gateway.url}/admin/orgs", data={"name": "forged"})
    assert refused.status == 403 and "csrf" in refused.text().lower()
    token = ui.page.locator('meta[name="csrf-token"]').get_attribute("content")
    made = request.post(f"{gateway.url}/admin/orgs", data={"name": "fine"}, headers={"X-CSRF-Token": token})
    assert made.status == 201
    assert request.get(f"{gateway.url}/admin/orgs").status == 200  # reads need no token
    assert request.post(f"{gateway.url}/ui/logout", form={"csrf": "wrong"}).status == 403
    ui.page.get_by_role("button", name="Log out").click()
    ui.page.wait_for_url(re.compile(r"/ui/login$"))
    assert request.get(f"{gateway.url}/admin/orgs").status == 401


def test_an_org_admin_sees_its_org_and_its_session_ends_with_its_key(ui: Watched, gateway: ServerProcess) -> None:
    mine = admin(gateway, "POST", "/orgs", json={"name": "org-a"}).json()
    other = admin(gateway, "POST", "/orgs", json={"name": "org-b"}).json()
    admin(gateway, "POST", "/keys", json={"org_id": other["id"], "name": "not-mine"})
    org_admin = admin(gateway, "POST", "/keys", json={"org_id": mine["id"], "name": "boss", "role": "org_admin"}).json()
    login(ui, gateway, org_admin["key"])
    page = ui.page
    show(page, gateway, "keys")
    page.wait_for_selector('[data-key="boss"]')
    assert not page.locator('[data-key="not-mine"]').count()
    assert page.locator('meta[name="csrf-token"]').get_attribute("content")
    admin(gateway, "POST", f"/keys/{org_admin['id']}/revoke")
    t0 = time.monotonic()
    while page.context.request.get(f"{gateway.url}/admin/keys").status != 401:
        assert time.monotonic() - t0 < 6, "the revoked key's session still works"
        time.sleep(0.25)
    ui.expected.append("status of 401")
    show(page, gateway, "overview")
    assert page.url.endswith("/ui/login")


def test_logins_are_rate_limited(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    gw = ServerProcess(gateway_config(fakes), tmp_path, env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        codes = [httpx.post(f"{gw.url}/ui/login", data={"key": f"sk-guess-{i}"}).status_code for i in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        late = httpx.post(f"{gw.url}/ui/login", data={"key": MASTER})
        assert late.status_code == 429 and int(late.headers["retry-after"]) > 0  # even the right key waits
    finally:
        gw.stop()


def test_without_a_master_key_the_dashboard_is_read_only_and_loopback_only(
    fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    gw = ServerProcess(gateway_config(fakes), tmp_path)
    try:
        page = httpx.get(f"{gw.url}/ui/overview")
        assert page.status_code == 200 and "MODELYARD_MASTER_KEY" in page.text and "Log out" not in page.text
        for headers in ({"Host": "gateway.example.com"}, {"Origin": "https://evil.example"}):
            assert httpx.get(f"{gw.url}/ui/overview", headers=headers).status_code == 403
        assert httpx.post(f"{gw.url}/admin/orgs", json={"name": "x"}).status_code == 403  # no writes at all
    finally:
        gw.stop()


def test_compare_with_current_from_the_routes_page_and_apply(
    ui: Watched, gateway: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    """#17: the Routes page's "Compare with current" opens the Compare page set up for the route;
    the run's progress, result and recommendation show, and applying it deploys the switch."""
    fakes["openai"].script("gpt-4o-mini", "4, and Paris")  # gpt-mini answers both prompts right
    try:
        login(ui, gateway)
        page = ui.page
        show(page, gateway, "routes")
        page.get_by_role("link", name="Compare main with its current model").click()
        page.wait_for_url(re.compile(r"/ui/compare\?route=main$"))
        page.wait_for_selector("#loading", state="detached")
        assert page.get_by_label("Compare gpt", exact=True).is_checked()
        assert page.get_by_label("Compare gpt-mini", exact=True).is_checked()
        page.get_by_label("Compare claude", exact=True).uncheck()
        page.get_by_label("Grader").select_option("contains")
        page.get_by_role("button", name="Compare with gpt").click()
        page.wait_for_selector("#toast:has-text('Comparison done')", timeout=30_000)
        page.wait_for_selector("[data-testid='winner'] .big:text-is('gpt-mini')")
        assert page.locator("[data-testid='best-for-accuracy'] .big").inner_text() == "gpt-mini"
        runs = admin(gateway, "GET", "/comparisons").json()["data"]
        assert runs[0]["models"] == ["gpt", "gpt-mini"] and runs[0]["status"] == "done"
        report = page.get_by_role("link", name="Report").first
        assert report.get_attribute("href") == f"/admin/comparisons/{runs[0]['id']}/report"
        page.get_by_role("button", name="Switch main to gpt-mini").click()
        deployed(page)
        assert served_by(gateway) == "gpt-mini"
    finally:
        fakes["openai"].reset()
        etag = admin(gateway, "GET", "/config").headers["etag"]
        admin(gateway, "POST", "/routes/main/switch", json={"model": "gpt"}, headers={"If-Match": etag})
    assert served_by(gateway) == "gpt"
