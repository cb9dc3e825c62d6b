"""Replies coming back: real SMTP into the listener and raw mail into the provider hook, one parser for both."""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from nameplate.mail.compose import customer_reply
from nameplate.mail.inbound import MAX_ATTACHMENT_BYTES
from nameplate.mail.tokens import BadToken, ReplyTokens
from nameplate.store.models import ConversationStatus, InboundMail, OutboxMail
from tests.harness import (
    RunningServer,
    connect_agent,
    connect_visitor,
    free_port,
    poll_until,
    running_server,
    seeded_settings,
)
from tests.mail_helpers import agent_by_email, offline_conversation, outbox_rows, send_smtp

HOOK_SECRET = "hook-secret-for-tests"


@pytest.fixture
async def mail_server(tmp_path: Path):  # noqa: ANN201
    settings = await seeded_settings(
        tmp_path,
        inbound_smtp_port=free_port(),
        inbound_smtp_host="127.0.0.1",
        inbound_hook_secret=HOOK_SECRET,
        public_url="http://chat.acme.example",
    )
    async with running_server(settings) as running:
        yield running


async def _replied(server: RunningServer, body: str = "Is it waterproof?") -> tuple[str, OutboxMail]:
    services = server.services
    conversation = await offline_conversation(services, assign_to="jane@acme.example")
    jane = await agent_by_email(services, "jane@acme.example")
    _, mail = await services.mail.followups.reply_by_email(jane, conversation.id, body)
    return conversation.id, mail


async def _inbound(server: RunningServer) -> list[InboundMail]:
    async with server.services.sessions() as session:
        from sqlalchemy import select

        return list((await session.execute(select(InboundMail).order_by(InboundMail.created_at))).scalars())


def _reply_to(mail: OutboxMail) -> str:
    return mail.headers["Reply-To"]


async def test_a_reply_over_smtp_becomes_a_live_visitor_message_without_the_quoted_history(
    mail_server: RunningServer,
) -> None:
    server = mail_server
    jane_socket = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Do you have the Ridge 40 in blue?")
    await visitor.expect("agent_joined")
    conversation_id = (await jane_socket.expect("assigned"))["conversation"]["id"]
    await visitor.send(type="email", email="ada@example.com")
    await visitor.expect("email_saved")
    jane = await agent_by_email(server.services, "jane@acme.example")
    _, mail = await server.services.mail.followups.reply_by_email(
        jane, conversation_id, "Yes — the blue Ridge 40 is in stock."
    )
    raw = customer_reply(mail, "Great, I'll take it!\n\nThanks,\nAda")
    code, message, refusals = await send_smtp(
        server.services.settings.inbound_smtp_port, "ada@example.com", [_reply_to(mail)], raw
    )
    assert (code, refusals) == (250, []), message

    def from_mail(f: dict) -> bool:
        return f["author"]["kind"] == "visitor" and f["body"].startswith("Great")

    frame = await jane_socket.expect("message", from_mail)
    assert frame["conversation_id"] == conversation_id
    assert frame["author"]["via"] == "email"
    assert "blue Ridge 40" not in frame["body"] and "wrote:" not in frame["body"]  # the quote is gone
    assert (await visitor.expect("message", from_mail))["seq"] == frame["seq"]  # live in the widget too
    (record,) = await _inbound(server)
    assert record.status == "posted" and record.seq == frame["seq"]
    assert b"blue Ridge 40" in record.raw  # the full original is kept
    # The same mail delivered twice (a provider retry) is one message.
    code, _, _ = await send_smtp(server.services.settings.inbound_smtp_port, "ada@example.com", [_reply_to(mail)], raw)
    assert code == 250
    history = await server.services.conversations.history(conversation_id)
    assert sum(1 for f in history if f["body"].startswith("Great, I'll take it!")) == 1
    await jane_socket.close()
    await visitor.close()


