"""The realtime core end to end through a real uvicorn: durability, idempotency, resume, routing, closing."""

from __future__ import annotations

from sqlalchemy import func, select

from nameplate.store.engine import make_engine, make_sessions
from nameplate.store.models import Conversation, Message
from tests.harness import Client, RunningServer, connect_agent, connect_visitor, poll_until


async def stored_messages(server: RunningServer, conversation_id: str) -> list[Message]:
    """Read through a separate engine: what is committed, not what one process has cached."""
    engine = make_engine(server.services.settings.database_url)
    try:
        async with make_sessions(engine)() as session:
            result = await session.execute(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
            )
            return list(result.scalars())
    finally:
        await engine.dispose()


async def position_becomes(visitor: Client, position: int) -> None:
    """The visitor's latest queue frame says `position` (already, or in a frame still to come)."""
    frames = visitor.of_type("queue")
    if frames and frames[-1]["position"] == position:
        return
    await visitor.expect("queue", lambda f: f["position"] == position)


async def test_ack_means_the_message_is_already_stored(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="first", body="Is the tent waterproof?")
    ack = await visitor.expect("ack", lambda f: f["client_id"] == "first")
    rows = await stored_messages(server, ack["conversation_id"])
    assert [(m.seq, m.body, m.client_id) for m in rows] == [(ack["seq"], "Is the tent waterproof?", "first")]


async def test_resending_a_client_id_returns_the_same_seq_and_stores_once(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="dup", body="Hello")
    first = await visitor.expect("ack")
    await visitor.send(type="message", client_id="dup", body="Hello")
    second = await visitor.expect("ack")
    await visitor.send(type="message", client_id="other", body="Second message")
    third = await visitor.expect("ack")
    assert second["seq"] == first["seq"]
    assert third["seq"] == first["seq"] + 1
    rows = await stored_messages(server, first["conversation_id"])
    assert [m.client_id for m in rows] == ["dup", "other"]


async def test_reconnecting_visitor_receives_exactly_the_missed_messages(server: RunningServer) -> None:
    agent = await connect_agent(server, "jane@acme.example")
    visitor, token = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Hi")
    await visitor.expect("agent_joined")
    assigned = await agent.expect("assigned")
    conversation_id = assigned["conversation"]["id"]
    joined_line = await visitor.expect("message", lambda f: f["author"]["kind"] == "system")
    last_seen = joined_line["seq"]
    await visitor.close()

    for n in range(5):
        await agent.send(type="message", conversation_id=conversation_id, client_id=f"a{n}", body=f"reply {n}")
        await agent.expect("ack", lambda f, n=n: f["client_id"] == f"a{n}")

    again, _ = await connect_visitor(server, token, conversation_id=conversation_id, resume_after=last_seen)
    await again.send(type="ping")
    await again.expect("pong")  # everything replayed was sent before the pong
    replayed = again.of_type("message")
    assert [f["body"] for f in replayed] == [f"reply {n}" for n in range(5)]
    assert [f["seq"] for f in replayed] == list(range(last_seen + 1, last_seen + 6))
    assert all(f["author"]["name"] == "Jane Chang-Katzenberg" for f in replayed)


