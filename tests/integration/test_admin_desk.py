"""Admin and desk additions: supervisors arrive away, team management, any agent's photo by an admin,
the per-transcript CSV export and the admin navigation — over real HTTP and websockets."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from pathlib import Path

import httpx
from sqlalchemy import select

from nameplate.demo.seed import DEMO_CUSTOMER
from nameplate.store.models import AgentTeam, Message, Team
from tests.desk_clients import clients_fixture, csrf_of, many_logins, signed_in  # noqa: F401  (fixtures)
from tests.harness import RunningServer, connect_agent, connect_visitor, poll_until, running_server
from tests.harness import test_settings as settings_for
from tests.integration.test_console_http import jpeg_bytes

JANE, TOMAS, PRIYA = "jane@acme.example", "tomas@acme.example", "priya@acme.example"
XSS = "<script>alert(1)</script>"


async def agent_id(server: RunningServer, email: str) -> str:
    agent = await server.services.directory.agent_by_email(None, email)
    assert agent is not None
    return agent.id


async def site_id(server: RunningServer) -> str:
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    return site.id


async def stored_teams(server: RunningServer) -> dict[str, set[str]]:
    """Team name → member e-mails, read from the store independently of the code under test."""
    async with server.services.sessions() as session:
        teams = {team.id: team.name for team in (await session.execute(select(Team))).scalars()}
        links = list(await session.execute(select(AgentTeam.team_id, AgentTeam.agent_id)))
    emails = {a.id: a.email for a in await server.services.directory.agents(await site_id(server))}
    out: dict[str, set[str]] = {name: set() for name in teams.values()}
    for team_id, member in links:
        out[teams[team_id]].add(emails[member])
    return out


async def routing_state(server: RunningServer, email: str) -> tuple[str, frozenset[str]] | None:
    wanted = await agent_id(server, email)
    for state in await server.services.broker.routing.agents(await site_id(server)):
        if state.agent_id == wanted:
            return state.status, state.teams
    return None


# -- item 3: supervisors and admins arrive away ------------------------------------------------------------
async def test_supervisors_and_admins_arrive_away_and_get_no_chats(server: RunningServer) -> None:
    tomas = await connect_agent(server, TOMAS)
    priya = await connect_agent(server, PRIYA)
    assert tomas.of_type("welcome")[0]["status"] == "away"
    assert priya.of_type("welcome")[0]["status"] == "away"
    assert (await poll_until(lambda: routing_state(server, TOMAS), timeout=10))[0] == "away"

    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="1", body="Is anyone there?")
    await visitor.expect("ack")
    await visitor.expect("queue")  # nobody available: queued, not handed to the supervisor or the admin

    # An agent arrives available and gets it; a supervisor who chooses Available is routed too.
    jane = await connect_agent(server, JANE)
    assert jane.of_type("welcome")[0]["status"] == "available"
    await jane.expect("assigned")
    await tomas.send(type="status", status="available")
    await tomas.expect("status", lambda f: f["status"] == "available")
    second, _ = await connect_visitor(server)
    await second.send(type="message", client_id="2", body="Me too")
    await second.expect("ack")
    assigned = await tomas.expect("assigned")
    assert assigned["conversation"]["customer"]
    assert not priya.of_type("assigned")


async def test_a_supervisor_can_arrive_available_by_asking(server: RunningServer) -> None:
    tomas = await connect_agent(server, TOMAS, status="available")
    assert tomas.of_type("welcome")[0]["status"] == "available"
    assert (await poll_until(lambda: routing_state(server, TOMAS), timeout=10))[0] == "available"
    jane = await connect_agent(server, JANE, status="away")
    assert jane.of_type("welcome")[0]["status"] == "away"


# -- item 7: teams -----------------------------------------------------------------------------------------
async def test_admin_creates_renames_and_staffs_a_team(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)
    page = await priya.get("/admin/teams")
    assert page.status_code == 200
    assert "Sales" in page.text and "Support" in page.text

    assert (await priya.post("/admin/teams", data={"csrf_token": token, "name": "   "})).status_code == 400
    duplicate = await priya.post("/admin/teams", data={"csrf_token": token, "name": "sales"})
    assert duplicate.status_code == 409 and "already a team called Sales" in duplicate.text
    too_long = await priya.post("/admin/teams", data={"csrf_token": token, "name": "x" * 101})
    assert too_long.status_code == 400
    created = await priya.post("/admin/teams", data={"csrf_token": token, "name": f"  Returns {XSS} "})
    assert created.status_code == 303 and created.headers["location"] == "/admin/teams"
    listing = await priya.get("/admin/teams")
    assert XSS not in listing.text and "Returns &lt;script&gt;" in listing.text
    assert f"Returns {XSS}" in await stored_teams(server)

    team = next(t for t in await server.services.directory.teams(await site_id(server)) if t.name.startswith("Ret"))
    renamed = await priya.post(f"/admin/teams/{team.id}/rename", data={"csrf_token": token, "name": "Returns"})
    assert renamed.status_code == 303
    clash = await priya.post(f"/admin/teams/{team.id}/rename", data={"csrf_token": token, "name": "Support"})
    assert clash.status_code == 409

    # Jane is online: once she is in Returns, routing knows it without her changing status.
    jane = await connect_agent(server, JANE)
    # Her console registers her for routing just after its welcome: wait for that, not for a moment.
    before = await poll_until(lambda: routing_state(server, JANE), timeout=10)
    assert team.id not in before[1]
    jane_id, tomas_id = await agent_id(server, JANE), await agent_id(server, TOMAS)
    members = await priya.post(
        f"/admin/teams/{team.id}/members", data={"csrf_token": token, "members": [jane_id, tomas_id]}
    )
    assert members.status_code == 303
    assert (await stored_teams(server))["Returns"] == {JANE, TOMAS}
    after = await routing_state(server, JANE)
    assert after is not None and after[0] == "available" and team.id in after[1]
    assert "Returns has 2 members." in (await priya.get("/admin/teams")).text

    # A chat for Returns goes to Jane, the only available member.
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="1", body="A return, please", team_id=team.id)
    await visitor.expect("ack")
    assigned = await jane.expect("assigned")
    assert assigned["conversation"]["team_id"] == team.id

    # Unticking everyone empties the team; other teams are untouched.
    emptied = await priya.post(f"/admin/teams/{team.id}/members", data={"csrf_token": token})
    assert emptied.status_code == 303
    teams = await stored_teams(server)
    assert teams["Returns"] == set() and teams["Support"] == {JANE, TOMAS} and teams["Sales"] == {TOMAS, PRIYA}
    assert team.id not in ((await routing_state(server, JANE)) or ("", frozenset()))[1]


async def test_team_changes_are_refused_safely(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    site = await site_id(server)
    other_site = await server.services.directory.create_site("Other shop")
    stranger = await server.services.directory.create_agent(
        other_site.id, given_name="Sam", family_name="Stranger", email="sam@other.example", password="long-enough-1"
    )
    other_team = await server.services.directory.create_team(other_site.id, "Theirs")
    support = next(t for t in await server.services.directory.teams(site) if t.name == "Support")
    before = await stored_teams(server)

    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)
    foreign = await priya.post(
        f"/admin/teams/{support.id}/members", data={"csrf_token": token, "members": [stranger.id]}
    )
    assert foreign.status_code == 400 and "Only this site&#39;s agents" in foreign.text
    assert (
        await priya.post(f"/admin/teams/{other_team.id}/rename", data={"csrf_token": token, "name": "Mine"})
    ).status_code == 404
    assert (await priya.post(f"/admin/teams/{support.id}/explode", data={"csrf_token": token})).status_code == 404
    no_csrf = await priya.post(f"/admin/teams/{support.id}/rename", data={"name": "Hijacked"})
    assert no_csrf.status_code == 403
    assert (await priya.post("/admin/teams", data={"name": "Sneaky"})).status_code == 403

    for email in (JANE, TOMAS):
        client = await signed_in(server, clients, email)
        their_token = await csrf_of(client)
        assert (await client.get("/admin/teams")).status_code == 403
        assert (await client.post("/admin/teams", data={"csrf_token": their_token, "name": "Mine"})).status_code == 403
        renamed = await client.post(
            f"/admin/teams/{support.id}/rename", data={"csrf_token": their_token, "name": "Mine"}
        )
        assert renamed.status_code == 403
    assert await stored_teams(server) == {**before, "Theirs": set()}


# -- item 7: any agent's photo, by an admin ----------------------------------------------------------------
async def test_admin_uploads_another_agents_photo(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    jane_id = await agent_id(server, JANE)
    jane = await server.services.directory.agent(jane_id)
    assert jane is not None
    before = jane.photo_version
    priya = await signed_in(server, clients, PRIYA)
    token = await csrf_of(priya)

    page = await priya.get("/admin/agents")
    assert f'action="/admin/agents/{jane_id}/photo"' in page.text and 'enctype="multipart/form-data"' in page.text

    bad = await priya.post(
        f"/admin/agents/{jane_id}/photo",
        data={"csrf_token": token},
        files={"photo": ("x.png", b"not an image", "image/png")},
    )
    assert bad.status_code == 400 and "not a readable PNG, JPEG or WebP" in bad.text
    missing = await priya.post(f"/admin/agents/{jane_id}/photo", data={"csrf_token": token})
    assert missing.status_code == 400
    forged = await priya.post(f"/admin/agents/{jane_id}/photo", files={"photo": ("me.jpg", jpeg_bytes(), "image/jpeg")})
    assert forged.status_code == 403
    unchanged = await server.services.directory.agent(jane_id)
    assert unchanged is not None and unchanged.photo_version == before

    uploaded = await priya.post(
        f"/admin/agents/{jane_id}/photo",
        data={"csrf_token": token},
        files={"photo": ("jane.jpg", jpeg_bytes(800, 600), "image/jpeg")},
    )
    assert uploaded.status_code == 303
    after = await server.services.directory.agent(jane_id)
    assert after is not None and after.photo_version == before + 1 and after.photo_url
    served = await priya.get(after.photo_url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert "Jane Chang-Katzenberg has a new photo." in (await priya.get("/admin/agents")).text
    assert (await server.services.directory.card(jane_id))["photo_url"] == after.photo_url

    # Not an admin: refused, nothing stored.
    tomas = await signed_in(server, clients, TOMAS)
    refused = await tomas.post(
        f"/admin/agents/{jane_id}/photo",
        data={"csrf_token": await csrf_of(tomas)},
        files={"photo": ("j.jpg", jpeg_bytes(), "image/jpeg")},
    )
    assert refused.status_code == 403
    assert (await priya.post("/admin/agents/nobody/photo", data={"csrf_token": token})).status_code == 404
    final = await server.services.directory.agent(jane_id)
    assert final is not None and final.photo_version == before + 1


# -- item 7: one transcript as CSV -------------------------------------------------------------------------
async def test_one_transcript_exports_as_csv(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    jane = await connect_agent(server, JANE)
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="1", body='=HYPERLINK("http://evil")')
    cid = (await visitor.expect("ack"))["conversation_id"]
    await jane.expect("assigned")
    await jane.send(type="message", conversation_id=cid, client_id="a", body='Hello, "friend",\nsecond line')
    await jane.expect("ack")
    await jane.send(type="note", conversation_id=cid, client_id="n", body="VIP")
    await jane.expect("ack", lambda f: f["client_id"] == "n")

    tomas = await signed_in(server, clients, TOMAS)
    page = await tomas.get(f"/supervisor/conversations/{cid}")
    assert f"/supervisor/conversations/{cid}/export.csv" in page.text
    exported = await tomas.get(f"/supervisor/conversations/{cid}/export.csv")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["content-disposition"] == f'attachment; filename="conversation-{cid}.csv"'
    assert exported.headers["cache-control"] == "no-store"
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == [
        "conversation_id",
        "seq",
        "sent_at",
        "author_kind",
        "author_name",
        "private",
        "visibility",
        "body",
    ]
    async with server.services.sessions() as session:
        stored = list(
            (
                await session.execute(select(Message).where(Message.conversation_id == cid).order_by(Message.seq))
            ).scalars()
        )
    assert [int(row[1]) for row in rows[1:]] == [m.seq for m in stored]
    by_seq = {int(row[1]): row for row in rows[1:]}
    for message in stored:
        row = by_seq[message.seq]
        assert row[0] == cid and row[3] == message.author_kind and row[5] == str(message.private).lower()
        expected = "'" + message.body if message.body.startswith("=") else message.body
        assert row[7] == expected and row[6] == message.visibility
    assert any(row[7] == 'Hello, "friend",\nsecond line' and row[4] == "Jane Chang-Katzenberg" for row in rows)

    # Jane may export her own chat; another site's id is not found.
    jane_http = await signed_in(server, clients, JANE)
    assert (await jane_http.get(f"/supervisor/conversations/{cid}/export.csv")).status_code == 200
    assert (await tomas.get("/supervisor/conversations/nope/export.csv")).status_code == 404


# -- item 7: the admin navigation ---------------------------------------------------------------------------
async def test_admin_navigation_links_every_admin_page(server: RunningServer, clients: list[httpx.AsyncClient]) -> None:
    priya = await signed_in(server, clients, PRIYA)
    for path in ("/admin/agents", "/admin/teams", "/admin/integrations"):
        page = await priya.get(path)
        assert page.status_code == 200, path
        nav = re.search(r'<nav class="topnav"[^>]*>(.*?)</nav>', page.text, re.S)
        assert nav, path
        links = dict(re.findall(r'<a href="([^"]+)"([^>]*)>', nav.group(1)))
        assert {"/admin/agents", "/admin/teams", "/admin/integrations"} <= links.keys()
        assert 'aria-current="page"' in links[path]
        assert [p for p, attrs in links.items() if "aria-current" in attrs] == [path]
        assert "/static/supervisor.css" in page.text  # styled like the rest of the desk
    tomas = await signed_in(server, clients, TOMAS)
    nav = (await tomas.get("/supervisor/conversations")).text
    assert "/admin/integrations" not in nav and "/admin/teams" not in nav


# -- item 8: the signed-in demo page -------------------------------------------------------------------------
async def test_signed_in_demo_page_identifies_with_a_correct_hash(server: RunningServer, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        page = await http.get("/demo/signed-in")
        plain = await http.get("/demo")
    assert page.status_code == 200
    match = re.search(r'window\.Nameplate = \{ q: \[\["identify", (.*?)\]\] \};', page.text)
    assert match, page.text
    who = json.loads(match.group(1))
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    assert who["user_id"] == DEMO_CUSTOMER["user_id"]
    assert who["user_hash"] == hmac.new(site.secret.encode(), who["user_id"].encode(), hashlib.sha256).hexdigest()
    assert page.text.index("window.Nameplate") < page.text.index('src="/widget.js"')
    assert "identify" not in plain.text and 'href="/demo/signed-in"' in plain.text

    # The server accepts it: the visitor becomes the verified customer.
    visitor, _ = await connect_visitor(server, identify=who)
    customer = await server.services.timeline.customer_by_external_id(site.id, DEMO_CUSTOMER["user_id"])
    assert customer is not None and customer.verified and customer.name == DEMO_CUSTOMER["name"]
    await visitor.close()

    # A deployment without the demo shop never hands out a valid hash.
    (tmp_path / "empty").mkdir()
    async with running_server(settings_for(tmp_path / "empty")) as empty:
        await empty.services.directory.create_site("Real shop", public_key="site_real")
        async with httpx.AsyncClient(base_url=empty.base_url) as http:
            refused = await http.get("/demo/signed-in")
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
