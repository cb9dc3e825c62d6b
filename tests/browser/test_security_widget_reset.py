"""Nameplate.reset(), the site's sign-out: the next person at a shared browser starts as a new anonymous
visitor and sees nothing of the signed-in customer's chats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from nameplate.people.credentials import identity_hash
from tests.harness import connect_agent, poll_until, running_server, seeded_settings


async def test_reset_drops_the_token_closes_the_socket_and_starts_anonymous(tmp_path: Path, browser: Browser) -> None:
    async with running_server(await seeded_settings(tmp_path)) as server:
        site = await server.services.directory.site_by_key("site_demo")
        assert site is not None
        who = {"user_id": "shared-1", "user_hash": identity_hash(site.secret, "shared-1"), "name": "Ada"}
        jane = await connect_agent(server, "jane@acme.example")
        context = await browser.new_context()
        try:
            page = await context.new_page()
            received: list[dict[str, Any]] = []
            sockets: list[Any] = []

            def on_socket(ws: Any) -> None:
                sockets.append(ws)
                ws.on("framereceived", lambda data: received.append(json.loads(data)))

            page.on("websocket", on_socket)
            await page.add_init_script(f"window.Nameplate = {{q: [['identify', {json.dumps(who)}]]}};")
            await page.goto(f"{server.base_url}/demo")
            await page.get_by_role("button", name="Open chat").click()
            composer = page.get_by_role("textbox", name="Your message")
            await composer.fill("my account secret")
            await composer.press("Enter")
            cid = (await jane.expect("assigned"))["conversation"]["id"]
            chat = page.locator("nameplate-chat")
            await expect(chat.locator(".msg.me .bubble")).to_have_text("my account secret")
            before = await page.evaluate("JSON.parse(localStorage.getItem('nameplate:site_demo'))")
            assert before["token"] and before["identify"]["user_id"] == "shared-1" and before["conversation_id"] == cid
            verified_id = next(f for f in received if f["type"] == "welcome")["customer"]["id"]

            await page.evaluate("Nameplate.reset()")
            await poll_until(lambda: sockets[0].is_closed())
            await poll_until(lambda: len([f for f in received if f["type"] == "welcome"]) == 2)
            welcome = [f for f in received if f["type"] == "welcome"][1]
            assert welcome["customer"]["id"] != verified_id and welcome["customer"]["verified"] is False
            assert welcome["conversation"] is None and welcome["earlier"] == []
            after = await page.evaluate("JSON.parse(localStorage.getItem('nameplate:site_demo'))")
            assert after["token"] and after["token"] != before["token"]
            assert not after.get("identify") and not after.get("conversation_id")
            await expect(chat.locator(".msg.me")).to_have_count(0)
        finally:
            await context.close()
            await jane.close()
