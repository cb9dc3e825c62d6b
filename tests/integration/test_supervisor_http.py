"""The supervisor's desk and agent management over real HTTP and websockets.

Conversations are made the way production makes them (a visitor socket, an agent socket), then read back
through the pages and exports and compared with what the store holds.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import select, update

from nameplate.desk import transcripts as transcripts_module
from nameplate.desk.transcripts import ConversationQuery, Transcripts
from nameplate.errors import NameplateError
from nameplate.store.engine import make_engine, make_sessions
from nameplate.store.migrate import upgrade
from nameplate.store.models import Agent, Conversation, Customer, Message, Site
from nameplate.web import login as login_module
from tests.harness import Client, RunningServer, agent_cookie, connect_agent, connect_visitor, visitor_token
from tests.services import create_postgres_database, drop_postgres_database

PASSWORD = "nameplate-demo"
JANE, TOMAS, PRIYA = "jane@acme.example", "tomas@acme.example", "priya@acme.example"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(autouse=True)
def many_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test logs in several people from 127.0.0.1; the per-address log-in throttle (5 per 5 min)
    # is tested with the log-in page, not here.
    monkeypatch.setattr(login_module, "LOGIN_ATTEMPTS", 1000)


# -- helpers -----------------------------------------------------------------------------------------------
async def desk(server: RunningServer, email: str, password: str = PASSWORD) -> httpx.AsyncClient:
    """An HTTP client signed in as `email` (the session cookie lives in its jar)."""
    client = httpx.AsyncClient(base_url=server.base_url)
    response = await client.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return client


@pytest.fixture
async def clients() -> AsyncIterator[list[httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []
    yield opened
    for client in opened:
        await client.aclose()


async def signed_in(server: RunningServer, clients: list[httpx.AsyncClient], email: str) -> httpx.AsyncClient:
    client = await desk(server, email)
    clients.append(client)
    return client


async def csrf_of(client: httpx.AsyncClient) -> str:
    """The session's CSRF token, read from any page that extends the base template."""
    page = await client.get("/supervisor/conversations/none-such")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def listed_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-conversation-id="([^"]+)"', page)


def row_html(page: str, conversation_id: str) -> str:
    match = re.search(rf'<tr data-conversation-id="{re.escape(conversation_id)}">(.*?)</tr>', page, re.S)
    assert match, f"{conversation_id} is not listed"
    return match.group(1)


async def start_chat(
    server: RunningServer,
    agent: Client | None,
    body: str,
    *,
    team_id: str | None = None,
    name: str | None = None,
    email: str | None = None,
) -> tuple[Client, str]:
    """A visitor (named by the website, if `name`) writes; the conversation's id once stored, and once
    `agent`, if given, has it."""
    token = await visitor_token(server.base_url)
    if name is not None:
        claims = server.services.tokens.read(token)
        assert claims is not None
        async with server.services.sessions() as session:
            await session.execute(
                update(Customer).where(Customer.id == claims.customer_id).values(name=name, email=email)
            )
            await session.commit()
    visitor, _ = await connect_visitor(server, token=token)
    frame: dict[str, Any] = {"type": "message", "client_id": "first", "body": body}
    if team_id:
        frame["team_id"] = team_id
    await visitor.send(**frame)
    ack = await visitor.expect("ack")
    conversation_id = ack["conversation_id"]
    if agent is not None:
        await agent.expect("assigned", lambda f: f["conversation"]["id"] == conversation_id)
    return visitor, conversation_id


async def agent_says(agent: Client, conversation_id: str, body: str, *, note: bool = False) -> int:
    client_id = f"a{len(agent.frames)}"
    await agent.send(
        type="note" if note else "message", conversation_id=conversation_id, client_id=client_id, body=body
    )
    return (await agent.expect("ack", lambda f: f["client_id"] == client_id))["seq"]


async def visitor_says(visitor: Client, body: str) -> int:
    client_id = f"v{len(visitor.frames)}"
    await visitor.send(type="message", client_id=client_id, body=body)
    return (await visitor.expect("ack", lambda f: f["client_id"] == client_id))["seq"]


async def set_status(agent: Client, status: str) -> None:
    await agent.send(type="status", status=status)
    await agent.expect("status", lambda f: f["status"] == status)


async def close_and_rate(agent: Client, visitor: Client, conversation_id: str, score: int, comment: str) -> None:
    await agent.send(type="close", conversation_id=conversation_id)
    await visitor.expect("closed")
    await visitor.send(type="rate", score=score, comment=comment, conversation_id=conversation_id)
    await visitor.expect("rated")


async def move_start(server: RunningServer, conversation_id: str, when: datetime) -> None:
    async with server.services.sessions() as session:
        await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(created_at=when))
        await session.commit()


