"""The reports page in a real browser: charts a screen reader can name, a figure that drills down to its
conversation and on to the transcript, a CSV download, and no axe-core violations."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.test_supervisor import VIEWPORT, Watched, log_in
from tests.harness import connect_agent, connect_visitor, running_server, seeded_settings

JANE, TOMAS = "jane@acme.example", "tomas@acme.example"
AXE = Path(
    os.environ.get("AXE_CORE_PATH", Path(__file__).resolve().parents[2] / ".node/node_modules/axe-core/axe.min.js")
)


def axe_source() -> str:
    if not AXE.exists():
        message = f"axe-core is not installed at {AXE} (npm install --prefix .node axe-core@4)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI: " + message)
        pytest.skip("SKIPPED LOUDLY: " + message)
    return AXE.read_text()


async def test_reports_page_charts_drill_down_and_csv(browser: Browser, tmp_path: Path) -> None:
    source = axe_source()
    settings = await seeded_settings(tmp_path, topics_embedder="lexical")
    async with running_server(settings) as server:
        jane = await connect_agent(server, JANE)
        visitor, _ = await connect_visitor(server)
        await visitor.send(type="message", client_id="q1", body="Do you ship tents to Canada?")
        assigned = await jane.expect("assigned")
        conversation_id = assigned["conversation"]["id"]
        await jane.send(type="message", conversation_id=conversation_id, client_id="a1", body="We do!")
        await visitor.expect("message", lambda f: f["body"] == "We do!")
        await jane.send(type="close", conversation_id=conversation_id)
        await visitor.expect("closed")

        context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True, timezone_id="UTC")
        page = await context.new_page()
        watched = Watched(page)
        await log_in(page, server, TOMAS)
        await page.goto(server.base_url + "/supervisor/reports?tz=UTC")
        chart = page.get_by_role("img", name="Chats per day")
        await expect(chart).to_be_visible()
        assert "Highest: 1" in (await chart.locator("desc").text_content() or "")
        await expect(page.locator("#summary")).to_contain_text("Chats")

        await page.locator("#chart-chats").locator("xpath=..").get_by_text("Chats per day as a table").click()
        await expect(page.locator("#chart-chats-table")).to_be_visible()

        results = await page.evaluate(source + "\n;axe.run(document, {resultTypes: ['violations']})")
        serious = [
            (v["id"], [(n["target"], n["failureSummary"][-120:]) for n in v["nodes"]])
            for v in results["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], serious

        async with page.expect_download() as waiting:
            await page.locator("#csv-agents").click()
        download = await waiting.value
        saved = await download.path()
        rows = list(csv.DictReader(io.StringIO(Path(saved).read_text())))  # noqa: ASYNC240 (a small file)
        jane_row = next(r for r in rows if r["label"] == "Jane Chang-Katzenberg")
        assert (jane_row["chats"], jane_row["closed"]) == ("1", "1")

        # Jane's chats count drills down to the conversation, and on to its transcript.
        await (
            page.locator("#table-agents tr", has_text="Jane Chang-Katzenberg")
            .get_by_role("link", name="1")
            .first.click()
        )
        await expect(page.locator("#drill-summary")).to_contain_text("1 conversation")
        await page.locator(f'#drill tr[data-conversation-id="{conversation_id}"] a.sv-rowlink').click()
        await expect(page.get_by_text("Do you ship tents to Canada?")).to_be_visible()
        watched.assert_clean()
        await context.close()
