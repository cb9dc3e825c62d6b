"""The follow-up flows end to end over HTTP and sockets: dev outbox page, site settings, reply by e-mail,
transcripts, unread replies batched, the rating mail, and hostile names kept out of headers."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from nameplate.store.models import OutboxMail, Rating, utcnow
from tests.harness import (
    RunningServer,
    connect_agent,
    connect_visitor,
    poll_until,
    running_server,
    seeded_settings,
)
from tests.mail_helpers import SmtpSink, agent_by_email, offline_conversation, outbox_rows


async def logged_in(server: RunningServer, email: str) -> tuple[httpx.AsyncClient, str]:
    http = httpx.AsyncClient(base_url=server.base_url)
    login = await http.post("/login", json={"email": email, "password": "nameplate-demo"})
    assert login.status_code == 200
    page = await http.get("/profile")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return http, token


async def live_chat(server: RunningServer, email: str | None = "ada@example.com"):  # noqa: ANN201
    """Jane online, a visitor who wrote and (optionally) left an address: the real socket path."""
    jane = await connect_agent(server, "jane@acme.example")
    visitor, token = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Do you ship to Norway?")
    await visitor.expect("agent_joined")
    conversation_id = (await jane.expect("assigned"))["conversation"]["id"]
    if email:
        await visitor.send(type="email", email=email)
        await visitor.expect("email_saved")
    return jane, visitor, token, conversation_id


async def test_the_dev_outbox_page_shows_the_mail_safely_and_replies_as_the_customer(server: RunningServer) -> None:
    jane_socket, visitor, _, conversation_id = await live_chat(server)
    jane_http, jane_csrf = await logged_in(server, "jane@acme.example")
    reply = await jane_http.post(
        f"/console/api/conversations/{conversation_id}/email-reply",
        json={"body": "We do! <script>alert(1)</script>"},
        headers={"X-CSRF-Token": jane_csrf},
    )
    assert reply.status_code == 201, reply.text
    mail_id = reply.json()["mail"]["id"]
    assert (await jane_socket.expect("message", lambda f: f["body"].startswith("We do!")))["author"]["kind"] == "agent"
    no_csrf = await jane_http.post(f"/console/api/conversations/{conversation_id}/email-reply", json={"body": "x"})
    assert no_csrf.status_code == 403
    (row,) = await poll_until(lambda: _rows(server, state="sent"))
    assert row.transport == "dev" and row.id == mail_id
    # Only supervisors and admins read the outbox.
    assert (await jane_http.get("/console/mail")).status_code == 403
    admin, admin_csrf = await logged_in(server, "priya@acme.example")
    listing = await admin.get("/console/mail")
    assert listing.status_code == 200 and "dev outbox" in listing.text and row.subject in listing.text
    page = await admin.get(f"/console/mail/{mail_id}")
    assert page.status_code == 200
    assert "Reply-To" in page.text and "reply+" in page.text
    assert 'sandbox="" srcdoc="&lt;!doctype html&gt;' in page.text  # rendered in a sandbox, as data
    assert "<script>alert" not in page.text  # the agent's text is escaped in the mail and again on the page
    sent = await admin.post(
        f"/console/mail/{mail_id}/reply",
        data={"csrf_token": admin_csrf, "body": "Perfect, thank you!", "from_address": "ada@example.com"},
    )
    assert sent.status_code == 303 and "/console/mail/inbound/" in sent.headers["location"]
    frame = await jane_socket.expect("message", lambda f: f["body"] == "Perfect, thank you!")
    assert frame["author"]["via"] == "email"
    assert (await visitor.expect("message", lambda f: f["body"] == "Perfect, thank you!"))["seq"] == frame["seq"]
    thread = await admin.get(f"/console/mail/{mail_id}")
    assert "← " in thread.text and "ada@example.com" in thread.text  # the reply is in the thread
    for http in (jane_http, admin):
        await http.aclose()
    await jane_socket.close()
    await visitor.close()


async def _rows(server: RunningServer, **where: object) -> list[OutboxMail] | None:
    return await outbox_rows(server.services, **where) or None


async def test_admins_edit_the_sites_sending_address_and_inbound_domain(tmp_path: Path) -> None:
    async with SmtpSink() as sink, running_server(await seeded_settings(tmp_path, smtp_url=sink.url)) as server:
        admin, csrf = await logged_in(server, "priya@acme.example")
        bad = await admin.post(
            "/console/mail/settings", data={"csrf_token": csrf, "from_address": "nope", "inbound_domain": "x"}
        )
        assert bad.status_code == 422 and "sending address" in bad.text
        saved = await admin.post(
            "/console/mail/settings",
            data={"csrf_token": csrf, "from_address": "Help@Acme.example", "inbound_domain": "reply.acme.example"},
        )
        assert saved.status_code == 303
        jane_http, jane_csrf = await logged_in(server, "jane@acme.example")
        refused = await jane_http.post(
            "/console/mail/settings",
            data={"csrf_token": jane_csrf, "from_address": "x@evil.example", "inbound_domain": "evil.example"},
        )
        assert refused.status_code == 403
        conversation = await offline_conversation(server.services, assign_to="jane@acme.example")
        jane = await agent_by_email(server.services, "jane@acme.example")
        await server.services.mail.followups.reply_by_email(jane, conversation.id, "Hello from the new address")
        (message,) = await sink.wait_for(1)
        assert message["From"].addresses[0].addr_spec == "help@acme.example"
        assert str(message["Reply-To"]).endswith("@reply.acme.example")
        await admin.aclose()
        await jane_http.aclose()


async def test_a_visitors_name_with_line_breaks_never_reaches_a_header(tmp_path: Path) -> None:
    async with SmtpSink() as sink, running_server(await seeded_settings(tmp_path, smtp_url=sink.url)) as server:
        services = server.services
        conversation = await offline_conversation(
            services, name="Ada\r\nBcc: victim@example.com\r\nSubject: free money", assign_to="jane@acme.example"
        )
        jane = await agent_by_email(services, "jane@acme.example")
        await services.mail.followups.reply_by_email(jane, conversation.id, "Hello")
        (message,) = await sink.wait_for(1)
        assert message["Bcc"] is None
        assert message.get_all("Subject") == [message["Subject"]] and "free money" not in message["Subject"]
        assert sink.envelopes[0][1] == ["ada@example.com"]
        assert "\n" not in message["To"].addresses[0].display_name


async def test_transcripts_from_the_console_and_the_widget(server: RunningServer) -> None:
    jane_socket, visitor, visitor_token, conversation_id = await live_chat(server, email=None)
    jane_http, csrf = await logged_in(server, "jane@acme.example")
    none = await jane_http.post(
        f"/console/api/conversations/{conversation_id}/transcript-mail", json={}, headers={"X-CSRF-Token": csrf}
    )
    assert none.status_code == 409 and none.json()["error"]["code"] == "no_email"
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        asked = await http.post(
            "/api/v1/transcript-mail",
            json={
                "site": "site_demo",
                "token": visitor_token,
                "conversation_id": conversation_id,
                "email": "ada@example.com",
            },
        )
        assert asked.status_code == 201, asked.text
        other_visitor, other_token = await connect_visitor(server)
        stolen = await http.post(
            "/api/v1/transcript-mail",
            json={
                "site": "site_demo",
                "token": other_token,
                "conversation_id": conversation_id,
                "email": "x@evil.example",
            },
        )
        assert stolen.status_code == 404
    console = await jane_http.post(
        f"/console/api/conversations/{conversation_id}/transcript-mail", json={}, headers={"X-CSRF-Token": csrf}
    )
    assert console.status_code == 201 and console.json()["mail"]["to"] == "ada@example.com"
    rows = await outbox_rows(server.services, kind="transcript")
    assert len(rows) == 2 and all(r.to_address == "ada@example.com" for r in rows)
    assert "Do you ship to Norway?" in rows[0].text_body and "Jane Chang-Katzenberg" in rows[0].text_body
    assert rows[0].headers["Reply-To"].startswith("reply+")  # its reply threads back
    # A third and fourth: the cap stops mail sent on a visitor's word.
    await server.services.mail.followups.send_transcript(conversation_id, rows[0].site_id)
    with pytest.raises(Exception, match="often enough"):
        await server.services.mail.followups.send_transcript(conversation_id, rows[0].site_id)
    await jane_http.aclose()
    for socket in (jane_socket, visitor, other_visitor):
        await socket.close()


async def test_unread_agent_replies_are_mailed_in_one_batch_unless_read_meanwhile(tmp_path: Path) -> None:
    settings = await seeded_settings(tmp_path, mail_unread_delay_seconds=0.3)
    async with running_server(settings) as server:
        jane, gone, _, unread_id = await live_chat(server, email="gone@example.com")
        await gone.close()  # the visitor left before Jane answered
        _, stayed, _, read_id = await live_chat_second(server, jane)
        for conversation_id, prefix in ((unread_id, "u"), (read_id, "r")):
            for n in range(2):
                await jane.send(
                    type="message",
                    conversation_id=conversation_id,
                    client_id=f"{prefix}{n}",
                    body=f"{prefix} answer {n}",
                )
                await jane.expect("ack", lambda f, c=f"{prefix}{n}": f["client_id"] == c)
        last = await stayed.expect("message", lambda f: f["body"] == "r answer 1")
        await stayed.send(type="read", seq=last["seq"])
        await jane.expect("read", lambda f: f["conversation_id"] == read_id and f["by"] == "visitor")
        newest = utcnow()
        await poll_until(lambda: utcnow() > newest + timedelta(seconds=0.35))
        await server.services.mail.followups.sweep(force=True)
        rows = await poll_until(lambda: _rows(server, kind="unread"))
        assert [r.conversation_id for r in rows] == [unread_id]  # the read one is skipped
        (mail,) = rows
        assert "u answer 0" in mail.text_body and "u answer 1" in mail.text_body  # one batch
        assert mail.headers["Auto-Submitted"] == "auto-generated"
        await server.services.mail.followups.sweep(force=True)
        assert len(await outbox_rows(server.services, kind="unread")) == 1  # never twice for the same replies
        await jane.close()
        await stayed.close()


async def live_chat_second(server: RunningServer, jane):  # noqa: ANN001, ANN201
    visitor, token = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Second visitor here")
    await visitor.expect("agent_joined")
    conversation_id = (await jane.expect("assigned"))["conversation"]["id"]
    await visitor.send(type="email", email="stayed@example.com")
    await visitor.expect("email_saved")
    return jane, visitor, token, conversation_id


async def test_a_chat_closed_without_rating_gets_a_rating_mail_that_records_only_on_submit(tmp_path: Path) -> None:
    settings = await seeded_settings(tmp_path, mail_rating_delay_seconds=0.0, public_url="http://127.0.0.1")
    async with running_server(settings) as server:
        services = server.services
        conversation = await offline_conversation(services, assign_to="jane@acme.example")
        assert await services.conversations.close(conversation, "Jane")
        await services.mail.followups.sweep(force=True)
        (mail,) = await poll_until(lambda: _rows(server, kind="rating"))
        link = re.search(r"http://127\.0\.0\.1(/mail/rate/[a-z0-9-]+)", mail.text_body).group(1)
        await services.mail.followups.sweep(force=True)
        assert len(await outbox_rows(services, kind="rating")) == 1
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            form = await http.get(link)  # what a mail scanner does
            assert form.status_code == 200 and 'name="score"' in form.text
            async with services.sessions() as session:
                assert await session.get(Rating, conversation.id) is None
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
            assert (await http.post(link, data={"score": "5"})).status_code == 403
            bad = await http.post(link, data={"csrf_token": csrf, "score": "9"})
            assert bad.status_code == 422
            done = await http.post(link, data={"csrf_token": csrf, "score": "4", "comment": "Quick and kind"})
            assert done.status_code == 200 and "rating-thanks" in done.text
            unknown = await http.get("/mail/rate/mfrgg-1-aaaaaaaaaaaaaaaa")
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "bad_token"
        async with services.sessions() as session:
            rating = await session.get(Rating, conversation.id)
        assert rating is not None and rating.score == 4 and rating.comment == "Quick and kind"


async def test_the_link_in_a_mail_opens_the_conversation_escaped_and_only_with_a_valid_token(
    server: RunningServer,
) -> None:
    services = server.services
    conversation = await offline_conversation(services, name="<b>Ada</b>", assign_to="jane@acme.example")
    jane = await agent_by_email(services, "jane@acme.example")
    await services.mail.followups.reply_by_email(jane, conversation.id, "Try <img src=x onerror=alert(1)> this")
    token = services.mail.tokens.issue(conversation.id)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        page = await http.get(f"/mail/c/{token}")
        assert page.status_code == 200
        assert "Jane Chang-Katzenberg" in page.text and "Ridge 40 pack in blue" in page.text
        assert "<img src=x" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
        forged = await http.get(f"/mail/c/{token[:-1]}{'b' if token.endswith('a') else 'a'}")
        assert forged.status_code == 404
