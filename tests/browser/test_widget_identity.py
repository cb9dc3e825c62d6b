"""The widget for returning customers: verified identity, earlier conversations, the offer to wait for
their previous agent, the pre-chat topic, live "agents online", and messages the server refused.

Each test starts its own server on a copy of the seeded demo database (agents Jane — Support, Tomás —
Support and Sales, Priya — Sales); visitors are Chromium pages, agents (and other visitors) talk over
their websockets.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import update

from nameplate.people.credentials import identity_hash
from nameplate.store.models import Conversation, Customer, Site, Team
from tests.harness import (
    Client,
    RunningServer,
    connect_agent,
    connect_visitor,
    poll_until,
    seeded_settings,
    start_server,
)

JANE, TOMAS, PRIYA = "jane@acme.example", "tomas@acme.example", "priya@acme.example"


@dataclass
class Shop:
    running: RunningServer
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.base_url

    async def agent(self, email: str) -> Client:
        client = await connect_agent(self.running, email, status="available")
        self.clients.append(client)
        return client

    async def visitor(self, **hello: Any) -> Client:
        client, _ = await connect_visitor(self.running, **hello)
        self.clients.append(client)
        return client

    async def who(self, user_id: str, user_hash: str | None = None) -> dict[str, Any]:
        """What the shop's page passes to Nameplate.identify for its signed-in user."""
        site = await self.running.services.directory.site_by_key("site_demo")
        assert site is not None
        return {
            "user_id": user_id,
            "user_hash": user_hash or identity_hash(site.secret, user_id),
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "attributes": {"plan": "pro"},
        }


@pytest.fixture
async def make_shop(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Shop]]]:
    shops: list[Shop] = []

    async def make(**overrides: Any) -> Shop:
        shop = Shop(await start_server(await seeded_settings(tmp_path, **overrides)))
        shops.append(shop)
        return shop

    yield make
    for shop in shops:
        for client in shop.clients:
            with contextlib.suppress(Exception):
                await client.drain(0.05)  # unread frames would stall the close handshake
                await client.close()
        await shop.running.stop()


@pytest.fixture
async def shop(make_shop: Callable[..., Awaitable[Shop]]) -> Shop:
    return await make_shop()


@dataclass
class Visit:
    """One browser context (its own localStorage: a new device) and the frames its widget exchanged."""

    page: Page
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def chat(self) -> Any:
        return self.page.locator("nameplate-chat")

    def sent_of(self, type_: str) -> list[dict[str, Any]]:
        return [f for f in self.sent if f.get("type") == type_]

    async def open(self, url: str) -> Any:
        await self.page.goto(url)
        await self.page.get_by_role("button", name="Open chat").click()
        composer = self.page.get_by_role("textbox", name="Your message")
        await expect(composer).to_be_focused()
        return composer


@contextlib.asynccontextmanager
async def visit(browser: Browser, identify: dict[str, Any] | None = None) -> AsyncIterator[Visit]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, reduced_motion="reduce")
    try:
        page = await context.new_page()
        seen = Visit(page)
        page.on("console", lambda msg: seen.warnings.append(msg.text) if msg.type == "warning" else None)

        def on_socket(ws: Any) -> None:
            ws.on("framesent", lambda data: seen.sent.append(json.loads(data)))
            ws.on("framereceived", lambda data: seen.received.append(json.loads(data)))

        page.on("websocket", on_socket)
        if identify is not None:  # the documented way to call identify before the script has loaded
            await page.add_init_script(f"window.Nameplate = {{q: [['identify', {json.dumps(identify)}]]}};")
        yield seen
    finally:
        await context.close()


async def stored(page: Page) -> dict[str, Any]:
    """The widget's localStorage record."""
    return await page.evaluate("JSON.parse(localStorage.getItem('nameplate:site_demo') || '{}')")


async def say(composer: Any, text: str) -> None:
    await composer.fill(text)
    await composer.press("Enter")