async def demo_site(server: RunningServer) -> Site:
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    return site


async def agent_id(server: RunningServer, email: str) -> str:
    agent = await server.services.directory.agent_by_email(None, email)
    assert agent is not None
    return agent.id


async def team_id(server: RunningServer, name: str) -> str:
    site = await demo_site(server)
    return next(team.id for team in await server.services.directory.teams(site.id) if team.name == name)


def utc_text(moment: datetime, pattern: str) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime(pattern)


def wire_time(moment: datetime) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


async def stored_messages(server: RunningServer, *conversation_ids: str) -> list[dict[str, Any]]:
    """What the store holds, in the exports' shape, worked out here independently of the code under test."""
    async with server.services.sessions() as session:
        conversations = {
            c.id: c
            for c in (
                await session.execute(select(Conversation).where(Conversation.id.in_(conversation_ids)))
            ).scalars()
        }
        customers = {
            c.id: c
            for c in (
                await session.execute(
                    select(Customer).where(Customer.id.in_([c.customer_id for c in conversations.values()]))
                )
            ).scalars()
        }
        agents = {a.id: a for a in (await session.execute(select(Agent))).scalars()}
        messages = list(
            (await session.execute(select(Message).where(Message.conversation_id.in_(conversation_ids)))).scalars()
        )
    order = sorted(conversations.values(), key=lambda c: (c.created_at, c.id))
    rank = {c.id: index for index, c in enumerate(order)}
    messages.sort(key=lambda m: (rank[m.conversation_id], m.seq))
    rows = []
    for m in messages:
        if m.author_kind == "agent":
            name = agents[m.agent_id].full_name
        elif m.author_kind == "visitor":
            name = customers[conversations[m.conversation_id].customer_id].name or "Visitor"
        else:
            name = "System"
        rows.append(
            {
                "conversation_id": m.conversation_id,
                "seq": m.seq,
                "sent_at": wire_time(m.created_at),
                "author_kind": m.author_kind,
                "author_name": name,
                "private": m.private,
                "visibility": m.visibility,
                "body": m.body,
                "_created_at": m.created_at,
            }
        )
    return rows


def public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def spreadsheet_safe(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_expected(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            r["conversation_id"],
            str(r["seq"]),
            r["sent_at"],
            r["author_kind"],
            spreadsheet_safe(r["author_name"]),
            "true" if r["private"] else "false",
            r["visibility"],
            spreadsheet_safe(r["body"]),
        ]
        for r in rows
    ]


