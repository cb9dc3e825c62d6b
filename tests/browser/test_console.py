"""The agent console in a real browser: two agents (Jane, Priya) and websocket visitors.

Jane answers in the console, leaves a private note, hands the chat to Priya with a note; Priya reads the
note, answers and closes. The visitor socket proves what reaches visitors and what never does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import update

from nameplate.demo.seed import DEMO_PASSWORD
from nameplate.desk.canned import CannedResponses
from nameplate.store.models import Agent, Customer
from tests.harness import Client, RunningServer, connect_visitor, running_server, seed, start_server
from tests.harness import test_settings as settings_for

XSS = "<img src=x onerror=alert(1)>"
NOTE = "VIP: bought two tents last spring. Be generous with the shipping."
HANDOFF = "Wants the Norway rate for the 2-person tent; Priya knows the carrier."
VIEWPORT = {"width": 1440, "height": 900}
SUPERVISORS = {"tomas@acme.example", "priya@acme.example"}


class Watched:
    """A console page and everything that must never happen on it: dialogs, script errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.errors == [], f"errors on the page: {self.errors}"


async def log_in(context: BrowserContext, server: RunningServer, email: str) -> Watched:
    page = await context.new_page()
    watched = Watched(page)
    await page.goto(server.base_url + "/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(server.base_url + "/console")
    # Connected: the load comes from the socket's status frame.
    await expect(page.locator("#load-text")).to_have_text(re.compile(r"^\d+ of \d+ chats?$"))
    available = page.get_by_role("radio", name="Available")
    if email in SUPERVISORS:
        # Supervisors and admins arrive away (not routed); these tests have them choose Available.
        await expect(page.get_by_role("radio", name="Away")).to_have_attribute("aria-checked", "true")
        await available.click()
    await expect(available).to_have_attribute("aria-checked", "true")
    return watched


async def visitor_named(server: RunningServer, name: str, **attributes: Any) -> tuple[Client, str]:
    """A visitor whose website passed a name, e-mail and attributes (written to the record directly)."""
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        created = (await http.post("/api/v1/visitors", json={"site": "site_demo"})).json()
    async with server.services.sessions() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == created["customer_id"])
            .values(
                name=name,
                email=name.split()[0].lower() + "@example.com",
                attributes=attributes,
            )
        )
        await session.commit()
    visitor, _ = await connect_visitor(server, token=created["token"], timezone="Europe/Oslo", locale="nb-NO")
    return visitor, created["customer_id"]


def chat_item(page: Page, name: str) -> Any:
    return page.locator("#mine-list li").filter(has_text=name)


