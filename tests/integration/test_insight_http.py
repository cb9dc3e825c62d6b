"""Insight end to end: chats made through real sockets, read back through the reports pages and CSVs."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from nameplate.mail.compose import customer_reply, to_message
from nameplate.store.models import Conversation, ConversationStatus, Customer, InboundMail, InsightEvent
from nameplate.web import login as login_module
from tests.harness import (
    RunningServer,
    connect_agent,
    connect_visitor,
    free_port,
    poll_until,
    running_server,
    seeded_settings,
)
from tests.mail_helpers import SmtpSink, agent_by_email, offline_conversation, outbox_rows, send_smtp

PASSWORD = "nameplate-demo"
JANE, TOMAS = "jane@acme.example", "tomas@acme.example"


@pytest.fixture(autouse=True)
def many_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login_module, "LOGIN_ATTEMPTS", 1000)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    # A queued visitor who goes away counts as gone after a fifth of a second here (20 s in production);
    # the sentence model has a test of its own (tests/unit/test_insight_topics.py).
    settings = await seeded_settings(tmp_path, abandon_grace_seconds=0.2, topics_embedder="lexical")
    async with running_server(settings) as running:
        yield running


@contextlib.asynccontextmanager
async def desk(server: RunningServer, email: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        yield client


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def kinds(server: RunningServer, conversation_id: str) -> list[str]:
    async with server.services.sessions() as session:
        result = await session.execute(
            select(InsightEvent.kind).where(InsightEvent.conversation_id == conversation_id).order_by(InsightEvent.id)
        )
        return list(result.scalars())


async def test_a_transferred_rated_chat_is_counted_per_agent_and_drills_down(server: RunningServer) -> None:
    jane = await connect_agent(server, JANE)
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="q1", body="Where is my order 1142?")
    assigned = await jane.expect("assigned")
    conversation_id = assigned["conversation"]["id"]
    await jane.send(type="message", conversation_id=conversation_id, client_id="a1", body="Let me look.")
    await visitor.expect("message", lambda f: f["body"] == "Let me look.")
    tomas_agent = await server.services.directory.agent_by_email(None, TOMAS)
    jane_agent = await server.services.directory.agent_by_email(None, JANE)
    tomas = await connect_agent(server, TOMAS, status="available")  # supervisors arrive away otherwise
    await jane.send(type="transfer", conversation_id=conversation_id, to_agent=tomas_agent.id, note="")
    await tomas.expect("assigned", lambda f: f["conversation"]["id"] == conversation_id)
    await tomas.send(type="close", conversation_id=conversation_id)
    await visitor.expect("closed")
    await visitor.send(type="rate", conversation_id=conversation_id, score=5, comment='=HYPERLINK("x") thanks')
    await visitor.expect("rated")
    assert await kinds(server, conversation_id) == [
        "queued", "assigned", "first_reply", "transfer", "assigned", "closed", "rated",
    ]  # fmt: skip

    async with desk(server, TOMAS) as supervisor:
        page = await supervisor.get("/supervisor/reports", params={"tz": "UTC"})
        assert page.status_code == 200
        assert '<svg class="ins-chart" id="chart-chats" role="img"' in page.text
        assert '<title id="chart-chats-title">Chats per day</title>' in page.text
        agents = {r["label"]: r for r in rows_of((await supervisor.get("/supervisor/reports/agents.csv")).text)}
        jane_row, tomas_row = agents["Jane Chang-Katzenberg"], agents["Tomás Okafor-Lindqvist"]
        assert (jane_row["chats"], jane_row["served"], jane_row["closed"], jane_row["ratings"]) == ("1", "1", "0", "0")
        assert (tomas_row["chats"], tomas_row["closed"], tomas_row["ratings"], tomas_row["csat"]) == (
            "1",
            "1",
            "1",
            "1",
        )
        assert jane_row["first_response_median_s"] != "" and tomas_row["first_response_median_s"] == ""
        days = rows_of((await supervisor.get("/supervisor/reports/days.csv")).text)
        assert sum(int(r["chats"]) for r in days) == 1 and len(days) == 7
        drill = await supervisor.get(
            "/supervisor/reports/conversations", params={"metric": "rated", "agent": tomas_agent.id}
        )
        assert f'data-conversation-id="{conversation_id}"' in drill.text
        nothing = await supervisor.get(
            "/supervisor/reports/conversations", params={"metric": "rated", "agent": jane_agent.id}
        )
        assert f'data-conversation-id="{conversation_id}"' not in nothing.text
        ratings = rows_of((await supervisor.get("/supervisor/ratings.csv", params={"score": "5"})).text)
        assert [(r["conversation_id"], r["agent"], r["comment"]) for r in ratings] == [
            (conversation_id, "Tomás Okafor-Lindqvist", '\'=HYPERLINK("x") thanks')
        ]
        assert rows_of((await supervisor.get("/supervisor/ratings.csv", params={"score": "1"})).text) == []
        questions = await supervisor.get("/supervisor/questions")
        assert "“Where is my order &lt;number&gt;”" in questions.text


async def test_a_visitor_who_leaves_the_queue_is_listed_and_followed_up(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)  # nobody is online: the chat waits
    await visitor.send(type="message", client_id="q1", body="Anyone there? <img src=x onerror=alert(1)>")
    ack = await visitor.expect("ack")
    await visitor.send(type="email", email="walker@example.com")
    await visitor.expect("email_saved")
    await visitor.close()
    await poll_until(lambda: kinds(server, ack["conversation_id"]), timeout=10)
    await poll_until(lambda: _has(server, ack["conversation_id"], "left"), timeout=10)

    async with server.services.sessions() as session:
        conversation = await session.get(Conversation, ack["conversation_id"])
        await session.execute(
            update(Customer).where(Customer.id == conversation.customer_id).values(name="<script>alert(1)</script>")
        )
        await session.commit()
    async with desk(server, TOMAS) as supervisor:
        listed = await supervisor.get("/supervisor/gave-up")
        assert "<script>alert(1)</script>" not in listed.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in listed.text
        assert f'data-conversation-id="{ack["conversation_id"]}"' in listed.text and "walker@example.com" in listed.text
        rows = rows_of((await supervisor.get("/supervisor/gave-up.csv")).text)
        assert [(r["conversation_id"], r["email"], r["abandoned"]) for r in rows] == [
            (ack["conversation_id"], "walker@example.com", "true")
        ]
        csrf = (await supervisor.get("/supervisor/reports")).text.split('name="csrf-token" content="')[1].split('"')[0]
        url = f"/supervisor/gave-up/{ack['conversation_id']}/follow-up"
        sent = await supervisor.post(url, data={"csrf_token": csrf}, headers={"Accept": "application/json"})
        assert sent.status_code == 200 and sent.json()["to"] == "walker@example.com"
        again = await supervisor.post(url, data={"csrf_token": csrf}, headers={"Accept": "application/json"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_sent"
        forged = await supervisor.post(url, data={"csrf_token": "nope"})
        assert forged.status_code == 403
    # Into the e-mail outbox (no SMTP_URL: the dev outbox page lists it), from the supervisor who sent it.
    (row,) = await outbox_rows(server.services)
    assert (row.kind, row.to_address, row.conversation_id) == (
        "follow_up",
        "walker@example.com",
        ack["conversation_id"],
    )
    sender = to_message(row)["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Tomás Okafor-Lindqvist (Acme Outdoor)", "support@localhost")
    assert row.headers["Reply-To"].startswith("reply+")
    async with desk(server, TOMAS) as supervisor:
        outbox_page = await supervisor.get("/console/mail")
        assert outbox_page.status_code == 200 and "walker@example.com" in outbox_page.text
        assert "follow_up" in outbox_page.text


async def _has(server: RunningServer, conversation_id: str, kind: str) -> bool:
    return kind in await kinds(server, conversation_id)


async def test_reports_refuse_bad_input_and_non_supervisors(server: RunningServer) -> None:
    async with desk(server, TOMAS) as supervisor, desk(server, JANE) as agent:
        assert (await supervisor.get("/supervisor/reports", params={"tz": "Mars/Olympus"})).status_code == 400
        assert (await supervisor.get("/supervisor/reports", params={"from": "2026-02-30"})).status_code == 400
        reversed_range = await supervisor.get("/supervisor/reports", params={"from": "2026-05-02", "to": "2026-05-01"})
        assert reversed_range.status_code == 400
        assert (await supervisor.get("/supervisor/reports/secrets.csv")).status_code == 404
        assert (await supervisor.get("/supervisor/reports/conversations", params={"metric": "x"})).status_code == 400
        assert (await supervisor.get("/supervisor/ratings", params={"score": "9"})).status_code == 400
        assert (await agent.get("/supervisor/reports")).status_code == 403
        assert (await agent.get("/supervisor/reports/days.csv")).status_code == 403


async def test_a_visitor_who_reloads_within_the_grace_period_has_not_given_up(server: RunningServer) -> None:
    router = server.services.router
    router.abandon_grace_seconds = 2.0  # room for the reconnect on a busy machine

    def judging() -> bool:
        return any(t.get_coro().__name__ == "_abandon_later" for t in router._tasks)

    visitor, token = await connect_visitor(server)
    await visitor.send(type="message", client_id="q1", body="Is the stove in stock?")
    ack = await visitor.expect("ack")
    await visitor.close()
    await poll_until(judging)  # the socket's end was noticed while the chat was queued
    again, _ = await connect_visitor(server, token, conversation_id=ack["conversation_id"])
    await poll_until(lambda: not judging(), timeout=10)  # the grace period ran out and the router decided
    assert "left" not in await kinds(server, ack["conversation_id"])
    conversation = await server.services.conversations.get(ack["conversation_id"])
    assert conversation is not None and conversation.status == "queued"
    await again.close()


async def test_a_follow_up_goes_out_over_smtp_and_the_visitors_answer_comes_back(tmp_path: Path) -> None:
    """The follow-up to a visitor who gave up, delivered by a real SMTP server; the visitor's answer to it,
    sent to the listener, reaches the same customer's conversation thread (a linked follow-up, since a chat
    the visitor gave up on is closed)."""
    async with SmtpSink() as sink:
        settings = await seeded_settings(
            tmp_path,
            smtp_url=sink.url,
            public_url="http://chat.acme.example",
            inbound_smtp_port=free_port(),
            inbound_smtp_host="127.0.0.1",
        )
        async with running_server(settings) as server:
            services = server.services
            conversation = await offline_conversation(services)  # Ada, queued, nobody online
            await services.conversations.abandon(conversation.id, "https://acme.example/packs", conversation.created_at)
            tomas = await agent_by_email(services, TOMAS)
            jane = await agent_by_email(services, JANE)
            await services.insight.follow_ups.send(tomas, conversation.id, sender_id=jane.id)
            (message,) = await sink.wait_for(1)
            assert sink.envelopes[0][1] == ["ada@example.com"]
            assert message["Subject"] == "Sorry we missed you — Acme Outdoor"
            assert message["From"].addresses[0].display_name == "Jane Chang-Katzenberg (Acme Outdoor)"
            assert message["From"].addresses[0].addr_spec == "support@chat.acme.example"  # the site's, not hers
            reply_to = str(message["Reply-To"])
            assert reply_to.startswith("reply+") and reply_to.endswith("@chat.acme.example")
            token = reply_to[len("reply+") : reply_to.index("@")]
            assert services.mail.tokens.read(token).conversation_id == conversation.id
            text = message.get_body(("plain",)).get_content()
            assert text.startswith("Hi Ada,") and "https://acme.example/packs" in text
            assert "http://chat.acme.example/mail/c/" in text
            (row,) = await poll_until(lambda: _sent(services))
            assert row.message_id == message["Message-ID"].strip() and row.transport == "smtp"

            raw = customer_reply(row, "Yes please, is the Ridge 40 still in stock?")
            code, answer, refusals = await send_smtp(settings.inbound_smtp_port, "ada@example.com", [reply_to], raw)
            assert (code, refusals) == (250, []), answer
            async with services.sessions() as session:
                (record,) = (await session.execute(select(InboundMail))).scalars()
            assert record.status == "posted" and record.reason == f"follow-up to closed conversation {conversation.id}"
            follow_up = await services.conversations.get(record.conversation_id)
            assert follow_up is not None and follow_up.customer_id == conversation.customer_id
            assert follow_up.status != ConversationStatus.closed.value and follow_up.offline_email == "ada@example.com"
            history = await services.conversations.history(follow_up.id)
            assert conversation.id in history[0]["body"]
            assert history[1]["body"] == "Yes please, is the Ridge 40 still in stock?"  # the quote stripped
            assert history[1]["author"]["kind"] == "visitor" and record.seq == history[1]["seq"]


async def _sent(services):  # noqa: ANN001, ANN202
    return [row for row in await outbox_rows(services, kind="follow_up") if row.state == "sent"] or None
