"""Supervision (issue 20 item 4): the audit log, whispers that never reach the visitor, take-over —
over real HTTP and websockets against a seeded server."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from nameplate.protocol.vocabulary import AuditAction
from nameplate.store.models import AuditEntry
from nameplate.web import login as login_module
from tests.harness import RunningServer, connect_agent, connect_visitor

PASSWORD = "nameplate-demo"
JANE, TOMAS, PRIYA = "jane@acme.example", "tomas@acme.example", "priya@acme.example"
XSS = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def many_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login_module, "LOGIN_ATTEMPTS", 1000)


@pytest.fixture
async def clients() -> AsyncIterator[list[httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []
    yield opened
    for client in opened:
        await client.aclose()


async def signed_in(server: RunningServer, clients: list[httpx.AsyncClient], email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=server.base_url, timeout=10)
    clients.append(client)
    response = await client.post("/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get("/profile")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match, page.text[:300]
    return match.group(1)


async def stored_audit(server: RunningServer) -> list[AuditEntry]:
    """Read from the store directly, oldest first."""
    async with server.services.sessions() as session:
        return list((await session.execute(select(AuditEntry).order_by(col(AuditEntry.at)))).scalars())


async def chat_with_jane(server: RunningServer) -> tuple[object, object, str]:
    jane = await connect_agent(server, JANE)
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Hello, is my order shipped?")
    await visitor.expect("ack")
    assigned = await jane.expect("assigned")
    return jane, visitor, assigned["conversation"]["id"]


# -- audit log -------------------------------------------------------------------------------------------
async def test_audit_log_records_supervision_exports_and_changes(
    server: RunningServer, clients: list[httpx.AsyncClient]
) -> None:
    _jane, _visitor, conversation_id = await chat_with_jane(server)
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
        "/admin/integrations/webhooks", data={"csrf_token": token, "url": "https://hooks.example/x"}
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
    assert by_action["webhook_created"].target == "https://hooks.example/x"
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
