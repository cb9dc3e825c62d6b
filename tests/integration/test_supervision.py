"""Supervision (issue 20 item 4): the audit log, whispers that never reach the visitor, take-over —
over real HTTP and websockets against a seeded server."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from nameplate.people.credentials import identity_hash
from nameplate.protocol.vocabulary import AuditAction
from nameplate.store.models import AuditEntry, Message, WebhookDelivery
from tests.desk_clients import clients_fixture, csrf_of, many_logins, signed_in  # noqa: F401  (fixtures)
from tests.harness import (
    Client,
    RunningServer,
    connect_agent,
    connect_visitor,
    poll_until,
    running_server,
    seeded_settings,
)

JANE, TOMAS, PRIYA = "jane@acme.example", "tomas@acme.example", "priya@acme.example"
XSS = "<script>alert(1)</script>"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A hook is created here to see it audited: its target is on 127.0.0.1 (nothing listens on port 9), which
    the server accepts only with internal targets allowed, as WEBHOOKS_ALLOW_PRIVATE does."""
    async with running_server(await seeded_settings(tmp_path, webhooks_allow_private=True)) as running:
        yield running


async def stored_audit(server: RunningServer) -> list[AuditEntry]:
    """Read from the store directly, oldest first."""
    async with server.services.sessions() as session:
        return list((await session.execute(select(AuditEntry).order_by(col(AuditEntry.at)))).scalars())


async def chat_with_jane(server: RunningServer) -> tuple[Client, Client, str, str]:
    """Jane online and a visitor's chat assigned to her: (jane, visitor, conversation id, visitor token)."""
    jane = await connect_agent(server, JANE)
    visitor, token = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Hello, is my order shipped?")
    await visitor.expect("ack")
    assigned = await jane.expect("assigned")
    await visitor.expect("agent_joined")
    return jane, visitor, assigned["conversation"]["id"], token


