"""Issue: one customer, no gaps. In the console, the agent sees the customer's verified identity, who
helped last time, and a phone call posted through the events API — live, beside the earlier chats."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.async_api import Browser, expect

from nameplate.people.credentials import identity_hash
from tests.browser.test_console import VIEWPORT, log_in
from tests.harness import connect_agent, connect_visitor, running_server, seeded_settings

CALL = "Called the store about order 1142"


async def test_console_shows_identity_history_and_events_from_other_channels(
    browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    async with running_server(await seeded_settings(tmp_path)) as server:
        site = await server.services.directory.site_by_key("site_demo")
        identify = {"user_id": "u-1142", "user_hash": identity_hash(site.secret, "u-1142"), "name": "Lin Okafor"}

        # First visit: Tomás helps and closes.
        tomas = await connect_agent(server, "tomas@acme.example", status="available")
        first, _ = await connect_visitor(server, identify=identify)
        await first.send(type="message", client_id="1", body="Where is order 1142?")
        assigned = await tomas.expect("assigned")
        await tomas.send(type="close", conversation_id=assigned["conversation"]["id"])
        await first.expect("closed")
        await tomas.send(type="status", status="away")
        await tomas.expect("status", lambda f: f["status"] == "away")

        context = await browser.new_context(viewport=VIEWPORT)
        jane = await log_in(context, server, "jane@acme.example")
        page = jane.page
        second, _ = await connect_visitor(server, identify=identify)
        await second.send(type="message", client_id="2", body="Me again, about 1142")
        await page.locator("#mine-list li").filter(has_text="Lin Okafor").click()
        sidebar = page.locator("#cust-history")
        await expect(page.locator("#cust-verified")).to_have_text("Verified")
        await expect(sidebar).to_contain_text("Tomás Okafor-Lindqvist")

        _, key = await server.services.api_keys.create(site.id, "store till")
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post(
                "/api/v1/customers/u-1142/events",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "event_id": "call-77",
                    "channel": "phone",
                    "summary": CALL,
                    "details": "Wants it before Friday",
                    "occurred_at": "2026-11-22T15:04:05Z",
                },
            )
            assert response.status_code == 201
        await expect(sidebar).to_contain_text(CALL)
        await expect(sidebar.locator(".timeline-event")).to_contain_text("phone")
        await page.screenshot(path=str(artifacts / "console-timeline.png"))
        # After a reload the event is still there: it came from the store, not only from the live frame.
        await page.reload()
        await page.locator("#mine-list li").filter(has_text="Lin Okafor").click()
        await expect(page.locator("#cust-history")).to_contain_text(CALL)
        jane.assert_clean()
        await context.close()
