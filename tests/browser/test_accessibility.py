"""Accessibility as a test: axe-core (the npm package, installed by .ci/run into .node/) runs in Chromium on
every page people use — the shop with the widget open, log-in, the console with a chat and its customer,
the supervisor's list, live board and transcript, and the admin pages — and finds no serious or critical
violation. The demo's own seed supplies the data (a verified customer, a rated past chat, canned responses).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from nameplate.demo.seed import DEMO_CUSTOMER, DEMO_PASSWORD, seed_demo
from nameplate.web import login as login_module
from tests.harness import RunningServer, start_server
from tests.harness import test_settings as settings_for

AXE = Path(
    os.environ.get("AXE_CORE_JS", Path(__file__).resolve().parents[2] / ".node/node_modules/axe-core/axe.min.js")
)
FAILING_IMPACTS = {"serious", "critical"}
# The widget lands on other people's pages: it must not add even moderate problems (a second banner).
WIDGET_IMPACTS = {"moderate", "serious", "critical"}
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture
def axe_source() -> str:
    if not AXE.exists():
        message = f"axe-core is not installed at {AXE} (npm install --prefix .node axe-core)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI: " + message)
        pytest.skip("SKIPPED LOUDLY: " + message)
    return AXE.read_text()


@pytest.fixture
async def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningServer]:
    monkeypatch.setattr(login_module, "LOGIN_ATTEMPTS", 1000)
    running = await start_server(settings_for(tmp_path))
    try:
        await seed_demo(running.services, "*", showcase=True)
        yield running
    finally:
        await running.stop()


async def violations(page: Page, axe_source: str, impacts: set[str] = FAILING_IMPACTS) -> list[dict[str, Any]]:
    """axe's findings of these impacts on the page as it is now (open shadow roots included)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.add_script_tag(content=axe_source)
    result = await page.evaluate("async () => await window.axe.run(document, { resultTypes: ['violations'] })")
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [{"target": n["target"], "summary": n.get("failureSummary", "")[:300]} for n in v["nodes"][:5]],
        }
        for v in result["violations"]
        if v["impact"] in impacts
    ]


async def check(
    page: Page, axe_source: str, name: str, found: dict[str, list[dict[str, Any]]], strict: bool = False
) -> None:
    found[name] = await violations(page, axe_source, WIDGET_IMPACTS if strict else FAILING_IMPACTS)


async def log_in(context: BrowserContext, server: RunningServer, email: str) -> Page:
    page = await context.new_page()
    await page.goto(server.base_url + "/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(server.base_url + "/console")
    await expect(page.locator("#load-text")).to_have_text(re.compile(r"^\d+ of \d+ chats?$"))
    return page


async def test_every_page_has_no_serious_or_critical_violations(
    demo: RunningServer, browser: Browser, axe_source: str, artifacts: Path
) -> None:
    found: dict[str, list[dict[str, Any]]] = {}
    # CSP forbids inline scripts on the console pages; the test's own injected axe is let through.
    desk = await browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    admin = await browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    shopper = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    # Another device for the signed-in visit: its own localStorage, so the widget starts closed and fresh.
    member = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    try:
        # The log-in page, before anyone signs in.
        login_page = await desk.new_page()
        await login_page.goto(demo.base_url + "/login")
        await check(login_page, axe_source, "login", found)
        await login_page.close()

        # The shop with the widget open: first anonymous, then as the signed-in customer with history.
        shop = await shopper.new_page()
        await shop.goto(demo.base_url + "/demo")
        await shop.get_by_role("button", name="Open chat").click()
        await expect(shop.get_by_role("textbox", name="Your message")).to_be_focused()
        await check(shop, axe_source, "shop, widget open", found, strict=True)
        jane = await log_in(desk, demo, "jane@acme.example")
        shop = await member.new_page()
        await shop.goto(demo.base_url + "/demo/signed-in")
        await shop.get_by_role("button", name="Open chat").click()
        chat = shop.locator("nameplate-chat")
        await expect(chat.locator(".card .name")).to_have_text("Continue with Jane Chang-Katzenberg?")
        await check(shop, axe_source, "signed-in shop, widget with history", found, strict=True)
        composer = shop.get_by_role("textbox", name="Your message")
        await composer.fill("Do the Ridgeline boots come in 43?")
        await composer.press("Enter")

        # The console with that chat open and the customer beside it.
        await jane.locator("#mine-list li").filter(has_text=DEMO_CUSTOMER["name"]).click()
        await expect(jane.locator("#cust-verified")).to_have_text("Verified")
        await expect(chat.locator(".card .name")).to_have_text("Jane Chang-Katzenberg")
        await check(jane, axe_source, "console", found)
        await jane.goto(demo.base_url + "/settings/canned")
        await check(jane, axe_source, "canned responses", found)
        await jane.goto(demo.base_url + "/profile")
        await check(jane, axe_source, "profile", found)

        # The supervisor's desk and the admin pages, as the admin.
        priya = await log_in(admin, demo, "priya@acme.example")
        await priya.goto(demo.base_url + "/supervisor/conversations")
        await check(priya, axe_source, "supervisor list", found)
        first = priya.locator("tr[data-conversation-id] a").first
        await first.click()
        await expect(priya.locator("h1")).to_be_visible()
        await check(priya, axe_source, "supervisor transcript", found)
        await priya.goto(demo.base_url + "/supervisor/live")
        await expect(priya.get_by_text(DEMO_CUSTOMER["name"]).first).to_be_visible()
        await check(priya, axe_source, "supervisor live", found)
        for path in ("/admin/agents", "/admin/teams", "/admin/integrations", "/console/mail"):
            await priya.goto(demo.base_url + path)
            await check(priya, axe_source, path, found)
    finally:
        for context in (desk, admin, shopper, member):
            await context.close()
    failing = {page: items for page, items in found.items() if items}
    (artifacts / "axe-violations.json").write_text(json.dumps(failing, indent=1))
    assert len(found) == 13
    assert not failing, json.dumps(failing, indent=1)
