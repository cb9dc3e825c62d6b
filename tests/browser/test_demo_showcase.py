"""The demo shows the product in the first minute: on the signed-in shop page the widget offers
"Continue with Jane?" above the earlier chat; in Jane's console the customer is Verified, with the
shop's attributes, the rated earlier conversation and events from other channels; canned responses are
there to use. Everything comes from `nameplate demo`'s own seed, nothing is added by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from nameplate.demo.seed import DEMO_CANNED, DEMO_CUSTOMER, PAST_CHAT, TIMELINE, seed_demo
from tests.browser.test_console import VIEWPORT, log_in
from tests.harness import RunningServer, start_server
from tests.harness import test_settings as settings_for


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(settings_for(tmp_path))
    try:
        await seed_demo(running.services, "*", showcase=True)
        yield running
    finally:
        await running.stop()


async def test_signed_in_demo_shows_verified_history_timeline_and_canned(
    demo: RunningServer, browser: Browser, artifacts: Path
) -> None:
    desk = await browser.new_context(viewport=VIEWPORT)
    shopper = await browser.new_context(viewport={"width": 1280, "height": 800}, reduced_motion="reduce")
    try:
        jane = await log_in(desk, demo, "jane@acme.example")
        page = await shopper.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(demo.base_url + "/demo/signed-in")
        await expect(page.locator("#account")).to_contain_text(f"Signed in as {DEMO_CUSTOMER['name']}")
        await page.get_by_role("button", name="Open chat").click()
        chat = page.locator("nameplate-chat")
        await expect(chat.locator(".card .name")).to_have_text("Continue with Jane Chang-Katzenberg?")
        past = chat.locator(".past .bubble")
        await expect(past).to_have_text([body for _, _, body in PAST_CHAT])
        await chat.locator(".panel").screenshot(path=str(artifacts / "demo-signed-in-widget.png"))

        composer = page.get_by_role("textbox", name="Your message")
        await composer.fill("Hi Jane, it's Sam again — do the Ridgeline boots come in 43?")
        await composer.press("Enter")
        item = jane.page.locator("#mine-list li").filter(has_text=DEMO_CUSTOMER["name"])
        await item.click()
        console = jane.page
        await expect(console.locator("#cust-verified")).to_have_text("Verified")
        attrs = console.locator("#cust-attrs")
        for key, value in DEMO_CUSTOMER["attributes"].items():
            await expect(attrs).to_contain_text(key)
            await expect(attrs).to_contain_text(str(value))
        history = console.locator("#cust-history")
        for _, channel, summary, _, _ in TIMELINE:
            await expect(history).to_contain_text(summary)
            await expect(history).to_contain_text(channel)
        await expect(history).to_contain_text("Jane Chang-Katzenberg")
        await expect(history).to_contain_text("5/5")

        # The seeded canned responses are offered in the composer.
        reply = console.get_by_label("Message", exact=True)
        await reply.fill("/")
        menu = console.locator("#canned-menu")
        await expect(menu).to_be_visible()
        await expect(menu.locator("li")).to_have_count(len(DEMO_CANNED))
        await reply.fill("")
        await console.screenshot(path=str(artifacts / "demo-signed-in-console.png"))
        assert errors == []
        jane.assert_clean()
    finally:
        await desk.close()
        await shopper.close()