async def earlier_chat(shop: Shop, jane: Client, who: dict[str, Any], body: str = "Hello") -> str:
    """A verified customer's conversation with Jane, over the visitor websocket, closed by Jane."""
    customer = await shop.visitor(identify=who)
    await customer.send(type="message", client_id="earlier-1", body=body)
    cid = (await jane.expect("assigned"))["conversation"]["id"]
    await jane.send(type="close", conversation_id=cid)
    await customer.expect("closed")
    return cid


async def customer_of(shop: Shop, conversation_id: str) -> Customer:
    async with shop.running.services.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        customer = await session.get(Customer, conversation.customer_id)
        assert customer is not None
        return customer


async def test_returning_customer_continues_with_their_agent(shop: Shop, browser: Browser, artifacts: Path) -> None:
    jane = await shop.agent(JANE)
    who = await shop.who("cust-1001")
    async with visit(browser) as first:
        composer = await first.open(f"{shop.url}/demo")
        # Signs in mid-visit: the open socket carries `identify`, no second hello.
        await first.page.evaluate("who => Nameplate.identify(who)", who)
        await poll_until(lambda: any(f["type"] == "identified" for f in first.received))
        assert len(first.sent_of("hello")) == 1 and first.sent_of("identify")[0]["user_id"] == "cust-1001"
        await say(composer, "My tent pole snapped on the first night.")
        cid = (await jane.expect("assigned"))["conversation"]["id"]
        answer = "I'm sorry! I'll send you a new pole today, free of charge."
        await jane.send(type="message", conversation_id=cid, client_id="j1", body=answer)
        await expect(first.chat.locator(".msg.agent .bubble")).to_have_text(answer)
        await jane.send(type="close", conversation_id=cid)
        await expect(first.chat.locator(".endtext")).to_be_visible()
        assert first.warnings == []
    first_customer = await customer_of(shop, cid)
    assert first_customer.verified and first_customer.external_id == "cust-1001"

    # Jane is busier than Tomás now, so only "personal concierge" routing sends the customer back to her.
    other = await shop.visitor()
    await other.send(type="message", client_id="other-1", body="Do you ship to Iceland?")
    await jane.expect("assigned")
    tomas = await shop.agent(TOMAS)

    async with visit(browser, identify=who) as second:  # another device: nothing in localStorage
        composer = await second.open(f"{shop.url}/demo")
        chat = second.chat
        card = chat.locator(".card")
        await expect(card.locator(".name")).to_have_text("Continue with Jane Chang-Katzenberg?")
        await expect(card.locator(".photo")).to_have_attribute("alt", "Photo of Jane Chang-Katzenberg")
        past = chat.locator(".past")
        await expect(past.locator(".bubble")).to_have_text(["My tent pole snapped on the first night.", answer])
        await expect(past.locator(".msg.sys").first).to_contain_text(re.compile(r"^Earlier conversation · \w"))
        assert second.sent_of("history") == [{"type": "history", "conversation_id": cid}]
        await second.page.wait_for_function(
            "() => { const i = document.querySelector('nameplate-chat').shadowRoot.querySelector('.card .photo');"
            " return i.complete && i.naturalWidth > 0; }"
        )
        await chat.locator(".panel").screenshot(path=str(artifacts / "widget-continue.png"))
        welcome = next(f for f in second.received if f["type"] == "welcome")
        assert isinstance(welcome.get("token"), str)  # now the customer's own record, from here on
        assert (await stored(second.page))["token"] == welcome["token"]

        await say(composer, "The new pole fits. Could you also look at a small tear in the fly?")
        assigned = await jane.expect("assigned", lambda f: f["conversation"]["id"] != cid)
        new_cid = assigned["conversation"]["id"]
        await expect(card.locator(".name")).to_have_text("Jane Chang-Katzenberg")
        await expect(card.locator(".lead")).to_have_text("You're chatting with")
        await expect(past).to_be_visible()  # the earlier conversation stays above the new one
        await expect(chat.locator(".msg.me").last).to_have_attribute("data-state", "sent")
        assert (await customer_of(shop, new_cid)).id == first_customer.id
        assert second.warnings == []
    await tomas.drain(0.1)
    assert tomas.of_type("assigned") == []