async def test_ten_visitors_two_agents_six_assigned_four_queued(server: RunningServer) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    tomas = await connect_agent(server, "tomas@acme.example", status="available")
    visitors = []
    for n in range(10):
        visitor, _ = await connect_visitor(server)
        await visitor.send(type="message", client_id=f"m{n}", body=f"visitor {n} here")
        await visitor.expect("ack")
        visitors.append(visitor)

    site_id = (await server.services.directory.sites())[0].id

    async def settled() -> bool:
        return len(await server.services.broker.routing.queue(site_id)) == 4

    await poll_until(settled)
    outcomes = [await v.expect({"agent_joined", "queue"}) for v in visitors]
    assigned = [v for v, f in zip(visitors, outcomes, strict=True) if f["type"] == "agent_joined"]
    queued = [v for v, f in zip(visitors, outcomes, strict=True) if f["type"] == "queue"]
    assert len(assigned) == 6 and len(queued) == 4
    # Arrival order is honoured: the earliest queued visitor is first in line, positions 1..4.
    for position, visitor in enumerate(queued, start=1):
        await position_becomes(visitor, position)
    for agent in (jane, tomas):
        for _ in range(3):
            await agent.expect("assigned")
    assert len(jane.of_type("assigned")) == 3 and len(tomas.of_type("assigned")) == 3

    # One chat closes: the first in line is assigned, the others move up.
    jane_chats = [f["conversation"]["id"] for f in jane.of_type("assigned")]
    await jane.send(type="close", conversation_id=jane_chats[0])
    first_in_line = queued[0]
    await first_in_line.expect("agent_joined")
    for visitor, new_position in zip(queued[1:], [1, 2, 3], strict=True):
        await position_becomes(visitor, new_position)


async def test_message_after_close_starts_a_new_conversation(server: RunningServer) -> None:
    agent = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="a", body="Where is my order?")
    first_ack = await visitor.expect("ack")
    assigned = await agent.expect("assigned")
    await agent.send(type="close", conversation_id=assigned["conversation"]["id"])
    await visitor.expect("closed")
    await visitor.send(type="message", client_id="b", body="One more thing")
    second_ack = await visitor.expect("ack", lambda f: f["client_id"] == "b")
    assert second_ack["conversation_id"] != first_ack["conversation_id"]
    assert second_ack["seq"] == 1
    old = await stored_messages(server, first_ack["conversation_id"])
    assert "One more thing" not in [m.body for m in old]
    async with server.services.sessions() as session:
        closed = await session.get(Conversation, first_ack["conversation_id"])
        count = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.customer_id == closed.customer_id)
        )
    assert closed.status == "closed" and count == 2


async def test_agent_gone_past_grace_loses_chats_back_to_the_queue(server: RunningServer) -> None:
    agent = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="a", body="Hello?")
    await visitor.expect("agent_joined")
    await agent.expect("assigned")
    await agent.close()
    left = await visitor.expect("agent_left", timeout=10)
    assert left["agent"]["name"] == "Jane Chang-Katzenberg"
    note = await visitor.expect("message", lambda f: "no longer available" in f["body"])
    assert note["author"]["kind"] == "system"
    position = await visitor.expect("queue")
    assert position["position"] == 1
    # The next agent to come online gets the chat at once.
    await connect_agent(server, "tomas@acme.example", status="available")
    joined = await visitor.expect("agent_joined", lambda f: f["agent"]["given_name"] == "Tomás")
    assert joined["agent"]["family_name"] == "Okafor-Lindqvist"


async def test_agent_back_within_grace_keeps_chats(server: RunningServer) -> None:
    server.services.presence._grace = 5.0  # a reload takes well under this
    agent = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="a", body="Hello?")
    await visitor.expect("agent_joined")
    assigned = await agent.expect("assigned")
    conversation_id = assigned["conversation"]["id"]
    await agent.close()
    back = await connect_agent(server, "jane@acme.example")
    welcome = back.of_type("welcome")[0]
    assert [c["id"] for c in welcome["conversations"]] == [conversation_id]
    # Several heartbeats later the chat is still hers.
    beats = server.services.presence
    for _ in range(3):
        await beats.beat()
    async with server.services.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
    assert conversation.status == "active" and conversation.agent_id == assigned["conversation"]["agent"]["id"]
    assert not visitor.of_type("agent_left")