# -- audit log -------------------------------------------------------------------------------------------
async def test_audit_log_records_supervision_exports_and_changes(
    server: RunningServer, clients: list[httpx.AsyncClient]
) -> None:
    _jane, _visitor, conversation_id, _token = await chat_with_jane(server)
    tomas = await connect_agent(server, TOMAS)
    await tomas.send(type="watch", conversation_id=conversation_id, on=True)
    await tomas.expect("watching")

    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)
    export = await priya.get(f"/supervisor/conversations/{conversation_id}/export.csv")
    assert export.status_code == 200
    created = await priya.post(
        "/admin/agents",
        data={
            "csrf_token": token,
            "given_name": "Eve",
            "family_name": XSS,
            "email": "eve@acme.example",
            "password": "long-enough-password",
            "role": "agent",
            "capacity": "2",
        },
    )
    assert created.status_code == 303, created.text[:500]
    key = await priya.post("/admin/integrations/keys", data={"csrf_token": token, "name": "CRM"})
    assert key.status_code == 201
    hook = await priya.post(
        "/admin/integrations/webhooks", data={"csrf_token": token, "url": "http://127.0.0.1:9/audited-hook"}
    )
    assert hook.status_code == 303

    entries = await stored_audit(server)
    assert [e.action for e in entries][:1] == ["watched"]  # oldest first: the watch came before the rest
    by_action = {e.action: e for e in entries}
    assert set(by_action) >= {"watched", "exported", "agent_created", "api_key_created", "webhook_created"}
    watched = by_action["watched"]
    assert watched.target == f"conversation {conversation_id}" and watched.address == "127.0.0.1"
    tomas_agent = await server.services.directory.agent_by_email(None, TOMAS)
    assert tomas_agent is not None and watched.actor_id == tomas_agent.id and watched.actor_name.startswith("Tom")
    assert by_action["exported"].target == f"conversation {conversation_id}" and by_action["exported"].details == "csv"
    assert by_action["agent_created"].target.startswith("Eve ") and by_action["agent_created"].address == "127.0.0.1"
    assert "CRM" in by_action["api_key_created"].target
    assert by_action["webhook_created"].target == "http://127.0.0.1:9/audited-hook"
    # Jane opening her own chat is not supervision: only Tomas's watch is recorded.
    assert [e.actor_name for e in entries if e.action == "watched"] == [watched.actor_name]

    # The page lists them, escaped; only admins may read it.
    page = await priya.get("/admin/audit")
    assert page.status_code == 200
    assert 'href="/admin/audit" aria-current="page"' in page.text
    assert XSS not in page.text and "&lt;script&gt;" in page.text
    assert "watched a chat" in page.text and "created an API key" in page.text
    filtered = await priya.get("/admin/audit", params={"action": "watched"})
    assert filtered.text.count('data-action="watched"') == 1 and 'data-action="exported"' not in filtered.text
    supervisor = await signed_in(server, clients, TOMAS)
    assert (await supervisor.get("/admin/audit")).status_code == 403
    assert (await supervisor.get("/admin/audit.csv")).status_code == 403
    assert "/admin/audit" not in (await supervisor.get("/supervisor/conversations")).text

    exported = await priya.get("/admin/audit.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["cache-control"] == "no-store"
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["at", "actor_id", "actor_name", "action", "target", "details", "address"]
    assert {row[3] for row in rows[1:]} >= {"watched", "exported", "agent_created", "webhook_created"}
    assert all(row[0].endswith("Z") for row in rows[1:])
    # Exporting the log is itself recorded.
    assert (await stored_audit(server))[-1].target == "audit log"


async def test_audit_log_is_per_site_and_formula_safe(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    other = await server.services.directory.create_site("Other shop")
    await server.services.audit.record(other.id, None, AuditAction.exported, "theirs-secret", "", "10.0.0.9")
    priya_agent = await server.services.directory.agent_by_email(None, PRIYA)
    await server.services.audit.record(
        site.id, priya_agent, AuditAction.team_changed, "=HYPERLINK(1)", "x" * 5000, "::1"
    )
    priya = await signed_in(server, clients, PRIYA)
    page = await priya.get("/admin/audit")
    assert "theirs-secret" not in page.text and "HYPERLINK" in page.text
    rows = list(csv.reader(io.StringIO((await priya.get("/admin/audit.csv")).text)))
    assert not any("theirs-secret" in cell for row in rows for cell in row)
    changed = next(row for row in rows if row[3] == "team_changed")
    assert changed[4] == "'=HYPERLINK(1)" and len(changed[5]) <= 2000


# -- whisper ---------------------------------------------------------------------------------------------
WHISPER = "Offer the 10 % voucher — but do not tell them I said so"


def carries(frames: list[dict[str, object]], text: str) -> bool:
    return any(text in json.dumps(frame) for frame in frames)


async def test_a_whisper_reaches_the_agent_and_never_the_visitor_by_any_path(
    server: RunningServer, clients: list[httpx.AsyncClient]
) -> None:
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    await server.services.webhooks.create(site.id, "http://127.0.0.1:9/unreachable", "*")
    jane, visitor, conversation_id, token = await chat_with_jane(server)
    tomas = await connect_agent(server, TOMAS, observe=True)  # the live view's socket
    await tomas.send(type="watch", conversation_id=conversation_id, on=True)
    await tomas.expect("watching")

    # An agent cannot whisper; a whisper needs text.
    await jane.send(type="whisper", conversation_id=conversation_id, body="psst", client_id="j1")
    assert (await jane.expect("error"))["code"] == "forbidden"
    await tomas.send(type="whisper", conversation_id=conversation_id, body="   ", client_id="t0")
    assert (await tomas.expect("error"))["code"] == "empty"

    await tomas.send(type="whisper", conversation_id=conversation_id, body=WHISPER, client_id="t1")
    ack = await tomas.expect("ack", lambda f: f["client_id"] == "t1")
    shown = await jane.expect("message", lambda f: f["body"] == WHISPER)
    assert shown["visibility"] == "whisper" and shown["private"] is True
    assert shown["author"]["kind"] == "agent" and shown["author"]["name"].startswith("Tom")
    assert shown["seq"] == ack["seq"]
    # A resend with the same client_id is acknowledged again, stored once.
    await tomas.send(type="whisper", conversation_id=conversation_id, body=WHISPER, client_id="t1")
    assert (await tomas.expect("ack", lambda f: f["client_id"] == "t1"))["seq"] == ack["seq"]

    # Live: the agent's next public message reaches the visitor; the whisper before it never did.
    await jane.send(type="message", conversation_id=conversation_id, client_id="j2", body="Here is a voucher")
    await visitor.expect("message", lambda f: f["body"] == "Here is a voucher")
    assert not carries(visitor.frames, "voucher —") and not carries(visitor.frames, "whisper")

    # Replay after reconnecting, from the start.
    await visitor.close()
    again, _ = await connect_visitor(server, token=token, resume_after=0)
    await again.expect("message", lambda f: f["body"] == "Here is a voucher")
    assert not carries(again.frames, WHISPER)

    # The history a visitor asks for (the same read the `history` frame answers with).
    history = await server.services.conversations.history(conversation_id)
    assert [m["body"] for m in history if m["author"]["kind"] != "system"] == [
        "Hello, is my order shipped?",
        "Here is a voucher",
    ]
    assert all(m["visibility"] == "public" for m in history)
    # The agent's own replay carries it, marked.
    staff_history = await server.services.conversations.history(conversation_id, include_private=True)
    assert [m["visibility"] for m in staff_history if m["body"] == WHISPER] == ["whisper"]

    # Webhooks: the public message is recorded for delivery, the whisper never.
    async def payloads() -> list[str]:
        async with server.services.sessions() as session:
            return list((await session.execute(select(col(WebhookDelivery.payload)))).scalars())

    async def public_recorded() -> bool:
        return any("Here is a voucher" in payload for payload in await payloads())

    await poll_until(public_recorded)
    assert not any(WHISPER in payload for payload in await payloads())

    # Staff exports keep it, labelled a whisper, so a reader can tell it was never sent.
    priya = await signed_in(server, clients, PRIYA)
    rows = list(
        csv.reader(io.StringIO((await priya.get(f"/supervisor/conversations/{conversation_id}/export.csv")).text))
    )
    whispered = [row for row in rows if row[7] == WHISPER]
    assert len(whispered) == 1 and whispered[0][5] == "true" and whispered[0][6] == "whisper"
    exported = (await priya.get(f"/supervisor/conversations/{conversation_id}/export.json")).json()
    assert [m["visibility"] for m in exported["messages"] if m["body"] == WHISPER] == ["whisper"]
    text = (await priya.get(f"/supervisor/conversations/{conversation_id}/export.txt")).text
    assert f"(agent, whisper): {WHISPER}" in text
    page = (await priya.get(f"/supervisor/conversations/{conversation_id}")).text
    assert 'data-visibility="whisper"' in page and ">Whisper</span>" in page

    # The audit log has it, with the console's address.
    entry = next(e for e in await stored_audit(server) if e.action == "whispered")
    assert entry.target == f"conversation {conversation_id}" and entry.address == "127.0.0.1"
    assert sum(1 for e in await stored_audit(server) if e.action == "whispered") == 1


async def test_whispers_stay_inside_the_site_and_need_an_agent(server: RunningServer) -> None:
    other = await server.services.directory.create_site("Other shop")
    customer, _ = await server.services.customers.create_visitor(other)
    theirs = await server.services.conversations.start(other.id, customer.id)
    tomas = await connect_agent(server, TOMAS)
    for target in (theirs.id, "nope-nope-nope"):
        await tomas.send(type="whisper", conversation_id=target, body="hi", client_id="x")
        assert (await tomas.expect("error"))["code"] == "not_found"
        await tomas.send(type="takeover", conversation_id=target)
        assert (await tomas.expect("error"))["code"] == "not_found"
    # A queued chat has no agent to whisper to.
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="q1", body="Anyone?")
    await visitor.expect("ack")
    queued = await visitor.expect("queue")
    await tomas.send(type="whisper", conversation_id=queued["conversation_id"], body="hi", client_id="y")
    assert (await tomas.expect("error"))["code"] == "conflict"
    await tomas.send(type="takeover", conversation_id=queued["conversation_id"])
    assert (await tomas.expect("error"))["code"] == "conflict"
    async with server.services.sessions() as session:
        assert (await session.execute(select(Message).where(col(Message.body) == "hi"))).first() is None


# -- take-over -------------------------------------------------------------------------------------------
async def loads(server: RunningServer) -> dict[str, int]:
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    return {state.agent_id: state.load for state in await server.services.broker.routing.agents(site.id)}


async def test_a_supervisor_takes_a_chat_over(server: RunningServer) -> None:
    jane, visitor, conversation_id, _token = await chat_with_jane(server)
    tomas = await connect_agent(server, TOMAS)  # arrives Away: taking over is a choice, not routing
    tomas_agent = await server.services.directory.agent_by_email(None, TOMAS)
    jane_agent = await server.services.directory.agent_by_email(None, JANE)
    assert tomas_agent is not None and jane_agent is not None
    await tomas.send(type="watch", conversation_id=conversation_id, on=True)
    await tomas.expect("watching")
    assert (await loads(server))[jane_agent.id] == 1

    await jane.send(type="takeover", conversation_id=conversation_id)
    assert (await jane.expect("error"))["code"] == "forbidden"

    await tomas.send(type="takeover", conversation_id=conversation_id)
    joined = await visitor.expect("agent_joined", lambda f: f["agent"]["name"].startswith("Tom"))
    assert joined["agent"]["title"] and joined["agent"]["photo_url"] and joined["agent"]["intro"]
    unassigned = await jane.expect("unassigned")
    assert unassigned == {**unassigned, "conversation_id": conversation_id, "reason": "taken_over"}
    assigned = await tomas.expect("assigned")
    assert assigned["conversation"]["id"] == conversation_id

    stored = await server.services.conversations.get(conversation_id)
    assert stored is not None and stored.agent_id == tomas_agent.id and stored.status == "active"
    after = await loads(server)
    assert after[jane_agent.id] == 0 and after[tomas_agent.id] == 1

    # The supervisor now answers; Jane no longer can.
    await tomas.send(type="message", conversation_id=conversation_id, client_id="t1", body="I'll take it from here")
    await tomas.expect("ack")
    reply = await visitor.expect("message", lambda f: f["body"] == "I'll take it from here")
    assert reply["author"]["id"] == tomas_agent.id
    await jane.send(type="message", conversation_id=conversation_id, client_id="j9", body="still me?")
    assert (await jane.expect("error"))["code"] == "forbidden"
    # Taking over what is already yours is refused.
    await tomas.send(type="takeover", conversation_id=conversation_id)
    assert (await tomas.expect("error"))["code"] == "invalid"

    entry = next(e for e in await stored_audit(server) if e.action == "took_over")
    assert entry.actor_id == tomas_agent.id and entry.target == f"conversation {conversation_id}"
    assert entry.details == f"from {jane_agent.full_name}" and entry.address == "127.0.0.1"


async def test_a_verified_visitors_history_frame_and_earlier_previews_leave_whispers_out(server: RunningServer) -> None:
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    identify = {"user_id": "u-77", "user_hash": identity_hash(site.secret, "u-77"), "name": "Ada Byron"}
    jane = await connect_agent(server, JANE)
    visitor, _ = await connect_visitor(server, identify=identify)
    await visitor.send(type="message", client_id="v1", body="Where is order 1142?")
    await visitor.expect("ack")
    cid = (await jane.expect("assigned"))["conversation"]["id"]
    await jane.send(type="message", conversation_id=cid, client_id="j1", body="On its way")
    await visitor.expect("message", lambda f: f["body"] == "On its way")
    tomas = await connect_agent(server, TOMAS)
    await tomas.send(type="watch", conversation_id=cid, on=True)
    await tomas.expect("watching")
    await tomas.send(type="whisper", conversation_id=cid, body=WHISPER, client_id="t1")
    await jane.expect("message", lambda f: f["body"] == WHISPER)
    await jane.send(type="close", conversation_id=cid)
    await visitor.expect("closed")

    await visitor.send(type="history", conversation_id=cid)
    history = await visitor.expect("history")
    bodies = [m["body"] for m in history["messages"]]
    assert "Where is order 1142?" in bodies and "On its way" in bodies
    assert WHISPER not in bodies and {m["visibility"] for m in history["messages"]} == {"public"}
    # A later visit lists the chat among earlier ones; its preview is the last public line, not the whisper.
    returning, _ = await connect_visitor(server, identify=identify)
    earlier = returning.of_type("welcome")[0]["earlier"]
    assert earlier and earlier[0]["id"] == cid and earlier[0]["last_message"] == "On its way"
    assert not carries(visitor.frames, WHISPER) and not carries(returning.frames, WHISPER)
