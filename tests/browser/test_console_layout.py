"""The console at every width, buttons that stay readable, previews that say who wrote, and Escape in the
widget from anywhere on the page — in Chromium, with websocket visitors and colleagues."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from tests.browser.test_console import chat_item, log_in, visitor_named
from tests.harness import RunningServer, connect_agent

JANE, TOMAS = "jane@acme.example", "tomas@acme.example"


def channel(value: float) -> float:
    value /= 255
    return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4


def contrast(rgb_a: str, rgb_b: str) -> float:
    """WCAG contrast ratio of two computed `rgb(r, g, b)` colours."""

    def luminance(rgb: str) -> float:
        r, g, b = (float(part) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

    high, low = sorted((luminance(rgb_a), luminance(rgb_b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def no_sideways_scroll(page: object) -> bool:
    return await page.evaluate(  # type: ignore[attr-defined]
        "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


async def test_customer_drawer_below_the_breakpoint_and_confirm_close_contrast(
    server: RunningServer, browser: Browser, artifacts: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1000, "height": 800}, reduced_motion="reduce")
    try:
        jane = await log_in(context, server, JANE)
        page = jane.page
        visitor, _ = await visitor_named(server, "Ada Lovelace", plan="pro")
        await visitor.send(type="message", client_id="a1", body="Do you ship tents to Norway?")
        await chat_item(page, "Ada Lovelace").click()
        sidebar = page.locator("#customer")
        toggle = page.get_by_role("button", name="Customer", exact=True)
        await expect(toggle).to_be_visible()
        await expect(toggle).to_have_attribute("aria-expanded", "false")
        await expect(sidebar).to_be_hidden()  # below 1180 px: a closed drawer, out of the way

        await toggle.click()
        await expect(sidebar).to_be_visible()
        await expect(toggle).to_have_attribute("aria-expanded", "true")
        await expect(page.locator("#cust-name")).to_have_text("Ada Lovelace")
        await expect(page.locator("#cust-attrs")).to_contain_text("pro")
        await expect(page.get_by_role("button", name="Close customer details")).to_be_focused()
        box = await sidebar.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1000 + 1 and box["x"] >= 1000 - 360 - 1
        await page.screenshot(path=str(artifacts / "console-drawer.png"))
        await page.keyboard.press("Escape")
        await expect(sidebar).to_be_hidden()
        await expect(toggle).to_be_focused()
        await toggle.click()
        await page.get_by_role("button", name="Close customer details").click()
        await expect(sidebar).to_be_hidden()
        assert await no_sideways_scroll(page)

        # Wide again: the sidebar is a column beside the chat and the drawer button is gone.
        await page.set_viewport_size({"width": 1440, "height": 900})
        await expect(sidebar).to_be_visible()
        await expect(toggle).to_be_hidden()
        # Narrow (a phone): list above the conversation, nothing scrolls sideways.
        await page.set_viewport_size({"width": 480, "height": 900})
        await expect(page.locator("#mine-list")).to_be_visible()
        await expect(page.get_by_label("Message", exact=True)).to_be_visible()
        await page.screenshot(path=str(artifacts / "console-narrow.png"))
        wide = await page.evaluate(
            "() => [...document.querySelectorAll('body *')]"
            ".filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
            ".slice(0, 12).map(e => e.tagName + '#' + e.id + '.' + e.className)"
        )
        assert await no_sideways_scroll(page), wide
        await page.set_viewport_size({"width": 1440, "height": 900})

        # "Confirm close" under the mouse: solid red with white text, not white on pale pink.
        close = page.locator("#close-btn")
        await close.click()
        await expect(close).to_have_text("Confirm close")
        await close.hover()
        # The background eases over 0.12 s: wait for the hover colour itself, then measure it.
        await expect(close).to_have_css("background-color", "rgb(145, 32, 24)")
        colours = await close.evaluate("b => { const s = getComputedStyle(b); return [s.color, s.backgroundColor]; }")
        assert contrast(colours[0], colours[1]) >= 4.5, colours
        jane.assert_clean()
    finally:
        await context.close()


async def test_previews_say_who_wrote(server: RunningServer, browser: Browser) -> None:
    tomas = await connect_agent(server, TOMAS, status="available")
    visitor, _ = await visitor_named(server, "Grace Hopper")
    await visitor.send(type="message", client_id="v1", body="Is the stove in stock?")
    cid = (await tomas.expect("assigned"))["conversation"]["id"]
    await tomas.send(type="message", conversation_id=cid, client_id="t1", body="Checking the warehouse now.")
    await tomas.expect("ack")

    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        jane = await log_in(context, server, JANE)
        page = jane.page
        jane_agent = await server.services.directory.agent_by_email(None, JANE)
        assert jane_agent is not None
        await tomas.send(type="transfer", conversation_id=cid, to_agent=jane_agent.id, note="Stove question")
        item = chat_item(page, "Grace Hopper")
        preview = item.locator(".preview")
        await expect(preview).to_have_text("Tomás: Checking the warehouse now.")
        await item.click()
        composer = page.get_by_label("Message", exact=True)
        await composer.fill("Hi Grace, Jane here: two in stock.")
        await composer.press("Enter")
        await expect(preview).to_have_text("You: Hi Grace, Jane here: two in stock.")
        await visitor.send(type="message", client_id="v2", body="Great, thanks!")
        await expect(preview).to_have_text("Great, thanks!")
        jane.assert_clean()
    finally:
        await context.close()


async def test_escape_closes_the_widget_from_anywhere_on_the_page(server: RunningServer, browser: Browser) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, reduced_motion="reduce")
    try:
        page = await context.new_page()
        await page.goto(server.base_url + "/demo")
        launcher = page.get_by_role("button", name="Open chat")
        await launcher.click()
        composer = page.get_by_role("textbox", name="Your message")
        await expect(composer).to_be_focused()
        panel = page.locator("nameplate-chat").locator(".panel")

        # Focus on the shop's page, outside the widget: Escape still closes it.
        await page.get_by_role("heading", name="Gear for the long way round").click()
        await page.locator("button.buy").first.focus()
        await page.keyboard.press("Escape")
        await expect(panel).to_be_hidden()
        await expect(page.locator("button.buy").first).to_be_focused()  # the page keeps its focus

        # Inside the widget: closes and returns focus to the launcher.
        await page.get_by_role("button", name="Open chat").click()
        await expect(composer).to_be_focused()
        await page.keyboard.press("Escape")
        await expect(panel).to_be_hidden()
        await expect(page.get_by_role("button", name="Open chat")).to_be_focused()

        # An Escape the page handled itself (its own dialog, say) is left alone.
        await page.get_by_role("button", name="Open chat").click()
        await page.evaluate(
            "document.addEventListener('keydown', e => { if (e.key === 'Escape') e.preventDefault(); }, true)"
        )
        await page.locator("button.buy").first.focus()
        await page.keyboard.press("Escape")
        await expect(panel).to_be_visible()
    finally:
        await context.close()