async def test_two_agents_answer_transfer_and_close(browser: Browser, artifacts: Path, tmp_path: Path) -> None:
    async with running_server(settings_for(tmp_path)) as server:
        await seed(server.services)
        jane_agent = await server.services.directory.agent_by_email(None, "jane@acme.example")
        assert jane_agent is not None
        async with server.services.sessions() as session:
            # Two chats at a time, so a third visitor shows up in Jane's queue.
            await session.execute(update(Agent).where(Agent.id == jane_agent.id).values(capacity=2))
            await session.commit()
        await CannedResponses(server.services.sessions).create(
            jane_agent.site_id, "norway", "Shipping to Norway takes 4–6 working days and costs €19."
        )

        jane_context = await browser.new_context(viewport=VIEWPORT)
        priya_context = await browser.new_context(viewport=VIEWPORT)
        jane = await log_in(jane_context, server, "jane@acme.example")
        j = jane.page

        # -- three visitors: two are Jane's, the third waits ---------------------------------------------
        ada, _ = await visitor_named(
            server, "Ada Lovelace", plan="Trail Club", orders=3, last_order="#A-1042", note=XSS
        )
        await ada.send(type="page", url="https://acme.example/tents/trail-2p", title="Trail tent, 2 person")
        await ada.send(type="message", client_id="a1", body="Hi! Do you ship tents to Norway?")
        await ada.expect("ack")
        joined = await ada.expect("agent_joined")
        assert joined["agent"]["name"] == "Jane Chang-Katzenberg"

        bob, _ = await visitor_named(server, "Bob Okonkwo", plan="Free")
        await bob.send(type="page", url="https://acme.example/boots", title="Hiking boots")
        await bob.send(type="message", client_id="b1", body="Are the boots true to size?")
        await bob.expect("agent_joined")

        cleo, _ = await visitor_named(server, "Cleo Martin")
        await cleo.send(type="page", url="https://acme.example/sleeping-bags", title="Down sleeping bag")
        await cleo.send(type="message", client_id="c1", body="Is −5 °C comfortable or extreme?")
        await cleo.expect("queue")

        # The inbox: who waits, how long, where; my chats with unread counts; my load.
        waiting = j.locator("#queue-list li")
        await expect(waiting).to_have_count(1)
        await expect(waiting.first).to_contain_text("Cleo Martin")
        await expect(waiting.first).to_contain_text("on Down sleeping bag")
        await expect(waiting.first).to_contain_text("#1 in line")
        await expect(waiting.first).to_contain_text(re.compile(r"waiting \d+ s"))
        await expect(j.locator("#load-text")).to_have_text("2 of 2 chats")
        await expect(chat_item(j, "Ada Lovelace")).to_be_visible()
        await expect(chat_item(j, "Bob Okonkwo").locator(".badge-unread")).to_have_text("1")
        await expect(j.locator("#chat-title")).to_have_text("Ada Lovelace")  # the first chat opened itself
        await j.screenshot(path=str(artifacts / "console-inbox.png"))

        # -- Jane answers Ada -------------------------------------------------------------------------------
        await chat_item(j, "Ada Lovelace").click()
        messages = j.locator("#messages")
        await expect(messages).to_contain_text("Hi! Do you ship tents to Norway?")
        sidebar = j.locator("#customer")
        await expect(sidebar.locator("#cust-name")).to_have_text("Ada Lovelace")
        await expect(sidebar.locator("#cust-verified")).to_have_text("Not verified")
        await expect(sidebar.locator("#cust-attrs")).to_contain_text("Trail Club")
        await expect(sidebar.locator("#cust-attrs")).to_contain_text(XSS)  # as text
        await expect(sidebar.locator("#cust-time")).to_contain_text("Europe/Oslo")
        await expect(sidebar.locator("#cust-pages")).to_contain_text("Trail tent, 2 person")

        # The visitor moves on: a private system line and the sidebar follow, live.
        await ada.send(type="page", url="https://acme.example/checkout", title="Checkout")
        moved = messages.locator(".msg-private").filter(has_text="Ada Lovelace is now on Checkout")
        await expect(moved).to_be_visible()
        await expect(sidebar.locator("#cust-page")).to_have_text("Checkout")
        await expect(sidebar.locator("#cust-pages li").first).to_contain_text("Checkout")

        composer = j.get_by_label("Message", exact=True)
        await composer.fill("Hi Ada, yes, we do!")
        await ada.expect("typing", lambda f: f["by"] == "agent" and f["on"] is True)  # Jane is typing…
        await composer.press("Shift+Enter")
        await composer.press_sequentially("Let me check the rate.")
        await composer.press("Enter")
        await ada.expect("typing", lambda f: f["by"] == "agent" and f["on"] is False)  # …and stopped
        reply = await ada.expect("message", lambda f: f["author"]["kind"] == "agent")
        assert reply["body"] == "Hi Ada, yes, we do!\nLet me check the rate."
        mine = messages.locator(".msg-out").filter(has_text="Let me check the rate.")
        await expect(mine).to_have_attribute("data-state", "sent")
        await ada.send(type="read", seq=reply["seq"])
        await expect(mine.locator(".receipt")).to_have_text("Read")

        # The visitor's typing shows in the pane and the list.
        await ada.send(type="typing", on=True)
        await expect(j.locator("#typing")).to_have_text("Ada Lovelace is typing…")
        await expect(chat_item(j, "Ada Lovelace").locator(".preview")).to_have_text("typing…")
        await ada.send(type="typing", on=False)
        await expect(j.locator("#typing")).to_have_text("")
        await composer.press_sequentially("/nor")
        # Canned response: "/nor" offers /norway, Enter inserts it, Enter sends it.
        await expect(j.locator("#canned-menu")).to_contain_text("/norway")
        await composer.press("Enter")
        await expect(composer).to_have_value("Shipping to Norway takes 4–6 working days and costs €19.")
        await composer.press("Enter")
        canned = await ada.expect("message", lambda f: f["author"]["kind"] == "agent" and "Norway" in f["body"])
        assert canned["body"] == "Shipping to Norway takes 4–6 working days and costs €19."

        # What the visitor types is text, never markup.
        await ada.send(type="message", client_id="a2", body=XSS)
        await expect(messages.locator(".msg-in .msg-body").filter(has_text=XSS)).to_have_text(XSS)
        assert await messages.locator("img").count() == 0

        # A private note: shown as a note, never sent to the visitor.
        await j.get_by_role("tab", name="Private note").click()
        await composer.fill(NOTE)
        await composer.press("Enter")
        await expect(messages.locator(".msg-note").filter(has_text=NOTE)).to_be_visible()
        await expect(messages.locator(".msg-note").filter(has_text=NOTE)).to_contain_text("Private note · you")
        await composer.fill("One moment, I'm bringing in our gear specialist.")
        await composer.press("Enter")
        await ada.expect("message", lambda f: "gear specialist" in f.get("body", ""))
        assert not [f for f in ada.frames if NOTE in str(f)], "the private note reached the visitor"
        await j.screenshot(path=str(artifacts / "console-chat.png"))

        # -- hidden tab: the title counts what is new --------------------------------------------------------
        await j.evaluate("""() => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
            document.dispatchEvent(new Event("visibilitychange"));
        }""")
        await bob.send(type="message", client_id="b2", body="Hello? Still there?")
        await expect(j).to_have_title(re.compile(r"^\(1\) Inbox"))
        await j.evaluate("""() => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
            document.dispatchEvent(new Event("visibilitychange"));
        }""")
        await expect(j).to_have_title(re.compile(r"^Inbox"))

        # -- Priya comes online; Jane hands Ada over with a note -------------------------------------------
        priya = await log_in(priya_context, server, "priya@acme.example")
        p = priya.page
        await expect(chat_item(p, "Cleo Martin")).to_be_visible()  # the waiting visitor went to Priya

        await j.get_by_role("button", name="Transfer").click()
        priya_agent = await server.services.directory.agent_by_email(None, "priya@acme.example")
        assert priya_agent is not None
        option = j.locator(f'#transfer-to option[value="agent:{priya_agent.id}"]')
        await expect(option).to_contain_text("Priya Ramanathan — Gear Specialist · Available, 1 of ")
        await j.get_by_label("To", exact=True).select_option(value=f"agent:{priya_agent.id}")
        await j.get_by_label("Hand-off note").fill(HANDOFF)
        await j.locator("#transfer-submit").click()
        await expect(j.locator("#ended")).to_have_text("Transferred to Priya Ramanathan.")
        await expect(chat_item(j, "Ada Lovelace")).to_have_count(0)
        await expect(j.get_by_label("Message", exact=True)).to_be_hidden()

        joined = await ada.expect("agent_joined", lambda f: f["agent"]["name"] == "Priya Ramanathan")
        assert joined["agent"]["photo_url"].startswith("/agents/")
        assert joined["agent"]["title"] == "Gear Specialist"

        await chat_item(p, "Ada Lovelace").click()
        await expect(p.locator("#handoff")).to_be_visible()
        await expect(p.locator("#handoff-text")).to_have_text(HANDOFF)
        priya_messages = p.locator("#messages")
        await expect(priya_messages.locator(".msg-handoff")).to_contain_text(
            f"Hand-off note from Jane Chang-Katzenberg: {HANDOFF}"
        )
        await expect(priya_messages).to_contain_text("Hi! Do you ship tents to Norway?")
        await expect(priya_messages.locator(".msg-note").filter(has_text=NOTE)).to_contain_text(
            "Private note · Jane Chang-Katzenberg"
        )
        # The hand-off note comes before the history in the pane.
        handoff_box = await p.locator("#handoff").bounding_box()
        history_box = await priya_messages.bounding_box()
        assert handoff_box and history_box and handoff_box["y"] < history_box["y"]

        priya_composer = p.get_by_label("Message", exact=True)
        await priya_composer.fill("Hi Ada, Priya here. The 2-person tent ships to Oslo in 4 days.")
        await priya_composer.press("Enter")
        from_priya = await ada.expect("message", lambda f: f["author"].get("name") == "Priya Ramanathan")
        assert "Oslo" in from_priya["body"]
        await p.screenshot(path=str(artifacts / "console-handoff.png"))

        # -- Priya closes --------------------------------------------------------------------------------------
        close = p.get_by_role("button", name="Close chat")
        await close.click()
        await p.get_by_role("button", name="Confirm close").click()
        closed = await ada.expect("closed")
        assert closed["by"] == "Priya Ramanathan"
        await expect(p.locator("#ended")).to_have_text("Closed by Priya Ramanathan.")
        await expect(p.locator("#recent-list")).to_contain_text("Ada Lovelace")
        await expect(chat_item(p, "Ada Lovelace")).to_have_count(0)

        # Everything the visitor socket carried, start to end: no private note, no private line.
        await ada.drain()
        assert not [f for f in ada.frames if NOTE in str(f) or HANDOFF in str(f)]
        assert not [f for f in ada.frames if f.get("private")]
        assert not [f for f in ada.frames if f.get("type") == "page"]

        jane.assert_clean()
        priya.assert_clean()
        for client in (ada, bob, cleo):
            await client.close()
        await jane_context.close()
        await priya_context.close()