async def test_a_wrong_user_hash_shows_no_earlier_conversations(shop: Shop, browser: Browser) -> None:
    jane = await shop.agent(JANE)
    who = await shop.who("cust-2002")
    await earlier_chat(shop, jane, who, "Where is my order?")
    forged = {**who, "user_hash": "0" * 64}
    async with visit(browser, identify=forged) as seen:
        composer = await seen.open(f"{shop.url}/demo")
        await expect(seen.chat.locator(".greet")).to_be_visible()
        welcome = next(f for f in seen.received if f["type"] == "welcome")
        assert welcome["earlier"] == [] and welcome["customer"]["verified"] is False
        await expect(seen.chat.locator(".card")).to_be_hidden()
        await expect(seen.chat.locator(".past")).to_be_hidden()
        await say(composer, "Hello?")  # still a working, anonymous chat
        await expect(seen.chat.locator(".msg.me")).to_have_attribute("data-state", "sent")
        assert seen.sent_of("history") == [] and seen.warnings == []


async def test_a_site_that_requires_verification_warns_once_and_chats_anonymously(shop: Shop, browser: Browser) -> None:
    async with shop.running.services.sessions() as session:
        await session.execute(update(Site).where(Site.public_key == "site_demo").values(require_verification=True))
        await session.commit()
    shop.running.services.directory.forget_site("site_demo")  # the site is cached for a while; tests cannot wait
    unsigned = {"user_id": "cust-3003", "name": "Ada Lovelace"}
    async with visit(browser, identify=unsigned) as seen:
        composer = await seen.open(f"{shop.url}/demo")
        await poll_until(lambda: seen.warnings)
        assert len(seen.warnings) == 1 and "verification_required" in seen.warnings[0]
        await say(composer, "Just browsing")
        await expect(seen.chat.locator(".msg.me")).to_have_attribute("data-state", "sent")
        # Refused: not kept for the next hello (the page's next identify() call asks again).
        assert (await stored(seen.page)).get("identify") is None
        assert len(seen.warnings) == 1
    customer = await customer_of(shop, next(f for f in seen.received if f["type"] == "ack")["conversation_id"])
    assert customer.external_id is None and customer.name is None  # nothing of the refused identity was kept


async def test_offer_to_wait_for_the_previous_agent_or_take_the_next(
    shop: Shop, browser: Browser, artifacts: Path
) -> None:
    jane = await shop.agent(JANE)
    who = await shop.who("cust-4004")
    earlier = await earlier_chat(shop, jane, who, "Is the tent waterproof?")
    for n in range(3):  # Jane's capacity is 3: fill it
        busy = await shop.visitor()
        await busy.send(type="message", client_id=f"busy-{n}", body="Hello")
        await jane.expect("assigned", lambda f: f["conversation"]["id"] != earlier)
    tomas = await shop.agent(TOMAS)

    async with visit(browser) as seen:
        composer = await seen.open(f"{shop.url}/demo")
        chat = seen.chat
        await expect(chat.locator(".card")).to_be_hidden()
        # Signs in mid-visit on a new device: `identified` brings their record's token and earlier chats.
        await seen.page.evaluate("who => Nameplate.identify(who)", who)
        await expect(chat.locator(".card .name")).to_have_text("Continue with Jane Chang-Katzenberg?")
        identified = next(f for f in seen.received if f["type"] == "identified")
        assert identified["customer"]["verified"] and [c["id"] for c in identified["earlier"]] == [earlier]
        assert isinstance(identified.get("token"), str) and (await stored(seen.page))["token"] == identified["token"]
        await expect(chat.locator(".past .bubble")).to_have_text(["Is the tent waterproof?"])
        await say(composer, "Hi Jane, about that tent again")
        wording = r"^Wait for Jane Chang-Katzenberg \((about \d+ minutes?|less than a minute)\)$"
        wait = chat.get_by_role("button", name=re.compile(wording))
        other = chat.get_by_role("button", name="Talk to the next available person")
        await expect(wait).to_be_visible()
        # The server's sentence (routing/wait_time.describe_offer_wait), not the widget's own arithmetic.
        await expect(wait).to_have_text(next(f for f in seen.received if f["type"] == "offer")["wait_text"])
        await expect(other).to_be_visible()
        await expect(chat.locator(".otext")).to_have_text("Jane Chang-Katzenberg is with other customers right now.")
        await chat.locator(".panel").screenshot(path=str(artifacts / "widget-offer.png"))
        await tomas.drain(0.2)
        assert tomas.of_type("assigned") == []  # the offer holds the conversation for Jane meanwhile

        await other.click()
        assigned = await tomas.expect("assigned")
        assert seen.sent_of("choose") == [{"type": "choose", "wait": False}]
        await expect(chat.locator(".card .name")).to_have_text("Tomás Okafor-Lindqvist")
        await expect(chat.locator(".offer")).to_be_hidden()
        await expect(composer).to_be_focused()
    await jane.drain(0.1)
    assert all(f["conversation"]["id"] != assigned["conversation"]["id"] for f in jane.of_type("assigned"))


