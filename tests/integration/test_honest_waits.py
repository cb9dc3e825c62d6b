"""Honest waits (issue 20, item 1): Away agents are not "online", a transfer does not reset the handle time the
estimate uses, the widget, console and live board share one sentence for a wait, and the visitor is told the
moment their agent's connection drops, what happens next, and that it happened."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nameplate.protocol.vocabulary import EventKind
from nameplate.routing.plan import AgentState
from nameplate.routing.router import back_line, dropped_line, gone_line
from nameplate.routing.wait_time import MIN_TEAM_SAMPLES, available_count, describe_wait
from nameplate.store.models import Conversation, ConversationStatus, InsightEvent, utcnow
from tests.harness import (
    Client,
    RunningServer,
    connect_agent,
    connect_visitor,
    poll_until,
    running_server,
    seeded_settings,
)
from tests.security import postgres_redis_server


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


async def test_a_teams_estimate_uses_its_own_recent_handle_times_once_it_has_enough(server: RunningServer) -> None:
    services = server.services
    (site,) = await services.directory.sites()
    jane = await services.directory.agent_by_email(site.id, "jane@acme.example")
    assert jane is not None
    first, second = (team.id for team in (await services.directory.teams(site.id))[:2])
    start = utcnow() - timedelta(hours=2)
    # Ten-minute chats for the first team (enough of them), one-minute chats for the second (too few to say).
    chats = [(first, 600.0)] * MIN_TEAM_SAMPLES + [(second, 60.0)] * (MIN_TEAM_SAMPLES - 1)
    async with services.sessions() as session:
        for n, (team_id, seconds) in enumerate(chats):
            opened = start + timedelta(minutes=15 * n)
            for kind, offset in ((EventKind.queued, 0.0), (EventKind.assigned, 5.0), (EventKind.closed, 5.0 + seconds)):
                session.add(
                    InsightEvent(
                        site_id=site.id,
                        conversation_id=f"team-chat-{n}",
                        kind=kind,
                        at=opened + timedelta(seconds=offset),
                        team_id=team_id,
                        agent_id=jane.id if kind != EventKind.queued else None,
                    )
                )
        await session.commit()
    site_mean = sum(seconds for _, seconds in chats) / len(chats)
    assert await services.router.handle_seconds(site.id, first) == 600.0
    assert await services.router.handle_seconds(site.id, second) == site_mean
    assert await services.router.handle_seconds(site.id) == site_mean


# -- the visitor told the moment their agent leaves, and what happens next ---------------------------------
@contextlib.asynccontextmanager
async def desk(backend: str, tmp_path: Path, grace: float) -> AsyncIterator[RunningServer]:
    """The demo shop on the embedded engines or on PostgreSQL + Redis (where "the agent's last socket" is
    counted across processes in Redis), with the agents' reconnect grace set to `grace` seconds."""
    if backend == "embedded":
        async with running_server(await seeded_settings(tmp_path, agent_grace_seconds=grace)) as running:
            yield running
    else:
        async with postgres_redis_server(tmp_path, agent_grace_seconds=grace) as running:
            yield running


BACKENDS = pytest.mark.parametrize("backend", ["embedded", "postgres_redis"])


async def chatting_with_jane(server: RunningServer) -> tuple[Client, Client, str]:
    jane = await connect_agent(server, "jane@acme.example", status="available")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="d1", body="Where is my parcel?")
    await visitor.expect("agent_joined")
    conversation_id = (await jane.expect("assigned"))["conversation"]["id"]
    return jane, visitor, conversation_id


def system_line(visitor: Client, body: str) -> Any:
    return visitor.expect("message", lambda f: f["author"]["kind"] == "system" and f["body"] == body)


@BACKENDS
async def test_the_visitor_hears_at_once_that_their_agent_dropped_and_that_she_is_back(
    backend: str, tmp_path: Path
) -> None:
    # A long grace: everything the visitor hears below comes from the drop and the return, not its end.
    async with desk(backend, tmp_path, grace=30.0) as server:
        jane, visitor, conversation_id = await chatting_with_jane(server)
        card = await server.services.directory.card(jane.frames[0]["agent"]["id"])
        await jane.close()
        dropped = await visitor.expect("agent_dropped", timeout=5)  # at once, not after the 30 s
        assert dropped["conversation_id"] == conversation_id and dropped["agent"]["name"] == card["name"]
        assert dropped["grace_s"] == 30
        promise = (
            "Jane's connection dropped. If Jane is not back within 30 seconds, you will be back in line for the "
            "next person, and we'll tell you your place."
        )
        assert dropped["text"] == dropped_line(card, 30.0) == promise
        await system_line(visitor, dropped["text"])  # the chat says the same, and keeps it for a reload

        await connect_agent(server, "jane@acme.example")
        back = await visitor.expect("agent_back")
        assert back["text"] == back_line(card) == "Jane is back."
        await system_line(visitor, "Jane is back.")
        async with server.services.sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None and conversation.agent_id == card["id"]
        assert conversation.status == ConversationStatus.active
        assert not visitor.of_type("agent_left") and not visitor.of_type("queue")


@BACKENDS
async def test_past_the_grace_the_visitor_is_back_in_line_as_the_drop_promised(backend: str, tmp_path: Path) -> None:
    async with desk(backend, tmp_path, grace=1.0) as server:
        jane, visitor, conversation_id = await chatting_with_jane(server)
        card = await server.services.directory.card(jane.frames[0]["agent"]["id"])
        await jane.close()
        dropped = await visitor.expect("agent_dropped")
        said = await system_line(visitor, dropped_line(card, 1.0))
        assert dropped["text"] == said["body"]
        left = await visitor.expect("agent_left")
        assert left["conversation_id"] == conversation_id
        kept = await system_line(visitor, gone_line(card, 1.0))
        assert kept["body"] == (
            "Jane did not come back within 1 second and is no longer available. You are back in line for the next "
            "person."
        )
        assert kept["seq"] > said["seq"]
        # "we'll tell you your place": the queue frame, not a stored line that would go stale.
        place = await visitor.expect("queue")
        assert place["position"] == 1 and place["wait_text"] == describe_wait(place["expected_wait_s"])
        assert not visitor.of_type("agent_back")


@BACKENDS
async def test_closing_one_of_two_console_tabs_is_not_a_drop(backend: str, tmp_path: Path) -> None:
    async with desk(backend, tmp_path, grace=30.0) as server:
        jane, visitor, _ = await chatting_with_jane(server)
        second_tab = await connect_agent(server, "jane@acme.example")
        (site,) = await server.services.directory.sites()
        agent_id = jane.frames[0]["agent"]["id"]

        async def one_tab_left() -> bool:
            return await server.services.broker.presence.live_connection_count(site.id, agent_id) == 1

        await jane.close()
        await poll_until(one_tab_left)
        await second_tab.close()  # now she is gone: the one drop the visitor hears of
        await visitor.expect("agent_dropped")
        assert len(visitor.of_type("agent_dropped")) == 1
