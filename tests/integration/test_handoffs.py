"""Safe hand-offs (issue 20 item 2): a transfer goes only to someone who is there and has room, a team
transfer queues and says so, and a hand-off nobody opens goes back to the queue with the visitor told."""

from __future__ import annotations

import asyncio

from nameplate.store.models import Agent
from tests.harness import Client, RunningServer, connect_agent, connect_visitor

JANE, TOMAS, PRIYA = "jane@acme.example", "tomas@acme.example", "priya@acme.example"


async def agent_named(server: RunningServer, email: str) -> Agent:
    agent = await server.services.directory.agent_by_email(None, email)
    assert agent is not None
    return agent


async def jane_with_a_chat(server: RunningServer) -> tuple[Client, Client, str]:
    jane = await connect_agent(server, JANE)
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Can someone help with an order?")
    await visitor.expect("ack")
    cid = (await jane.expect("assigned"))["conversation"]["id"]
    await visitor.expect("agent_joined")
    return jane, visitor, cid


async def test_the_console_learns_every_colleagues_presence_and_load(server: RunningServer) -> None:
    jane, _visitor, _cid = await jane_with_a_chat(server)
    tomas = await connect_agent(server, TOMAS)
    board = await tomas.expect("board")
    states = {a["id"]: a for a in board["agents"]}
    jane_agent = await agent_named(server, JANE)
    assert states[jane_agent.id]["status"] == "available" and states[jane_agent.id]["load"] == 1
    assert states[jane_agent.id]["capacity"] >= 1
    # Jane's console follows Tomas arriving (away) through board frames too.
    tomas_agent = await agent_named(server, TOMAS)
    await jane.expect("board", lambda f: any(a["id"] == tomas_agent.id and a["status"] == "away" for a in f["agents"]))


async def test_a_transfer_to_someone_offline_away_or_full_is_refused(server: RunningServer) -> None:
    jane, visitor, cid = await jane_with_a_chat(server)
    priya, tomas = await agent_named(server, PRIYA), await agent_named(server, TOMAS)

    await jane.send(type="transfer", conversation_id=cid, to_agent=priya.id, note="")
    refused = await jane.expect("error")
    assert refused["code"] == "colleague_unavailable" and "Priya Ramanathan is offline" in refused["message"]

    tomas_console = await connect_agent(server, TOMAS)  # supervisors arrive away
    await jane.send(type="transfer", conversation_id=cid, to_agent=tomas.id, note="")
    refused = await jane.expect("error")
    assert refused["code"] == "colleague_unavailable" and "is away" in refused["message"]

    # Available but with no room left.
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    await server.services.broker.routing.set_agent_status(site.id, tomas.id, "available", 0, frozenset())
    await jane.send(type="transfer", conversation_id=cid, to_agent=tomas.id, note="")
    refused = await jane.expect("error")
    assert refused["code"] == "colleague_unavailable" and "is full (0 of 0 chats)" in refused["message"]

    stored = await server.services.conversations.get(cid)
    assert stored is not None and stored.agent_id == (await agent_named(server, JANE)).id
    assert not visitor.of_type("transferred") and not tomas_console.of_type("assigned")
    # Jane still has the chat and can write in it.
    await jane.send(type="message", conversation_id=cid, client_id="j1", body="Still here")
    await visitor.expect("message", lambda f: f["body"] == "Still here")


async def test_a_transfer_to_a_team_queues_it_and_says_so(server: RunningServer) -> None:
    jane, visitor, cid = await jane_with_a_chat(server)
    await jane.send(type="status", status="away")  # so the chat does not come straight back to her
    await jane.expect("status", lambda f: f["status"] == "away")
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    sales = next(t for t in await server.services.directory.teams(site.id) if t.name == "Sales")
    await jane.send(type="transfer", conversation_id=cid, to_team=sales.id, note="")
    moved = await visitor.expect("transferred")
    assert moved["to_team"] == "Sales"
    said = await visitor.expect("message", lambda f: "transferring you to Sales" in f["body"])
    assert "first in line" in said["body"]
    assert (await jane.expect("unassigned"))["reason"] == "transferred"
    stored = await server.services.conversations.get(cid)
    assert stored is not None and stored.status == "queued" and stored.team_id == sales.id


async def test_a_handoff_nobody_opens_goes_back_to_the_queue_with_the_visitor_told(server: RunningServer) -> None:
    server.services.router.pickup_seconds = 0.5
    jane, visitor, cid = await jane_with_a_chat(server)
    tomas = await connect_agent(server, TOMAS, status="available")
    tomas_agent = await agent_named(server, TOMAS)
    await jane.send(type="transfer", conversation_id=cid, to_agent=tomas_agent.id, note="Over to you")
    await tomas.expect("assigned", lambda f: f["conversation"]["id"] == cid)
    await visitor.expect("agent_joined", lambda f: f["agent"]["name"].startswith("Tom"))

    # Tomas's console never opens it (no read, no typing, no reply).
    left = await visitor.expect("agent_left")
    assert left["agent"]["name"].startswith("Tom")
    told = await visitor.expect("message", lambda f: "could not pick up your chat" in f["body"])
    assert told["visibility"] == "public"
    assert (await tomas.expect("unassigned"))["reason"] == "not_picked_up"
    await tomas.expect("status", lambda f: f["status"] == "away")
    # Back in line, Jane (free again) gets it.
    again = await jane.expect("assigned", lambda f: f["conversation"]["id"] == cid)
    assert again["conversation"]["agent"]["name"].startswith("Jane")
    await visitor.expect("agent_joined", lambda f: f["agent"]["name"].startswith("Jane"))


async def test_a_handoff_that_is_opened_stays(server: RunningServer) -> None:
    server.services.router.pickup_seconds = 0.5
    jane, visitor, cid = await jane_with_a_chat(server)
    tomas = await connect_agent(server, TOMAS, status="available")
    tomas_agent = await agent_named(server, TOMAS)
    await jane.send(type="transfer", conversation_id=cid, to_agent=tomas_agent.id, note="")
    assigned = await tomas.expect("assigned", lambda f: f["conversation"]["id"] == cid)
    await tomas.send(type="read", conversation_id=cid, seq=assigned["conversation"]["last_seq"])
    await tomas.expect("read", lambda f: f["conversation_id"] == cid and f["by"] == "agent")
    check = server.services.router.pickups[cid]
    await asyncio.wait_for(asyncio.shield(check), timeout=10)
    stored = await server.services.conversations.get(cid)
    assert stored is not None and stored.agent_id == tomas_agent.id and stored.status == "active"
    assert not visitor.of_type("agent_left") and not tomas.of_type("unassigned")
