"""The durable outbox against a real SMTP server (aiosmtpd): sent, retried, failed, and safe across a kill."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import nameplate.mail.outbox as outbox_module
from nameplate.mail.compose import header_text
from nameplate.mail.outbox import Outbox
from nameplate.mail.smtp import SmtpTransport, SmtpUrlError, parse_smtp_url
from nameplate.store.models import OutboxMail
from tests.harness import poll_until, running_server, seeded_settings
from tests.mail_helpers import SmtpSink, agent_by_email, offline_conversation, outbox_rows


async def test_an_agents_reply_by_email_goes_out_from_their_name_with_a_reply_token(tmp_path: Path) -> None:
    async with SmtpSink() as sink:
        settings = await seeded_settings(tmp_path, smtp_url=sink.url, public_url="http://chat.acme.example")
        async with running_server(settings) as server:
            services = server.services
            conversation = await offline_conversation(services, assign_to="jane@acme.example")
            jane = await agent_by_email(services, "jane@acme.example")
            stored, mail = await services.mail.followups.reply_by_email(jane, conversation.id, "Yes, in blue!")
            assert stored.author_kind == "agent"
            (message,) = await sink.wait_for(1)
            assert message["Message-ID"].strip() == mail.message_id
            assert message["From"].addresses[0].display_name == "Jane Chang-Katzenberg (Acme Outdoor)"
            assert message["From"].addresses[0].addr_spec == "support@chat.acme.example"
            reply_to = str(message["Reply-To"])
            assert reply_to.startswith("reply+") and reply_to.endswith("@chat.acme.example")
            token = reply_to[len("reply+") : reply_to.index("@")]
            assert token in message["Message-ID"] and token in message["References"]
            assert token not in str(message["From"])
            assert conversation.id not in reply_to  # signed, not the bare id
            text = message.get_body(("plain",)).get_content()
            html = message.get_body(("html",)).get_content()
            assert text.startswith("Hi Ada,") and "Yes, in blue!" in text and "Customer Care, Acme Outdoor" in text
            assert "http://chat.acme.example/mail/c/" in text
            assert "<strong>Jane Chang-Katzenberg</strong>" in html
            assert "/agents/" in html  # the agent's photo in the signature
            assert sink.envelopes[0][1] == ["ada@example.com"]
            (row,) = await poll_until(lambda: _sent_rows(services))
            assert row.attempts == 1 and row.transport == "smtp" and row.last_error is None


async def _sent_rows(services) -> list[OutboxMail] | None:  # noqa: ANN001
    rows = await outbox_rows(services, state="sent")
    return rows or None


async def test_a_killed_sender_leaves_the_mail_to_go_out_once_with_the_same_message_id(tmp_path: Path) -> None:
    async with SmtpSink(hold=True) as sink:
        settings = await seeded_settings(tmp_path)  # no SMTP_URL: the server's own sender stays on the dev outbox
        async with running_server(settings) as server:
            services = server.services
            await services.mail.outbox.stop()  # this test drives two senders of its own
            conversation = await offline_conversation(services, assign_to="jane@acme.example")
            site = await services.directory.site_by_key("site_demo")
            sender = await services.mail.site_settings.sender(site)
            from nameplate.mail.compose import compose

            mail = compose(
                sender=sender,
                site_id=site.id,
                conversation_id=conversation.id,
                token=services.mail.tokens.issue(conversation.id),
                kind="reply",
                to_address="ada@example.com",
                to_name="Ada",
                subject="Your order",
                agent=None,
                intro="It ships today.",
            )
            # (A short timeout: on cancellation aiosmtplib still says QUIT politely, which a dead process would not.)
            first = Outbox(services.sessions, SmtpTransport(parse_smtp_url(sink.url), timeout=0.5), lease_seconds=0.5)
            await first.enqueue(mail)
            doomed = asyncio.create_task(first.send_due())
            await asyncio.wait_for(sink.rcpt_seen.wait(), 10)
            # While the first sender holds its lease, nobody else may take the mail.
            second = Outbox(services.sessions, SmtpTransport(parse_smtp_url(sink.url)), lease_seconds=0.5)
            assert await second.claim() == []
            doomed.cancel()  # the process dies mid-send
            with pytest.raises(asyncio.CancelledError):
                await doomed
            assert sink.messages == []
            sink.hold = False
            sink.release.set()
            # A restarted process: once the dead one's lease ran out, it sends the same row.
            await poll_until(lambda: _send_once(second), timeout=10)
            (message,) = await sink.wait_for(1)
            assert message["Message-ID"].strip() == mail.message_id
            (row,) = await outbox_rows(services, id=mail.id)
            assert row.state == "sent" and row.message_id == mail.message_id
            await asyncio.sleep(0)  # nothing further is pending
            assert await second.send_due() == 0
            assert len(sink.messages) == 1


async def _send_once(outbox: Outbox) -> bool:
    return await outbox.send_due() == 1


async def test_failures_are_retried_with_back_off_then_marked_failed_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "MAX_ATTEMPTS", 3)
    async with SmtpSink(failures=1) as sink:
        settings = await seeded_settings(tmp_path, smtp_url=sink.url, mail_retry_base_seconds=0.05)
        async with running_server(settings) as server:
            services = server.services
            conversation = await offline_conversation(services, assign_to="jane@acme.example")
            jane = await agent_by_email(services, "jane@acme.example")
            _, mail = await services.mail.followups.reply_by_email(jane, conversation.id, "Retry me")
            (message,) = await sink.wait_for(1)  # refused once (451), then accepted
            assert message["Message-ID"].strip() == mail.message_id
            (row,) = await poll_until(lambda: _sent_rows(services))
            assert row.attempts == 2
            # Now a server that always refuses: three attempts, then failed with its answer kept.
            sink.failures = 99
            _, doomed = await services.mail.followups.reply_by_email(jane, conversation.id, "Never arrives")
            failed = await poll_until(lambda: _failed(services, doomed.id))
            assert failed.attempts == 3
            assert "451" in failed.last_error and "Mailbox busy" in failed.last_error


async def _failed(services, mail_id: str) -> OutboxMail | None:  # noqa: ANN001
    (row,) = await outbox_rows(services, id=mail_id)
    return row if row.state == "failed" else None


def test_smtp_url_forms() -> None:
    plain = parse_smtp_url("smtp://user%40x:p%3Ass@mail.example:2525")
    assert (plain.host, plain.port, plain.username, plain.password) == ("mail.example", 2525, "user@x", "p:ss")
    assert plain.start_tls is None and not plain.use_tls
    assert parse_smtp_url("smtp://mail.example?starttls=require").start_tls is True
    assert parse_smtp_url("smtp://mail.example?starttls=off").start_tls is False
    tls = parse_smtp_url("smtps://mail.example")
    assert tls.use_tls and tls.port == 465 and tls.start_tls is False
    assert "password" not in repr(tls) or "p:ss" not in repr(plain)
    for bad in ("http://mail.example", "smtp://", "smtp://mail.example?starttls=maybe"):
        with pytest.raises(SmtpUrlError):
            parse_smtp_url(bad)


def test_header_text_never_lets_a_line_break_through() -> None:
    assert header_text("Ada\r\nBcc: victim@example.com") == "Ada Bcc: victim@example.com"
    assert "\n" not in header_text("x\u2028y\x85z\n")
    assert len(header_text("a" * 1000)) == 200


@pytest.mark.services
async def test_postgres_senders_claim_disjoint_mails_with_skip_locked() -> None:
    from nameplate.config import Settings
    from nameplate.mail.smtp import DevTransport
    from nameplate.services import Services
    from nameplate.store import migrate
    from tests.services import create_postgres_database, drop_postgres_database

    url = await create_postgres_database()
    try:
        await migrate.upgrade_to_head(url)
        services = Services.build(Settings(database_url=url, secret_key="mail-claim"))
        try:
            site = await services.directory.create_site("Claim Shop", allowed_origins="*")
            async with services.sessions() as session:
                for n in range(30):
                    session.add(
                        OutboxMail(
                            site_id=site.id,
                            kind="reply",
                            to_address=f"c{n}@example.com",
                            subject="s",
                            text_body="t",
                            html_body="h",
                            message_id=f"<m{n}@claim.example>",
                        )
                    )
                await session.commit()
            senders = [Outbox(services.sessions, DevTransport()) for _ in range(3)]
            claims = await asyncio.gather(*(sender.claim() for sender in senders))
            everything = [mail_id for claim in claims for mail_id in claim]
            assert len(everything) == len(set(everything)) == 30
            assert await senders[0].claim() == []  # all leased
        finally:
            await services.engine.dispose()
    finally:
        await drop_postgres_database(url)


async def test_a_reply_mail_whose_process_died_before_it_was_due_is_recovered(tmp_path: Path) -> None:
    """The reply mail is written `waiting` before its message; a crash in between is settled by the sweep."""
    from nameplate.mail.compose import compose
    from nameplate.store.message_log.log import NewMessage

    async with running_server(await seeded_settings(tmp_path)) as server:
        services = server.services
        await services.mail.outbox.stop()  # only this test's sweep decides
        conversation = await offline_conversation(services, assign_to="jane@acme.example")
        site = await services.directory.site_by_key("site_demo")
        sender = await services.mail.site_settings.sender(site)
        token = services.mail.tokens.issue(conversation.id)
        orphans = []
        for text in ("stored before the crash", "never stored"):
            mail = compose(
                sender=sender, site_id=site.id, conversation_id=conversation.id, token=token, kind="reply",
                to_address="ada@example.com", to_name="Ada", subject="s", agent=None, intro=text,
            )  # fmt: skip
            mail.state = "waiting"
            await services.mail.outbox.enqueue(mail)
            orphans.append(mail)
        stored = await services.conversations.post(
            NewMessage(conversation.id, "agent", "stored before the crash", client_id=f"outbox:{orphans[0].id}"),
            {"kind": "agent"},
        )
        assert await services.mail.followups.recover_waiting(older_than_seconds=0) == 2
        recovered, dropped = [await outbox_rows(services, id=m.id) for m in orphans]
        assert recovered[0].state == "pending" and recovered[0].covers_seq == stored.seq
        assert dropped[0].state == "skipped"
        assert await services.mail.outbox.send_due() == 1


async def test_an_admin_sends_a_failed_mail_again_with_the_same_message_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    import httpx

    monkeypatch.setattr(outbox_module, "MAX_ATTEMPTS", 1)
    async with SmtpSink(failures=1) as sink:
        settings = await seeded_settings(tmp_path, smtp_url=sink.url, mail_retry_base_seconds=0.05)
        async with running_server(settings) as server:
            services = server.services
            conversation = await offline_conversation(services, assign_to="jane@acme.example")
            jane = await agent_by_email(services, "jane@acme.example")
            _, mail = await services.mail.followups.reply_by_email(jane, conversation.id, "Second time lucky")
            failed = await poll_until(lambda: _failed(services, mail.id))
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                await http.post("/login", json={"email": "priya@acme.example", "password": "nameplate-demo"})
                page = await http.get(f"/console/mail/{mail.id}")
                assert failed.last_error in page.text.replace("&#39;", "'")  # the reason is shown to admins
                token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
                again = await http.post(f"/console/mail/{mail.id}/retry", data={"csrf_token": token})
                assert again.status_code == 303
            (message,) = await sink.wait_for(1)
            assert message["Message-ID"].strip() == mail.message_id


def test_mail_settings_come_from_the_environment(tmp_path: Path) -> None:
    from nameplate.config import Settings
    from nameplate.mail.service import transport_for

    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "SECRET_KEY": "k",
        "SMTP_URL": "smtps://u:p@mail.example",
        "INBOUND_SMTP_PORT": "2525",
        "INBOUND_HOOK_SECRET": "s",
    }
    settings = Settings.from_env(env)
    assert (settings.inbound_smtp_port, settings.inbound_hook_secret) == (2525, "s")
    assert transport_for(settings).name == "smtp"
    assert "p@mail" not in repr(settings)  # the SMTP password stays out of logs
    bare = Settings.from_env({"DATABASE_URL": env["DATABASE_URL"], "SECRET_KEY": "k"})
    assert bare.inbound_smtp_port is None and transport_for(bare).name == "dev"