class TranscriptItems(HTMLParser):
    """The transcript's <li data-seq> items: attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[int, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "li" and "data-seq" in values and self._current is None:
            self._current = {"attrs": values, "text": ""}
            self.items[int(values["data-seq"] or 0)] = self._current
            self._depth = 0
        if self._current is not None and tag == "li":
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._current is not None and tag == "li":
            self._depth -= 1
            if self._depth == 0:
                self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current["text"] += data


def transcript_items(page: str) -> dict[int, dict[str, Any]]:
    parser = TranscriptItems()
    parser.feed(page)
    return parser.items


# -- the list: filters, search, pagination ---------------------------------------------------------------
async def test_list_filters_and_search(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    jane = await connect_agent(server, JANE)
    visitor_a, a = await start_chat(
        server, jane, "Where is my order #123? It's late.", name="Ada Lovelace", email="ada@example.com"
    )
    await agent_says(jane, a, "Let me check that for you.")
    await agent_says(jane, a, "Refund approved by the warehouse", note=True)
    await close_and_rate(jane, visitor_a, a, 4, "Quick and kind")

    await set_status(jane, "away")
    priya = await connect_agent(server, PRIYA, status="available")
    sales = await team_id(server, "Sales")
    _, b = await start_chat(server, priya, "Do you have the 50% off tent in green?", team_id=sales, name="Bruno Díaz")
    await set_status(priya, "away")
    _, c = await start_chat(server, None, "Anyone there?")

    old = datetime(2020, 1, 15, 10, 0, tzinfo=UTC)
    await move_start(server, a, old)

    tomas = await signed_in(server, clients, TOMAS)

    async def ids(**params: str) -> list[str]:
        response = await tomas.get("/supervisor/conversations", params=params)
        assert response.status_code == 200, response.text
        return listed_ids(response.text)

    assert await ids() == [c, b, a]  # newest first
    page = (await tomas.get("/supervisor/conversations")).text
    row = row_html(page, a)
    for shown in (
        "Ada Lovelace",
        "ada@example.com",
        "Jane Chang-Katzenberg",
        "Closed",
        "Quick and kind",
        "2020-01-15 10:00 UTC",
        'aria-label="4 out of 5"',
    ):
        assert shown in row, shown
    assert "Bruno Díaz" in row_html(page, b) and "Priya Ramanathan" in row_html(page, b)
    assert "Sales" in row_html(page, b) and "Active" in row_html(page, b)
    assert "Queued" in row_html(page, c) and "Nobody yet" in row_html(page, c)

    jane_id, priya_id, tomas_id = [await agent_id(server, e) for e in (JANE, PRIYA, TOMAS)]
    assert await ids(agent=jane_id) == [a]
    assert await ids(agent=priya_id) == [b]
    assert await ids(agent=tomas_id) == []
    assert await ids(status="closed") == [a]
    assert await ids(status="active") == [b]
    assert await ids(status="queued") == [c]
    assert await ids(team=sales) == [b]
    assert await ids(team=await team_id(server, "Support")) == []
    assert await ids(**{"from": "2020-01-01", "to": "2020-01-31"}) == [a]
    assert await ids(**{"from": "2020-01-15", "to": "2020-01-15"}) == [a]  # both ends included
    assert await ids(**{"from": "2020-01-16"}) == [c, b]
    assert await ids(to="2020-01-14") == []

    assert await ids(q="order #123") == [a]
    assert await ids(q="ORDER #123") == [a]  # case-insensitive
    assert await ids(q="refund approved") == [a]  # private notes are searched for supervisors
    found = row_html((await tomas.get("/supervisor/conversations", params={"q": "ORDER #123"})).text, a)
    assert "Where is my <mark>order #123</mark>? It&#39;s late." in found
    found = row_html((await tomas.get("/supervisor/conversations", params={"q": "warehouse"})).text, a)
    assert "Note</span> Refund approved by the <mark>warehouse</mark>" in found
    assert await ids(q="50%") == [b]  # full-text search: the word "50"
    for nothing_to_find in ("%", "_", "-order"):  # punctuation only, or only what to leave out: said so
        response = await tomas.get("/supervisor/conversations", params={"q": nothing_to_find})
        assert response.status_code == 400
        assert "search for at least one word" in response.text.lower() or "leave out" in response.text
    assert await ids(q="joined the conversation") == [b, a]  # system lines too
    assert await ids(q="order", status="closed") == [a]
    assert await ids(q="order", status="active") == []
    assert await ids(q="nothing like this") == []

    assert (await tomas.get("/supervisor/conversations", params={"status": "lost"})).status_code == 400
    assert (await tomas.get("/supervisor/conversations", params={"from": "15/01/2020"})).status_code == 400

    snapshot = (await tomas.get("/supervisor/live.json")).json()["conversations"]
    assert {s["id"]: s["status"] for s in snapshot} == {b: "active", c: "queued"}


async def test_pagination_is_stable_newest_first(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    services = server.services
    site = await demo_site(server)
    base = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    made = []
    for index in range(120):
        customer, _ = await services.customers.create_visitor(site)
        conversation = await services.conversations.start(site.id, customer.id)
        # Every tenth shares a start time with the one before: the order must still be total.
        when = base + timedelta(minutes=index - (index % 10 == 1))
        await move_start(server, conversation.id, when)
        made.append((when, conversation.id))
    expected = [cid for _, cid in sorted(made, reverse=True)]

    tomas = await signed_in(server, clients, TOMAS)
    seen = []
    for number, size in ((1, 50), (2, 50), (3, 20)):
        response = await tomas.get("/supervisor/conversations", params={"page": str(number)})
        ids = listed_ids(response.text)
        assert len(ids) == size
        assert f"Page {number} of 3" in response.text
        seen += ids
    assert seen == expected
    again = listed_ids((await tomas.get("/supervisor/conversations", params={"page": "2"})).text)
    assert again == expected[50:100]
    beyond = listed_ids((await tomas.get("/supervisor/conversations", params={"page": "99"})).text)
    assert beyond == expected[100:]
    assert listed_ids((await tomas.get("/supervisor/conversations", params={"page": "x"})).text) == expected[:50]

    filtered = await tomas.get("/supervisor/conversations", params={"status": "queued"})
    assert "page=2" in filtered.text and "status=queued" in re.search(
        r'rel="next" href="([^"]+)"', filtered.text
    ).group(1)


# -- transcript and single exports -----------------------------------------------------------------------
async def test_transcript_and_its_exports_match_the_store(
    server: RunningServer, clients: list[httpx.AsyncClient]
) -> None:
    jane = await connect_agent(server, JANE)
    visitor, cid = await start_chat(server, jane, "My boots leak at the seam.", name="Ada", email="ada@example.com")
    await agent_says(jane, cid, "Sorry to hear that! Which model?")
    await visitor_says(visitor, "Trailmaster 2,\nbought in May.")
    note_seq = await agent_says(jane, cid, "Check warranty batch 7", note=True)
    priya = await connect_agent(server, PRIYA, status="available")
    await jane.send(
        type="transfer", conversation_id=cid, to_agent=await agent_id(server, PRIYA), note="Customer is a VIP"
    )
    await priya.expect("assigned", lambda f: f["conversation"]["id"] == cid)
    await priya.expect("message", lambda f: f["conversation_id"] == cid and "joined" in f["body"])
    await agent_says(priya, cid, "Priya here: a new pair is on its way.")
    await close_and_rate(priya, visitor, cid, 5, "Great")

    rows = await stored_messages(server, cid)
    by_seq = {r["seq"]: r for r in rows}
    assert by_seq[note_seq]["private"] and by_seq[note_seq]["author_kind"] == "agent"
    handoff = next(r for r in rows if r["body"].startswith("Hand-off note"))
    assert handoff["private"] and handoff["author_kind"] == "system"
    assert any(r["body"] == "Priya Ramanathan closed the conversation." for r in rows)

    tomas = await signed_in(server, clients, TOMAS)
    page = await tomas.get(f"/supervisor/conversations/{cid}")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    items = transcript_items(page.text)
    assert sorted(items) == [r["seq"] for r in rows]
    for row in rows:
        item = items[row["seq"]]
        assert item["attrs"]["data-kind"] == row["author_kind"]
        assert (item["attrs"].get("data-private") == "true") == row["private"]
        assert row["body"] in item["text"]
        assert utc_text(row["_created_at"], "%Y-%m-%d %H:%M:%S UTC") in item["text"]
        if row["author_kind"] != "system":
            assert row["author_name"] in item["text"]
            assert ("Visitor" if row["author_kind"] == "visitor" else "Agent") in item["text"]
    assert "Private note" in items[note_seq]["text"]
    assert "Private" in items[handoff["seq"]]["text"]
    assert "Great" in page.text and "5/5" in page.text

    exported = await tomas.get(f"/supervisor/conversations/{cid}/export.json")
    assert exported.headers["content-disposition"] == f'attachment; filename="conversation-{cid}.json"'
    data = exported.json()
    assert data["messages"] == public(rows)
    assert data["conversation"]["id"] == cid
    assert data["conversation"]["status"] == "closed"
    assert data["conversation"]["agent"]["name"] == "Priya Ramanathan"
    assert data["conversation"]["customer"] == {"name": "Ada", "email": "ada@example.com"}
    assert data["conversation"]["rating"] == {"score": 5, "comment": "Great"}
    assert data["site"] == "Acme Outdoor"

    text = await tomas.get(f"/supervisor/conversations/{cid}/export.txt")
    assert text.headers["content-type"].startswith("text/plain")
    assert text.headers["content-disposition"] == f'attachment; filename="conversation-{cid}.txt"'
    assert "Customer: Ada <ada@example.com>" in text.text and 'Rating: 5/5 ("Great")' in text.text
    for row in rows:
        label = row["author_kind"] + (", private note" if row["private"] else "")
        body = row["body"].replace("\n", "\n    ")
        stamp = utc_text(row["_created_at"], "%Y-%m-%d %H:%M:%S UTC")
        assert f"[{stamp}] {row['author_name']} ({label}): {body}\n" in text.text

    exported_html = await tomas.get(f"/supervisor/conversations/{cid}/export.html")
    assert exported_html.headers["content-disposition"] == f'attachment; filename="conversation-{cid}.html"'
    assert "script-src" not in exported_html.headers["content-security-policy"]
    assert "default-src 'none'" in exported_html.headers["content-security-policy"]
    assert "<script" not in exported_html.text
    html_items = transcript_items(exported_html.text)
    assert sorted(html_items) == [r["seq"] for r in rows]
    for row in rows:
        assert row["body"] in html_items[row["seq"]]["text"]
        if row["private"]:
            assert "Private" in html_items[row["seq"]]["text"]


# -- date-range exports ----------------------------------------------------------------------------------
async def test_range_exports_stream_every_message(
    server: RunningServer, clients: list[httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    jane = await connect_agent(server, JANE)
    visitor, a = await start_chat(server, jane, '=HYPERLINK("http://evil.example","click")', name="=cmd|' /C calc'!A0")
    for body in ("-5 degrees at night", "+1 for that", "@channel help", 'multi\nline, with "quotes"', "ünïcødé ✓"):
        await visitor_says(visitor, body)
    await agent_says(jane, a, "=1+1 is not a formula here", note=True)
    await agent_says(jane, a, "Plain answer.")
    _, b = await start_chat(server, jane, "An older question")
    await move_start(server, b, datetime(2020, 3, 10, 9, 30, tzinfo=UTC))

    tomas = await signed_in(server, clients, TOMAS)
    today = datetime.now(UTC).date()
    recent = {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}

    async def csv_rows(params: dict[str, str]) -> list[list[str]]:
        response = await tomas.get("/supervisor/export.csv", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"] == (
            f'attachment; filename="nameplate-messages-{params["from"]}-to-{params["to"]}.csv"'
        )
        assert response.headers.get("transfer-encoding") == "chunked"  # streamed, not built in memory
        records = list(csv.reader(io.StringIO(response.text, newline="")))
        assert records[0] == [
            "conversation_id",
            "seq",
            "sent_at",
            "author_kind",
            "author_name",
            "private",
            "visibility",
            "body",
        ]
        return records[1:]

    rows_a = await stored_messages(server, a)
    rows_b = await stored_messages(server, b)
    assert await csv_rows(recent) == csv_expected(rows_a)
    assert await csv_rows({"from": "2020-03-10", "to": "2020-03-10"}) == csv_expected(rows_b)
    everything = {"from": "2000-01-01", "to": "2100-12-31"}
    assert await csv_rows(everything) == csv_expected(rows_b + rows_a)
    assert await csv_rows({"from": "2021-01-01", "to": "2021-12-31"}) == []

    exported = await csv_rows(recent)
    assert exported[0][4] == "'=cmd|' /C calc'!A0" and exported[0][7].startswith("'=HYPERLINK(")
    bodies = [row[7] for row in exported]
    assert {"'-5 degrees at night", "'+1 for that", "'@channel help", "'=1+1 is not a formula here"} <= set(bodies)

    # Small batches: many round trips through the server-side cursor, the same document.
    monkeypatch.setattr(transcripts_module, "EXPORT_BATCH", 3)
    assert await csv_rows(everything) == csv_expected(rows_b + rows_a)

    response = await tomas.get("/supervisor/export.json", params=everything)
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    data = response.json()
    assert data["from"] == "2000-01-01" and data["to"] == "2100-12-31" and data["site"] == "Acme Outdoor"
    assert data["messages"] == public(rows_b + rows_a)  # JSON keeps bodies exactly as typed
    empty = (await tomas.get("/supervisor/export.json", params={"from": "2021-01-01", "to": "2021-01-02"})).json()
    assert empty["messages"] == []

    for params in (
        {},
        {"from": "2024-01-01"},
        {"from": "2024-02-01", "to": "2024-01-01"},
        {"from": "yesterday", "to": "2024-01-01"},
    ):
        assert (await tomas.get("/supervisor/export.csv", params=params)).status_code == 400
    assert (await tomas.get("/supervisor/export.xml", params=everything)).status_code == 404


# -- who may see what --------------------------------------------------------------------------------------
async def test_sites_and_roles_are_kept_apart(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    directory = server.services.directory
    other = await directory.create_site("Other Shop", allowed_origins="*", public_key="site_other")
    await directory.create_agent(
        other.id,
        given_name="Olga",
        family_name="Other",
        email="olga@other.example",
        password=PASSWORD,
        role="supervisor",
    )
    await directory.create_agent(
        other.id, given_name="Oscar", family_name="Other", email="oscar@other.example", password=PASSWORD
    )
    oscar = await connect_agent(server, "oscar@other.example")
    visitor2, _ = await connect_visitor(server, site_key="site_other")
    await visitor2.send(type="message", client_id="x", body="other shop secret")
    foreign = (await visitor2.expect("ack"))["conversation_id"]
    await oscar.expect("assigned", lambda f: f["conversation"]["id"] == foreign)

    jane = await connect_agent(server, JANE)
    _, mine = await start_chat(server, jane, "hello from acme")
    await agent_says(jane, mine, "Jane here.")
    priya = await connect_agent(server, PRIYA, status="available")
    await jane.send(type="transfer", conversation_id=mine, to_agent=await agent_id(server, PRIYA), note="")
    await priya.expect("assigned", lambda f: f["conversation"]["id"] == mine)
    await set_status(jane, "away")
    _, priyas = await start_chat(server, priya, "a question for whoever")

    tomas = await signed_in(server, clients, TOMAS)
    listed = listed_ids((await tomas.get("/supervisor/conversations")).text)
    assert set(listed) == {mine, priyas}
    assert listed_ids((await tomas.get("/supervisor/conversations", params={"q": "other shop"})).text) == []
    for path in ("", "/export.txt", "/export.html", "/export.json"):
        assert (await tomas.get(f"/supervisor/conversations/{foreign}{path}")).status_code == 404
    for guess in ("AAAAAAAAAAAAAAAA", foreign[:-1] + "x", "../../etc/passwd", "%27%20OR%201=1"):
        assert (await tomas.get(f"/supervisor/conversations/{guess}")).status_code == 404
    everything = {"from": "2000-01-01", "to": "2100-12-31"}
    exported = list(csv.reader(io.StringIO((await tomas.get("/supervisor/export.csv", params=everything)).text)))
    assert {row[0] for row in exported[1:]} == {mine, priyas}
    assert {s["id"] for s in (await tomas.get("/supervisor/live.json")).json()["conversations"]} == {mine, priyas}

    olga = await signed_in(server, clients, "olga@other.example")
    assert listed_ids((await olga.get("/supervisor/conversations")).text) == [foreign]
    assert (await olga.get(f"/supervisor/conversations/{mine}")).status_code == 404
    assert (await olga.get(f"/supervisor/conversations/{foreign}")).status_code == 200

    jane_http = await signed_in(server, clients, JANE)
    for path in ("/supervisor/conversations", "/supervisor/live", "/supervisor/live.json", "/admin/agents"):
        assert (await jane_http.get(path)).status_code == 403, path
    assert (await jane_http.get("/supervisor/export.csv", params=everything)).status_code == 403
    # Her own conversation, even after handing it to Priya; not Priya's own; never another site's.
    assert (await jane_http.get(f"/supervisor/conversations/{mine}")).status_code == 200
    assert (await jane_http.get(f"/supervisor/conversations/{mine}/export.txt")).status_code == 200
    assert (await jane_http.get(f"/supervisor/conversations/{priyas}")).status_code == 404
    assert (await jane_http.get(f"/supervisor/conversations/{priyas}/export.json")).status_code == 404
    assert (await jane_http.get(f"/supervisor/conversations/{foreign}")).status_code == 404

    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        for path in (
            "/supervisor/conversations",
            f"/supervisor/conversations/{mine}",
            "/supervisor/live",
            "/admin/agents",
            f"/supervisor/conversations/{mine}/export.json",
        ):
            response = await anonymous.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/login", path
        assert (await anonymous.get("/supervisor/live.json")).status_code == 401


async def test_admin_pages_refuse_non_admins(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    jane_id = await agent_id(server, JANE)
    for email in (JANE, TOMAS):
        client = await signed_in(server, clients, email)
        token = await csrf_of(client)
        assert (await client.get("/admin/agents")).status_code == 403
        created = await client.post(
            "/admin/agents",
            data={
                "csrf_token": token,
                "given_name": "Eve",
                "family_name": "Sneak",
                "email": "eve@acme.example",
                "password": "long-enough-1",
                "role": "admin",
                "capacity": "3",
            },
        )
        assert created.status_code == 403
        for action in ("deactivate", "reactivate", "password"):
            response = await client.post(
                f"/admin/agents/{jane_id}/{action}", data={"csrf_token": token, "password": "long-enough-1"}
            )
            assert response.status_code == 403
    assert await server.services.directory.agent_by_email(None, "eve@acme.example") is None
    jane = await server.services.directory.agent(jane_id)
    assert jane is not None and jane.active and jane.session_version == 0


# -- managing agents ---------------------------------------------------------------------------------------
async def test_create_agent(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)
    form = {
        "csrf_token": token,
        "given_name": "Noor",
        "family_name": "Haddad",
        "title": "Returns",
        "intro": "I make returns painless.",
        "email": "Noor@Acme.example",
        "role": "agent",
        "capacity": "4",
        "password": "a-good-password",
    }

    missing = await priya.post("/admin/agents", data={**form, "family_name": "  "})
    assert missing.status_code == 400 and "Family name is required" in missing.text
    assert 'value="Noor"' in missing.text and "a-good-password" not in missing.text
    assert (await priya.post("/admin/agents", data={**form, "password": "short"})).status_code == 400
    assert (await priya.post("/admin/agents", data={**form, "capacity": "lots"})).status_code == 400
    assert (await priya.post("/admin/agents", data={**form, "capacity": "0"})).status_code == 400
    assert (await priya.post("/admin/agents", data={**form, "role": "owner"})).status_code == 400
    assert (await priya.post("/admin/agents", data={**form, "email": "not-an-address"})).status_code == 400
    assert (await priya.post("/admin/agents", data={**form, "email": JANE})).status_code == 409

    created = await priya.post("/admin/agents", data=form)
    assert created.status_code == 303 and created.headers["location"] == "/admin/agents"
    listing = await priya.get("/admin/agents")
    assert "Noor Haddad can now log in as noor@acme.example." in listing.text
    assert "Noor Haddad" in listing.text and "Returns" in listing.text
    noor = await server.services.directory.agent_by_email(None, "noor@acme.example")
    assert noor is not None and noor.capacity == 4 and noor.role == "agent" and noor.intro == "I make returns painless."
    await agent_cookie(server.base_url, "noor@acme.example", "a-good-password")


async def test_deactivating_ends_sockets_and_sessions_at_once(
    server: RunningServer, clients: list[httpx.AsyncClient]
) -> None:
    jane_cookie = await agent_cookie(server.base_url, JANE)
    jane = await connect_agent(server, JANE, cookie=jane_cookie)
    visitor, cid = await start_chat(server, jane, "Help with my order")
    jane_id = await agent_id(server, JANE)
    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)

    response = await priya.post(f"/admin/agents/{jane_id}/deactivate", data={"csrf_token": token})
    assert response.status_code == 303
    assert await jane.wait_closed(timeout=3) == 4401
    assert any(f.get("code") == "session_ended" for f in jane.of_type("error"))
    # Her chat goes back to the queue now, not after the reconnect grace period.
    await visitor.expect("agent_left", lambda f: f["conversation_id"] == cid)

    headers = {"Cookie": jane_cookie}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as old_session:
        transcript = await old_session.get(f"/supervisor/conversations/{cid}")
        assert transcript.status_code == 303 and transcript.headers["location"] == "/login"
    ws = await websockets.connect(f"{server.ws_url}/ws/agent", additional_headers=headers)
    refused = Client(ws)
    assert await refused.wait_closed() == 4401
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        login = await anonymous.post("/login", json={"email": JANE, "password": PASSWORD})
        assert login.status_code == 401

    listing = await priya.get("/admin/agents")
    assert "Jane Chang-Katzenberg is deactivated and signed out everywhere." in listing.text
    assert "Deactivated" in row_for_agent(listing.text, jane_id)

    mine = await priya.post(f"/admin/agents/{await agent_id(server, PRIYA)}/deactivate", data={"csrf_token": token})
    assert mine.status_code == 400 and "cannot deactivate your own account" in mine.text

    other = await server.services.directory.create_site("Other Shop", public_key="site_other")
    stranger = await server.services.directory.create_agent(
        other.id, given_name="Olga", family_name="Other", email="olga@other.example", password=PASSWORD
    )
    assert (await priya.post(f"/admin/agents/{stranger.id}/deactivate", data={"csrf_token": token})).status_code == 404
    assert (await server.services.directory.agent(stranger.id)).active  # type: ignore[union-attr]

    back = await priya.post(f"/admin/agents/{jane_id}/reactivate", data={"csrf_token": token})
    assert back.status_code == 303
    await connect_agent(server, JANE)  # logs in and connects again


def row_for_agent(page: str, agent: str) -> str:
    match = re.search(rf'<tr data-agent-id="{re.escape(agent)}"[^>]*>(.*?)</tr>', page, re.S)
    assert match
    return match.group(1)


async def test_reset_password_ends_old_sessions(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    jane_cookie = await agent_cookie(server.base_url, JANE)
    jane = await connect_agent(server, JANE, cookie=jane_cookie)
    jane_id = await agent_id(server, JANE)
    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)

    short = await priya.post(f"/admin/agents/{jane_id}/password", data={"csrf_token": token, "password": "2short"})
    assert short.status_code == 400 and "at least 8 characters" in short.text

    reset = await priya.post(
        f"/admin/agents/{jane_id}/password", data={"csrf_token": token, "password": "fresh-password-42"}
    )
    assert reset.status_code == 303
    assert await jane.wait_closed(timeout=3) == 4401
    async with httpx.AsyncClient(base_url=server.base_url, headers={"Cookie": jane_cookie}) as old_session:
        assert (await old_session.get("/supervisor/live.json")).status_code == 401
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        assert (await anonymous.post("/login", json={"email": JANE, "password": PASSWORD})).status_code == 401
    await agent_cookie(server.base_url, JANE, "fresh-password-42")

    # An admin resetting their own password stays signed in here.
    priya_id = await agent_id(server, PRIYA)
    own = await priya.post(
        f"/admin/agents/{priya_id}/password", data={"csrf_token": token, "password": "priya-new-password"}
    )
    assert own.status_code == 303
    assert (await priya.get("/admin/agents")).status_code == 200


async def test_forms_need_the_csrf_token(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)
    jane_id = await agent_id(server, JANE)
    form = {
        "given_name": "Mal",
        "family_name": "Lory",
        "email": "mal@acme.example",
        "password": "long-enough-1",
        "role": "admin",
        "capacity": "3",
    }
    assert (await priya.post("/admin/agents", data=form)).status_code == 403
    assert (await priya.post("/admin/agents", data={**form, "csrf_token": "forged"})).status_code == 403
    assert (await priya.post(f"/admin/agents/{jane_id}/deactivate")).status_code == 403
    assert (await priya.post(f"/admin/agents/{jane_id}/deactivate", data={"csrf_token": ""})).status_code == 403
    assert await server.services.directory.agent_by_email(None, "mal@acme.example") is None
    assert (await server.services.directory.agent(jane_id)).active  # type: ignore[union-attr]
    # fetch() sends the token as a header instead.
    with_header = await priya.post("/admin/agents", data=form, headers={"X-CSRF-Token": token})
    assert with_header.status_code == 303


async def test_what_people_typed_is_escaped(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    site = await demo_site(server)
    evil = await server.services.directory.create_agent(
        site.id,
        given_name=XSS_IMG,
        family_name="Mallory",
        email="evil@acme.example",
        password=PASSWORD,
        title=XSS_SCRIPT,
    )
    agent = await connect_agent(server, "evil@acme.example")
    visitor, cid = await start_chat(server, agent, XSS_SCRIPT, name=XSS_IMG, email="x@example.com")
    await agent_says(agent, cid, f"{XSS_IMG} right back")
    await agent_says(agent, cid, XSS_SCRIPT, note=True)

    tomas = await signed_in(server, clients, TOMAS)
    pages = {
        "list": await tomas.get("/supervisor/conversations", params={"agent": evil.id}),
        "search": await tomas.get("/supervisor/conversations", params={"q": "alert(1)"}),
        "transcript": await tomas.get(f"/supervisor/conversations/{cid}"),
        "export": await tomas.get(f"/supervisor/conversations/{cid}/export.html"),
    }
    priya = await signed_in(server, clients, PRIYA)
    pages["agents"] = await priya.get("/admin/agents")
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert XSS_SCRIPT not in response.text, name
        assert XSS_IMG not in response.text, name
        assert html.escape(XSS_IMG, quote=False) in response.text, name
    assert listed_ids(pages["search"].text) == [cid]
    for name in ("transcript", "export"):
        assert html.escape(XSS_SCRIPT, quote=False) in pages[name].text
    assert (
        json.loads((await tomas.get(f"/supervisor/conversations/{cid}/export.json")).text)["messages"][0]["body"]
        == XSS_SCRIPT
    )


# -- the same queries on PostgreSQL ------------------------------------------------------------------------
@pytest.mark.services
async def test_search_and_streamed_export_on_postgresql() -> None:
    url = await create_postgres_database()
    engine = make_engine(url)
    try:
        await upgrade(engine)
        sessions = make_sessions(engine)
        async with sessions() as session:
            site = Site(name="Shop")
            session.add(site)
            await session.flush()
            customer = Customer(site_id=site.id, name="Ann")
            session.add(customer)
            await session.flush()
            bodies = {"one": ["50% off today", "Hello WORLD"], "two": ["under_score", "back\\slash"]}
            ids = {}
            for offset, (label, texts) in enumerate(bodies.items()):
                conversation = Conversation(
                    site_id=site.id, customer_id=customer.id, created_at=datetime(2024, 5, 1 + offset, 12, tzinfo=UTC)
                )
                session.add(conversation)
                await session.flush()
                ids[label] = conversation.id
                for seq, text in enumerate(texts, start=1):
                    session.add(Message(conversation_id=conversation.id, seq=seq, author_kind="visitor", body=text))
            await session.commit()
        transcripts = Transcripts(sessions)

        async def found(text: str, **filters: Any) -> set[str]:
            page = await transcripts.search(ConversationQuery(site_id=site.id, text=text, **filters))
            return {row.id for row in page.rows}

        assert await found("50%") == {ids["one"]}
        page = await transcripts.search(ConversationQuery(site_id=site.id, text="world"))
        excerpt = page.snippets[ids["one"]]
        assert (excerpt.before, excerpt.match, excerpt.after, excerpt.private) == ("Hello ", "WORLD", "", False)
        assert await found("under_score") == {ids["two"]}
        assert await found("back\\slash") == {ids["two"]}
        for punctuation in ("%", "_", "\\"):
            with pytest.raises(NameplateError):
                await found(punctuation)
        assert await found("world") == {ids["one"]}
        assert await found("") == set(ids.values())
        assert await found("", first_day=date(2024, 5, 2), last_day=date(2024, 5, 2)) == {ids["two"]}

        lines = []
        async for batch in transcripts.stream_lines(site.id, date(2024, 5, 1), date(2024, 5, 31), batch=1):
            assert len(batch) == 1
            lines += batch
        assert [(line.conversation_id, line.seq, line.body) for line in lines] == [
            (ids["one"], 1, "50% off today"),
            (ids["one"], 2, "Hello WORLD"),
            (ids["two"], 1, "under_score"),
            (ids["two"], 2, "back\\slash"),
        ]
    finally:
        await engine.dispose()
        await drop_postgres_database(url)