async def test_the_listener_refuses_other_recipients_forged_tokens_and_oversize_mail(
    mail_server: RunningServer,
) -> None:
    server = mail_server
    port = server.services.settings.inbound_smtp_port
    _, mail = await _replied(server)
    raw = customer_reply(mail, "hello")
    _, _, refusals = await send_smtp(port, "ada@example.com", ["support@chat.acme.example"], raw)
    assert refusals and refusals[0][0] == 550
    forged = re.sub(r"reply\+[a-z2-7]+", "reply+mfrgg", _reply_to(mail))
    _, _, refusals = await send_smtp(port, "ada@example.com", [forged], raw)
    assert refusals and refusals[0][0] == 550
    token = _reply_to(mail).split("+", 1)[1].split("@")[0]
    tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
    _, _, refusals = await send_smtp(port, "ada@example.com", [f"reply+{tampered}@chat.acme.example"], raw)
    assert refusals and refusals[0][0] == 550 and "not issued here" in refusals[0][1]
    big = raw + (b"x" * 76 + b"\r\n") * (11 * 1024 * 1024 // 78)
    code, message, _ = await send_smtp(port, "ada@example.com", [_reply_to(mail)], big)
    assert code == 552, message
    assert await _inbound(server) == []  # nothing was taken


def test_tokens_expire_and_are_case_insensitive() -> None:
    tokens = ReplyTokens("secret", max_age_days=90)
    token = tokens.issue("AbC-dEf_123", now=1_000_000_000)
    assert tokens.read(token.upper(), now=1_000_000_000).conversation_id == "AbC-dEf_123"
    assert len(f"reply+{token}") <= 64
    with pytest.raises(BadToken, match="expired"):
        tokens.read(token, now=1_000_000_000 + 91 * 86400)
    with pytest.raises(BadToken):
        ReplyTokens("other secret").read(token, now=1_000_000_000)


async def test_auto_replies_are_recorded_and_never_answered(mail_server: RunningServer) -> None:
    server = mail_server
    conversation_id, mail = await _replied(server)
    before = len(await outbox_rows(server.services))
    for header, value in (
        ("Auto-Submitted", "auto-replied"),
        ("Precedence", "bulk"),
        ("X-Loop", mail.headers["X-Loop"]),
        ("Subject", "Out of Office: back Monday"),
    ):
        message = EmailMessage()
        message["From"] = "ada@example.com"
        message["To"] = _reply_to(mail)
        message["Subject"] = "Re: hello"
        message["Message-ID"] = f"<auto-{header}@example.com>"
        if header == "Subject":
            message.replace_header("Subject", value)
        else:
            message[header] = value
        message.set_content("I am away until Monday.")
        code, _, _ = await send_smtp(
            server.services.settings.inbound_smtp_port, "ada@example.com", [_reply_to(mail)], message.as_bytes()
        )
        assert code == 250
    records = await _inbound(server)
    assert [r.status for r in records] == ["auto_reply"] * 4
    history = await server.services.conversations.history(conversation_id)
    assert not any("away until Monday" in f["body"] for f in history)
    await server.services.mail.followups.sweep(force=True)
    assert len(await outbox_rows(server.services)) == before  # no mail answers a robot


async def test_a_forged_sender_is_held_for_an_agent_and_can_be_released(mail_server: RunningServer) -> None:
    server = mail_server
    conversation_id, mail = await _replied(server)
    raw = customer_reply(mail, "Send the refund to my other account", from_address="mallory@evil.example")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post("/mail/inbound", content=raw, headers={"Authorization": f"Bearer {HOOK_SECRET}"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "held"
        held_id = response.json()["id"]
        history = await server.services.conversations.history(conversation_id, include_private=True)
        assert not any(f["author"]["kind"] == "visitor" and "refund" in f["body"] for f in history)
        note = [f for f in history if f["private"] and "held" in f["body"]]
        assert note and "mallory@evil.example" in note[0]["body"]
        # An agent reads it and releases it.
        login = await http.post("/login", json={"email": "jane@acme.example", "password": "nameplate-demo"})
        assert login.status_code == 200
        page = await http.get(f"/console/mail/inbound/{held_id}")
        assert page.status_code == 200 and "mallory@evil.example" in page.text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        released = await http.post(f"/console/mail/inbound/{held_id}/release", data={"csrf_token": token})
        assert released.status_code == 303
    history = await server.services.conversations.history(conversation_id)
    assert any(f["author"]["kind"] == "visitor" and "refund" in f["body"] for f in history)


async def test_the_hook_needs_its_secret_and_refuses_malformed_mail_but_keeps_it(mail_server: RunningServer) -> None:
    server = mail_server
    _, mail = await _replied(server)
    raw = customer_reply(mail, "hi")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.post("/mail/inbound", content=raw)).status_code == 401
        wrong = await http.post("/mail/inbound", content=raw, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        broken = await http.post(
            "/mail/inbound",
            content=b"\x00\xff garbage without headers",
            headers={"Authorization": f"Bearer {HOOK_SECRET}"},
        )
        assert broken.status_code == 422 and broken.json()["error"]["code"] == "malformed"
        stranger = EmailMessage()
        stranger["From"] = "ada@example.com"
        stranger["To"] = "reply+mfrgg-1-aaaaaaaaaaaaaaaa@chat.acme.example"  # well-formed, never issued
        stranger["Subject"] = "hello"
        stranger.set_content("hello")
        unknown = await http.post(
            "/mail/inbound", content=stranger.as_bytes(), headers={"Authorization": f"Bearer {HOOK_SECRET}"}
        )
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "bad_token"
    statuses = [r.status for r in await _inbound(server)]
    assert statuses.count("refused") == 2  # recorded, not lost


async def test_attachments_are_kept_within_the_cap_and_noted_when_over_it(mail_server: RunningServer) -> None:
    server = mail_server
    conversation_id, mail = await _replied(server)
    message = EmailMessage()
    message["From"] = "Ada <ada@example.com>"
    message["To"] = _reply_to(mail)
    message["Subject"] = "Re: photos"
    message["Message-ID"] = "<att@example.com>"
    message.set_content("Here are the photos.")
    message.add_attachment(b"\x89PNG small", maintype="image", subtype="png", filename="small.png")
    message.add_attachment(
        b"0" * (MAX_ATTACHMENT_BYTES + 10), maintype="application", subtype="zip", filename="big.zip"
    )
    code, msg, _ = await send_smtp(
        server.services.settings.inbound_smtp_port, "ada@example.com", [_reply_to(mail)], message.as_bytes()
    )
    assert code == 250, msg
    (record,) = await _inbound(server)
    kept = {a["filename"]: a["kept"] for a in record.attachments}
    assert kept == {"small.png": True, "big.zip": False}
    assert len(record.raw) < MAX_ATTACHMENT_BYTES  # the big one is not stored
    history = await server.services.conversations.history(conversation_id)
    body = next(f["body"] for f in history if f["body"].startswith("Here are the photos."))
    assert "small.png" in body and "big.zip" in body and "not kept" in body


async def test_a_reply_to_a_closed_chat_starts_a_linked_follow_up_for_the_same_customer(
    mail_server: RunningServer,
) -> None:
    server = mail_server
    services = server.services
    conversation_id, mail = await _replied(server)
    closed = await services.conversations.get(conversation_id)
    assert await services.conversations.close(closed, "Jane")
    raw = customer_reply(mail, "One more question about the straps")
    code, _, _ = await send_smtp(services.settings.inbound_smtp_port, "ada@example.com", [_reply_to(mail)], raw)
    assert code == 250
    (record,) = await _inbound(server)
    assert record.status == "posted" and record.conversation_id != conversation_id
    follow_up = await services.conversations.get(record.conversation_id)
    assert follow_up.customer_id == closed.customer_id and follow_up.status != ConversationStatus.closed.value
    assert follow_up.offline_email == "ada@example.com"
    history = await services.conversations.history(follow_up.id)
    assert conversation_id in history[0]["body"] and "straps" in history[1]["body"]
    # Routed to the customer's previous agent first (the concierge rule).
    assert (
        await services.conversations.previous_agent_id(follow_up.customer_id, excluding=follow_up.id)
        == (await agent_by_email(services, "jane@acme.example")).id
    )
    # The old conversation stays closed and its rating stands.
    assert (await services.conversations.get(conversation_id)).status == ConversationStatus.closed.value
    await poll_until(lambda: True)


async def test_a_flood_of_mail_to_one_reply_address_is_deferred(
    mail_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nameplate.mail.inbound as inbound_module

    monkeypatch.setattr(inbound_module, "MAX_MAILS_PER_CONVERSATION_PER_HOUR", 2)
    server = mail_server
    _, mail = await _replied(server)
    port = server.services.settings.inbound_smtp_port
    codes = []
    for n in range(3):
        raw = customer_reply(mail, f"message {n}")
        codes.append((await send_smtp(port, "ada@example.com", [_reply_to(mail)], raw))[0])
    assert codes == [250, 250, 451]  # a temporary refusal: a real sender retries later, nothing is lost
