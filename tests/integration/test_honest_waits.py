"""Honest waits (issue 20, item 1): Away agents are not "online", a transfer does not reset the handle time the
estimate uses, and the widget, console and live board share one sentence for a wait."""

from __future__ import annotations

from datetime import datetime, timedelta

from nameplate.protocol.vocabulary import EventKind
from nameplate.routing.plan import AgentState
from nameplate.routing.wait_time import available_count, describe_wait
from nameplate.store.models import InsightEvent, utcnow
from tests.harness import RunningServer, connect_agent, connect_visitor


def test_the_wait_is_said_as_an_estimate_and_in_a_moment_only_when_it_is() -> None:
    assert describe_wait(0) == "someone will be with you in a moment"
    assert describe_wait(9) == "less than a minute"
    assert describe_wait(61) == "about 1 minute"
    assert describe_wait(240) == "about 4 minutes"
    assert describe_wait(3 * 3600) == "about 3 hours"
    assert describe_wait(None) == "no one is available to answer yet"


def test_only_available_agents_count_as_online() -> None:
    agents = [
        AgentState("a", "available", 2),
        AgentState("b", "away", 2),
        AgentState("c", "offline", 2),
        AgentState("d", "available", 2, frozenset({"x", "y"})),  # full, but on duty: next free slot is theirs
    ]
    assert available_count(agents) == 2


async def test_a_visitor_is_not_told_someone_is_online_when_the_only_agent_is_away(server: RunningServer) -> None:
    agent = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    assert visitor.of_type("welcome")[0]["agents_online"] == 1
    await agent.send(type="status", status="away")
    assert (await visitor.expect("agents_online", lambda f: f["count"] == 0))["count"] == 0
    await visitor.send(type="message", client_id="w1", body="Is anyone there?")
    queued = await visitor.expect("queue")
    assert queued["agents_online"] == 0 and queued["expected_wait_s"] is None
    assert queued["wait_text"] == describe_wait(None)
    # Jane comes back: the visitor is told someone is online, and the chat is hers.
    await agent.send(type="status", status="available")
    assert (await visitor.expect("agents_online", lambda f: f["count"] == 1))["count"] == 1
    assigned = await agent.expect("assigned")
    assert assigned["conversation"]["id"] == queued["conversation_id"]


async def test_a_transfer_mid_chat_does_not_shorten_the_handle_time_the_estimate_uses(server: RunningServer) -> None:
    services = server.services
    (site,) = await services.directory.sites()
    people = [await services.directory.agent_by_email(site.id, f"{name}@acme.example") for name in ("jane", "priya")]
    jane, priya = (person.id for person in people if person is not None)
    start = utcnow() - timedelta(hours=1)

    def at(seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    # A 2 min 50 s chat: Jane for 144 s, then Priya for 26 s. The old estimate read 26 s off the conversation
    # row (the transfer had reset its assigned_at); the event record says the chat held a slot 170 s.
    rows = [
        (EventKind.queued, 0, None),
        (EventKind.assigned, 10, jane),
        (EventKind.transfer, 154, jane),
        (EventKind.assigned, 154, priya),
        (EventKind.closed, 180, priya),
    ]
    async with services.sessions() as session:
        for kind, seconds, agent_id in rows:
            session.add(
                InsightEvent(site_id=site.id, conversation_id="c" * 24, kind=kind, at=at(seconds), agent_id=agent_id)
            )
        await session.commit()
    assert await services.router.handle_seconds(site.id) == 170.0
