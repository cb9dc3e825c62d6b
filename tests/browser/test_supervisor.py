"""The supervisor's desk in a real browser: find a chat by a word from it, read the transcript, download
the CSV, and watch the live board follow chats as they arrive, wait and get answered."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from nameplate.demo.seed import DEMO_PASSWORD
from tests.harness import RunningServer, connect_agent, running_server, seed
from tests.harness import test_settings as settings_in
from tests.integration.test_supervisor_http import (
    agent_says,
    csv_expected,
    set_status,
    start_chat,
    stored_messages,
    visitor_says,
)

VIEWPORT = {"width": 1440, "height": 900}
JANE, TOMAS = "jane@acme.example", "tomas@acme.example"


class Watched:
    """A page and everything that must never happen on it: dialogs, script errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.on("console", lambda message: self.problems.append(message.text) if message.type == "error" else None)

    async def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()

    def assert_clean(self) -> None:
        assert self.problems == [], self.problems


async def log_in(page: Page, server: RunningServer, email: str) -> None:
    """Through the log-in form when it is there; otherwise a JSON log-in whose cookie lands in the context."""
    response = await page.goto(server.base_url + "/login")
    if response is not None and response.ok and await page.locator("input[name=email]").count():
        await page.get_by_label("E-mail").fill(email)
        await page.get_by_label("Password").fill(DEMO_PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await expect(page).not_to_have_url(server.base_url + "/login")
    else:
        answer = await page.request.post(server.base_url + "/login", data={"email": email, "password": DEMO_PASSWORD})
        assert answer.ok, await answer.text()


async def test_supervisor_finds_reads_exports_and_watches(browser: Browser, artifacts: Path, tmp_path: Path) -> None:
    async with running_server(settings_in(tmp_path)) as server:
        await seed(server.services)
        jane = await connect_agent(server, JANE)
        visitor, cid = await start_chat(
            server,
            jane,
            "My tent pole snapped on the ridge trail last night.",
            name="Ingrid Solberg",
            email="ingrid@example.com",
        )
        await agent_says(jane, cid, "Oh no, I'm sorry! Which tent is it?")
        await visitor_says(visitor, "The Fjellheim 2, bought in March.")
        await agent_says(jane, cid, "Under warranty: offer the free pole repair kit.", note=True)
        await agent_says(jane, cid, "Good news: the pole is covered. I'll send a replacement section today.")

        context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True, base_url=server.base_url)
        page = await context.new_page()
        watched = Watched(page)
        await log_in(page, server, TOMAS)

        # Find the chat by a word from it.
        await page.goto("/supervisor/conversations")
        await page.get_by_label("Search messages").fill("pole")
        await page.get_by_role("button", name="Apply").click()
        rows = page.locator("#conversations tbody tr")
        await expect(rows).to_have_count(1)
        row = page.locator(f'tr[data-conversation-id="{cid}"]')
        await expect(row).to_contain_text("Ingrid Solberg")
        await expect(row).to_contain_text("Jane Chang-Katzenberg")

        # Read it.
        await row.get_by_role("link", name="Ingrid Solberg").click()
        await expect(page).to_have_url(f"{server.base_url}/supervisor/conversations/{cid}")
        stored = await stored_messages(server, cid)
        lines = page.locator("#transcript li[data-seq]")
        await expect(lines).to_have_count(len(stored))
        for position, message in enumerate(stored):
            await expect(lines.nth(position)).to_contain_text(message["body"])
        note = page.locator('#transcript li[data-private="true"]')
        await expect(note).to_have_count(1)
        await expect(note).to_contain_text("Private note")
        await expect(note).to_contain_text("free pole repair kit")
        await page.screenshot(path=str(artifacts / "supervisor-transcript.png"), full_page=True)

        # Download the CSV of today's chats: the rows are the stored messages.
        await page.goto("/supervisor/conversations")
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="CSV").click()
        download = await download_info.value
        assert download.suggested_filename.endswith(".csv")
        saved = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
        records = list(csv.reader(io.StringIO(saved, newline="")))
        assert records[0] == [
            "conversation_id",
            "seq",
            "sent_at",
            "author_kind",
            "author_name",
            "private",
            "visibility",
            "body",
        ]
        assert records[1:] == csv_expected(await stored_messages(server, cid))

        # The live board: the active chat is there; a new chat waits, then is answered.
        await page.goto("/supervisor/live")
        await expect(page.locator("#live-conn")).to_have_text("Live")
        active = page.locator(f'#active-list li[data-conversation-id="{cid}"]')
        await expect(active).to_contain_text("Ingrid Solberg")
        await expect(active).to_contain_text("with Jane Chang-Katzenberg")
        # Observing never makes the supervisor available for chats.
        await expect(page.locator("#live-note")).to_contain_text("never takes chats")
        await set_status(jane, "away")

        newcomer, waiting = await start_chat(server, None, "Do you ship to Tromsø?", name="Lars Eriksen")
        queued = page.locator(f'#queued-list li[data-conversation-id="{waiting}"]')
        await expect(queued).to_contain_text("#1 in line")
        await expect(page.locator("#live-summary")).to_contain_text("1 waiting")

        await active.get_by_role("button").click()
        watch_lines = page.locator("#watch-lines li")
        await expect(watch_lines).to_have_count(len(stored))
        await expect(page.locator("#watch-title")).to_have_text("Chat with Ingrid Solberg")
        await expect(page.locator("#watch-lines li.sv-line--private")).to_contain_text("free pole repair kit")
        await visitor_says(visitor, "Thank you so much!")
        await expect(watch_lines.last).to_contain_text("Thank you so much!")
        await page.screenshot(path=str(artifacts / "supervisor-live.png"))

        await set_status(jane, "available")
        await expect(page.locator(f'#active-list li[data-conversation-id="{waiting}"]')).to_contain_text(
            "with Jane Chang-Katzenberg"
        )
        await expect(queued).to_have_count(0)
        await expect(page.locator("#queued-empty")).to_be_visible()

        watched.assert_clean()
        await context.close()
        for client in (jane, visitor, newcomer):
            await client.close()
