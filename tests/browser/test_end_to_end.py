"""The whole product in four browser contexts: a visitor on the demo shop, two agents in the console,
a supervisor at the desk. The visitor asks, Jane answers, hands over to Priya with a note, Priya reads
it and answers, the visitor sees Priya, Priya closes; Tomás finds the chat by a word from it, reads the
transcript and downloads a CSV whose rows are the stored messages."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

from playwright.async_api import Browser, expect
from sqlalchemy import select

from nameplate.store.models import Conversation
from tests.browser.test_console import VIEWPORT, chat_item
from tests.browser.test_console import log_in as console_log_in
from tests.browser.test_supervisor import log_in as desk_log_in
from tests.browser.test_widget import open_chat, say, widget
from tests.harness import running_server, seeded_settings
from tests.integration.test_supervisor_http import csv_expected, stored_messages

QUESTION = "My boots leak at the toe seam after two weeks. Order 1142."
HANDOFF = "Leaking seam on order 1142: warranty case, Priya handles boot repairs."


async def test_visitor_two_agents_and_a_supervisor(browser: Browser, artifacts: Path, tmp_path: Path) -> None:
    async with running_server(await seeded_settings(tmp_path)) as server:
        contexts = [await browser.new_context(viewport=VIEWPORT, accept_downloads=True) for _ in range(4)]
        visitor_context, jane_context, priya_context, tomas_context = contexts
        try:
            jane = await console_log_in(jane_context, server, "jane@acme.example")
            j = jane.page
            shop = await visitor_context.new_page()
            dialogs: list[str] = []
            shop.on("dialog", lambda dialog: dialogs.append(dialog.message))

            # The visitor asks; Jane answers in the console.
            composer = await open_chat(shop, f"{server.base_url}/demo")
            await say(composer, QUESTION)
            await expect(chat_item(j, "Visitor")).to_be_visible()
            await chat_item(j, "Visitor").click()
            await expect(j.locator("#messages")).to_contain_text(QUESTION)
            jane_composer = j.get_by_label("Message", exact=True)
            await jane_composer.fill("I'm sorry! Let me bring in our gear specialist.")
            await jane_composer.press("Enter")
            chat = widget(shop)
            await expect(chat.locator(".msg.agent .bubble")).to_contain_text("gear specialist")
            await expect(chat.locator(".card .name")).to_have_text("Jane Chang-Katzenberg")

            # Jane hands over to Priya with a note; Priya sees the note before the history.
            priya = await console_log_in(priya_context, server, "priya@acme.example")
            p = priya.page
            await j.get_by_role("button", name="Transfer").click()
            priya_agent = await server.services.directory.agent_by_email(None, "priya@acme.example")
            assert priya_agent is not None
            option = j.locator(f'#transfer-to option[value="agent:{priya_agent.id}"]')
            await expect(option).to_contain_text("Priya Ramanathan — Gear Specialist · Available, ")
            await j.get_by_label("To", exact=True).select_option(value=f"agent:{priya_agent.id}")
            await j.get_by_label("Hand-off note").fill(HANDOFF)
            await j.locator("#transfer-submit").click()
            await expect(j.locator("#ended")).to_have_text("Transferred to Priya Ramanathan.")
            await chat_item(p, "Visitor").click()
            await expect(p.locator("#handoff-text")).to_have_text(HANDOFF)
            await expect(p.locator("#messages")).to_contain_text(QUESTION)
            priya_composer = p.get_by_label("Message", exact=True)
            await priya_composer.fill("Hi, Priya here: that seam is under warranty. I'll send a prepaid label.")
            await priya_composer.press("Enter")

            # The visitor sees the new person: full name, title and a photo that really loaded.
            await expect(chat.locator(".card .name")).to_have_text("Priya Ramanathan")
            await expect(chat.locator(".card .job")).to_have_text("Gear Specialist")
            await expect(chat.locator(".msg.agent .bubble").last).to_contain_text("prepaid label")
            await shop.wait_for_function(
                """() => { const i = document.querySelector('nameplate-chat').shadowRoot
                                   .querySelector('.card .photo');
                           return i && i.complete && i.naturalWidth > 0; }"""
            )
            await shop.screenshot(path=str(artifacts / "end-to-end-visitor.png"))

            # Priya closes; the visitor is told.
            await p.get_by_role("button", name="Close chat").click()
            await p.get_by_role("button", name="Confirm close").click()
            await expect(p.locator("#ended")).to_have_text("Closed by Priya Ramanathan.")
            await expect(chat).to_contain_text("closed")

            # The supervisor finds it by a word, reads it, downloads the CSV.
            async with server.services.sessions() as session:
                conversation_id = (await session.execute(select(Conversation.id))).scalar_one()
            desk = await tomas_context.new_page()
            await desk_log_in(desk, server, "tomas@acme.example")
            await desk.goto(server.base_url + "/supervisor/conversations")
            await desk.get_by_label("Search messages").fill("seam")
            await desk.get_by_role("button", name="Apply").click()
            row = desk.locator(f'tr[data-conversation-id="{conversation_id}"]')
            await expect(desk.locator("#conversations tbody tr")).to_have_count(1)
            await expect(row).to_contain_text("Priya Ramanathan")
            await row.get_by_role("link").first.click()
            stored = await stored_messages(server, conversation_id)
            lines = desk.locator("#transcript li[data-seq]")
            await expect(lines).to_have_count(len(stored))
            await expect(desk.locator('#transcript li[data-private="true"]')).to_contain_text(HANDOFF)
            await desk.screenshot(path=str(artifacts / "end-to-end-transcript.png"), full_page=True)
            await desk.goto(server.base_url + "/supervisor/conversations")
            async with desk.expect_download() as download_info:
                await desk.get_by_role("button", name="CSV").click()
            download = await download_info.value
            saved = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
            records = list(csv.reader(io.StringIO(saved, newline="")))
            assert records[1:] == csv_expected(stored)
            assert QUESTION in [record[-1] for record in records]
            assert dialogs == []
            jane.assert_clean()
            priya.assert_clean()
        finally:
            for context in contexts:
                await context.close()