async def test_console_reconnects_and_resumes(browser: Browser, tmp_path: Path) -> None:
    """The server goes away and comes back on the same port: the console reconnects and misses nothing."""
    settings = settings_for(tmp_path)
    async with running_server(settings) as server:
        await seed(server.services)
        context = await browser.new_context(viewport=VIEWPORT)
        jane = await log_in(context, server, "jane@acme.example")
        page = jane.page
        visitor, token = await connect_visitor(server)
        await visitor.send(type="message", client_id="v1", body="First question")
        ack = await visitor.expect("ack")
        await expect(page.locator("#messages")).to_contain_text("First question")
        port = server.port

    # The process is gone; a new one starts on the same port with the same store and secret.
    restarted = await start_server(settings, port=port)
    try:
        await expect(page.locator("#conn-banner")).to_be_visible()
        back, _ = await connect_visitor(
            restarted, token=token, conversation_id=ack["conversation_id"], resume_after=ack["seq"]
        )
        await back.send(type="message", client_id="v2", body="Second question, after the restart")
        await expect(page.locator("#messages")).to_contain_text("Second question, after the restart", timeout=20_000)
        await expect(page.locator("#conn-banner")).to_be_hidden()
        # Each message once: the resume replayed only what the page had not seen.
        await expect(page.locator("#messages .msg-in")).to_have_count(2)
        composer = page.get_by_label("Message", exact=True)
        await composer.fill("Still here!")
        await composer.press("Enter")
        reply = await back.expect("message", lambda f: f["author"]["kind"] == "agent")
        assert reply["body"] == "Still here!"
        jane.errors = [e for e in jane.errors if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e]
        jane.assert_clean()
        await back.close()
        await context.close()
    finally:
        await restarted.stop()
