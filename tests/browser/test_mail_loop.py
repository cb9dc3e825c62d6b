"""The whole e-mail loop in the browser: a visitor leaves a message and an address while nobody is online;
Jane comes online, answers with "Reply by e-mail"; the mail is in the (dev) outbox, where Priya reads it;
the customer's reply arrives by real SMTP at the listener and appears live in Jane's console and the widget."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from nameplate.mail.compose import customer_reply
from nameplate.store.models import OutboxMail
from tests.browser.test_console import VIEWPORT, chat_item
from tests.browser.test_console import log_in as console_log_in
from tests.browser.test_widget import open_chat, say, widget
from tests.harness import free_port, poll_until, running_server, seeded_settings
from tests.mail_helpers import outbox_rows, send_smtp


async def test_offline_message_reply_by_email_and_the_answer_threads_back(
    browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    settings = await seeded_settings(tmp_path, inbound_smtp_port=free_port(), inbound_smtp_host="127.0.0.1")
    async with running_server(settings) as server:
        contexts = [await browser.new_context(viewport=VIEWPORT) for _ in range(3)]
        visitor_context, jane_context, priya_context = contexts
        try:
            shop = await visitor_context.new_page()
            composer = await open_chat(shop, f"{server.base_url}/demo")
            chat = widget(shop)
            await expect(chat.locator(".banner")).to_contain_text("No one is online right now")
            email = shop.get_by_label("Your email address, for our reply")
            await email.fill("ada@example.com")
            await email.press("Enter")
            await say(composer, "Do you ship the Ridge 40 to Norway?")
            await expect(chat.locator(".note")).to_have_text("Thanks — we'll reply to ada@example.com.")

            # Jane comes online: the waiting conversation is hers; the console shows the address.
            jane = await console_log_in(jane_context, server, "jane@acme.example")
            j = jane.page
            await chat_item(j, "Visitor").click()
            await expect(j.locator("#messages")).to_contain_text("Ridge 40 to Norway")
            await expect(j.locator("#cust-email")).to_contain_text("ada@example.com")
            await j.get_by_label("Message", exact=True).fill("Yes! Shipping to Norway takes four days.")
            await j.get_by_role("button", name="Reply by e-mail").click()
            await expect(j.locator("#mail-note")).to_have_text("Reply posted and mailed to ada@example.com.")
            await expect(j.locator("#messages")).to_contain_text("four days")

            # The mail is in the dev outbox; an admin reads it there.
            (mail,) = await poll_until(lambda: _sent(server))
            priya = await console_log_in(priya_context, server, "priya@acme.example")
            p = priya.page
            await p.goto(server.base_url + "/console/mail")
            await expect(p.locator("#dev-outbox-note")).to_be_visible()
            await p.get_by_role("link", name=mail.subject).click()
            await expect(p.locator(".mail-headers")).to_contain_text(mail.headers["Reply-To"])
            await expect(p.locator(".mail-text")).to_contain_text("four days")
            await p.screenshot(path=str(artifacts / "mail-dev-outbox.png"))

            # The customer answers from their mail client: real SMTP into the listener.
            raw = customer_reply(mail, "Wonderful — I'll order it tonight.", from_address="ada@example.com")
            code, message, _ = await send_smtp(
                settings.inbound_smtp_port, "ada@example.com", [mail.headers["Reply-To"]], raw
            )
            assert code == 250, message
            await expect(j.locator("#messages")).to_contain_text("I'll order it tonight")
            await expect(j.locator("#messages .msg-via").last).to_have_text("by e-mail")
            await expect(chat.locator(".bubble").last).to_contain_text("I'll order it tonight")
            await expect(chat.locator(".bubble").last).not_to_contain_text("four days")  # no quoted history
            await shop.screenshot(path=str(artifacts / "mail-reply-in-widget.png"))

            # Jane closes; the visitor asks for the transcript by e-mail from the widget.
            await j.get_by_role("button", name="Close chat").click()
            await j.get_by_role("button", name="Confirm close").click()
            await expect(chat.locator(".endtext")).to_be_visible()
            await shop.get_by_label("E-mail me this transcript").fill("ada@example.com")
            await chat.locator(".tm button").click()
            await expect(chat.locator(".tn")).to_have_text("Sent to ada@example.com.")
            (transcript,) = await outbox_rows(server.services, kind="transcript")
            assert "I'll order it tonight" in transcript.text_body and "four days" in transcript.text_body
        finally:
            for context in contexts:
                await context.close()


async def _sent(server) -> list[OutboxMail] | None:  # noqa: ANN001
    return await outbox_rows(server.services, state="sent") or None