async def test_the_chosen_topic_routes_to_its_team(shop: Shop, browser: Browser) -> None:
    jane = await shop.agent(JANE)  # Support
    priya = await shop.agent(PRIYA)  # Sales
    async with visit(browser) as seen:
        composer = await seen.open(f"{shop.url}/demo")
        topic = seen.page.get_by_label("What is it about?")
        await expect(topic.locator("option")).to_have_text(["Choose (optional)", "Sales", "Support"])
        await topic.select_option(label="Sales")
        await say(composer, "Which stove is lightest for two people?")
        assigned = await priya.expect("assigned")
        await expect(seen.chat.locator(".card .name")).to_have_text("Priya Ramanathan")
        await expect(topic).to_be_hidden()  # asked before the first message only
    async with shop.running.services.sessions() as session:
        conversation = await session.get(Conversation, assigned["conversation"]["id"])
        assert conversation is not None and conversation.team_id is not None
        team = await session.get(Team, conversation.team_id)
    assert team is not None and team.name == "Sales"
    assert seen.sent_of("message")[0]["team_id"] == team.id
    await jane.drain(0.1)
    assert jane.of_type("assigned") == []


async def test_agents_online_updates_without_a_reload(shop: Shop, browser: Browser) -> None:
    async with visit(browser) as seen:
        await seen.open(f"{shop.url}/demo")
        chat = seen.chat
        await expect(chat.locator(".banner")).to_contain_text("No one is online right now")
        await expect(chat.locator(".sub")).to_have_text("No one online right now")
        await expect(chat.locator(".email")).to_be_visible()
        await seen.page.evaluate("window.stillThisPage = true")
        await shop.agent(TOMAS)
        await expect(chat.locator(".sub")).to_have_text("1 person online now")
        await expect(chat.locator(".banner")).to_be_hidden()
        await expect(chat.locator(".email")).to_be_hidden()
        assert any(f["type"] == "agents_online" and f["count"] == 1 for f in seen.received)
        assert await seen.page.evaluate("window.stillThisPage === true")
        assert len(seen.sent_of("hello")) == 1


async def test_a_refused_message_is_marked_and_can_be_retried(
    make_shop: Callable[..., Awaitable[Shop]], browser: Browser
) -> None:
    shop = await make_shop(message_burst=1, message_refill_per_second=1.0)  # one message a second
    jane = await shop.agent(JANE)
    async with visit(browser) as seen:
        composer = await seen.open(f"{shop.url}/demo")
        await say(composer, "First")
        await say(composer, "Second, too soon")
        mine = seen.chat.locator(".msg.me")
        await expect(mine.first).to_have_attribute("data-state", "sent")
        await expect(mine.last).to_have_attribute("data-state", "failed")
        await expect(mine.last.locator(".meta")).to_contain_text("Not sent: you are sending messages too quickly")
        error = next(f for f in seen.received if f["type"] == "error")
        assert error["code"] == "rate_limited" and error["client_id"] == seen.sent_of("message")[1]["client_id"]
        await seen.page.wait_for_timeout(1100)  # the bucket refills
        await mine.last.get_by_role("button", name="Retry").click()
        await expect(mine.last).to_have_attribute("data-state", "sent")
        await jane.expect("message", lambda f: f["body"] == "Second, too soon")
        assert [f["client_id"] for f in seen.sent_of("message")][1:] == [error["client_id"]] * 2  # same id: no double