async def test_visitors_learn_when_agents_come_online(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    assert visitor.of_type("welcome")[0]["agents_online"] == 0
    agent = await connect_agent(server, "jane@acme.example")
    assert (await visitor.expect("agents_online"))["count"] == 1
    await agent.close()
    assert (await visitor.expect("agents_online", timeout=10))["count"] == 0


async def test_errors_name_the_message_they_are_about(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="huge", body="z" * (server.services.settings.max_message_chars + 1))
    error = await visitor.expect("error")
    assert error["code"] == "too_large" and error["client_id"] == "huge"


async def test_a_resend_that_crosses_a_close_is_acknowledged_not_duplicated(server: RunningServer) -> None:
    agent = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="once", body="Only once please")
    ack = await visitor.expect("ack")
    assigned = await agent.expect("assigned")
    await agent.send(type="close", conversation_id=assigned["conversation"]["id"])
    await visitor.expect("closed")
    await visitor.send(type="message", client_id="once", body="Only once please")
    again = await visitor.expect("ack")
    assert (again["conversation_id"], again["seq"]) == (ack["conversation_id"], ack["seq"])
    async with server.services.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(Message).where(Message.client_id == "once"))
        conversations = await session.scalar(select(func.count()).select_from(Conversation))
    assert count == 1 and conversations == 1


async def test_an_observing_supervisor_watches_without_taking_chats(server: RunningServer) -> None:
    supervisor = await connect_agent(server, "tomas@acme.example", observe=True)
    assert supervisor.of_type("welcome")[0]["observing"] is True
    assert (await supervisor.expect("board"))["queue"] == []
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="q", body="Anyone?")
    queued = await visitor.expect("queue")
    assert queued["position"] == 1 and queued["agents_online"] == 0
    board = await supervisor.expect("board", lambda f: f["queue"])
    assert board["queue"][0]["conversation_id"] == queued["conversation_id"]
    await supervisor.send(type="status", status="available")
    assert (await supervisor.expect("error"))["code"] == "forbidden"
    await supervisor.send(type="watch", conversation_id=queued["conversation_id"])
    await supervisor.expect("watching")
    assert (await supervisor.expect("message"))["body"] == "Anyone?"
    await supervisor.send(type="message", conversation_id=queued["conversation_id"], client_id="s", body="hi")
    assert (await supervisor.expect("error"))["code"] == "forbidden"


async def test_read_receipts_reach_the_other_side_with_the_seq_read(server: RunningServer) -> None:
    """Both ways, including a visitor who came back to a conversation that has grown since."""
    agent = await connect_agent(server, "jane@acme.example")
    visitor, token = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Hi")
    conversation_id = (await agent.expect("assigned"))["conversation"]["id"]
    await visitor.expect("agent_joined")
    await visitor.close()
    again, _ = await connect_visitor(server, token, conversation_id=conversation_id)
    for n in range(3):
        await agent.send(type="message", conversation_id=conversation_id, client_id=f"a{n}", body=f"reply {n}")
    last = await again.expect("message", lambda f: f["body"] == "reply 2")
    await again.send(type="read", seq=last["seq"])
    assert (await agent.expect("read", lambda f: f["by"] == "visitor"))["seq"] == last["seq"]
    await agent.send(type="read", conversation_id=conversation_id, seq=last["seq"])
    assert (await again.expect("read", lambda f: f["by"] == "agent"))["seq"] == last["seq"]
    stored = await server.services.conversations.get(conversation_id)
    assert (stored.visitor_read_seq, stored.agent_read_seq) == (last["seq"], last["seq"])
    # A seq past the end means "everything": stored as the last message, and not news to the agent.
    await agent.send(type="message", conversation_id=conversation_id, client_id="a3", body="one more")
    newest = await again.expect("message", lambda f: f["body"] == "one more")
    await again.send(type="read", seq=newest["seq"] + 50)
    await again.send(type="read", seq=newest["seq"])
    await again.send(type="ping")
    await again.expect("pong")  # both reads handled (and published) before the pong
    await agent.expect("read", lambda f: f["by"] == "visitor" and f["seq"] == newest["seq"])
    await agent.send(type="ping")
    await agent.expect("pong")  # anything published to the console before it has arrived
    assert [f["seq"] for f in agent.of_type("read") if f["by"] == "visitor"] == [last["seq"], newest["seq"]]
    assert (await server.services.conversations.get(conversation_id)).visitor_read_seq == newest["seq"]
