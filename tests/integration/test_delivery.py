"""Issue 19's delivery guarantee on one process: every stored message reaches every socket entitled to it
once and in seq order, and a close reaches both sides, even when the broker drops or refuses events.

The broker's faults are made here by hand (a publish that never happens, one that raises); the fault test
with real processes, Redis and kills is tests/integration/test_delivery_faults.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nameplate.broker.base import Event
from tests.harness import Client, RunningServer, connect_agent, connect_visitor, poll_until


def drop_publishes(server: RunningServer, which: Callable[[Event], bool]) -> list[Event]:
    """Make the broker lose the events `which` picks (as if the process died before the fan-out, or Redis
    dropped them): nobody, not even this process's sockets, gets them. Returns what was dropped."""
    fanout = server.services.broker.fanout
    dropped: list[Event] = []
    publish_soon, publish = fanout.publish_soon, fanout.publish

    def lossy_soon(channel: str, event: Event) -> None:
        if which(event):
            dropped.append(event)
            return
        publish_soon(channel, event)

    async def lossy(channel: str, event: Event) -> None:
        if which(event):
            dropped.append(event)
            return
        await publish(channel, event)

    fanout.publish_soon = lossy_soon  # type: ignore[method-assign]
    fanout.publish = lossy  # type: ignore[method-assign]
    return dropped


def restore_broker(server: RunningServer) -> None:
    broker = server.services.broker
    for part in (broker.fanout, broker.routing):
        for name in ("publish_soon", "publish", "detach"):
            part.__dict__.pop(name, None)


def message_seqs(client: Client, conversation_id: str) -> list[int]:
    return [f["seq"] for f in client.of_type("message") if f["conversation_id"] == conversation_id]


async def chat(server: RunningServer) -> tuple[Client, Client, str, str]:
    agent = await connect_agent(server, "jane@acme.example")
    visitor, token = await connect_visitor(server)
    await visitor.send(type="message", client_id="v1", body="Hello?")
    conversation_id = (await agent.expect("assigned"))["conversation"]["id"]
    await visitor.expect("agent_joined")
    await visitor.expect("message", lambda f: f.get("author", {}).get("kind") == "system")
    return agent, visitor, conversation_id, token


async def test_a_resend_answered_as_a_duplicate_reaches_the_peer_once(server: RunningServer) -> None:
    """kill -9 between commit and fan-out: the message is stored, nobody got it, the sender got no ack.
    The resend is a duplicate for the store, and is published again."""
    agent, visitor, conversation_id, _ = await chat(server)
    dropped = drop_publishes(server, lambda e: e.get("client_id") == "lost")
    await agent.send(type="message", conversation_id=conversation_id, client_id="lost", body="Your order shipped")
    first = await agent.expect("ack", lambda f: f["client_id"] == "lost")
    assert len(dropped) == 1
    restore_broker(server)
    await agent.send(type="message", conversation_id=conversation_id, client_id="lost", body="Your order shipped")
    again = await agent.expect("ack", lambda f: f["client_id"] == "lost")
    assert again["seq"] == first["seq"]
    got = await visitor.expect("message", lambda f: f["seq"] == first["seq"])
    assert got["body"] == "Your order shipped"
    # Sent once more, the copy is dropped by both sockets: each seq once, in order.
    await agent.send(type="message", conversation_id=conversation_id, client_id="lost", body="Your order shipped")
    await agent.expect("ack", lambda f: f["client_id"] == "lost")
    await agent.send(type="message", conversation_id=conversation_id, client_id="next", body="Anything else?")
    last = await visitor.expect("message", lambda f: f["body"] == "Anything else?")
    await agent.expect("message", lambda f: f["seq"] == last["seq"])
    for client in (visitor, agent):
        seqs = message_seqs(client, conversation_id)
        assert seqs == sorted(set(seqs)) and seqs[-1] == last["seq"], seqs
        assert seqs == list(range(seqs[0], last["seq"] + 1)), seqs


async def test_a_message_that_arrives_after_a_gap_waits_for_the_gap_from_the_store(server: RunningServer) -> None:
    agent, visitor, conversation_id, _ = await chat(server)
    drop_publishes(server, lambda e: e.get("client_id") == "a1")
    await agent.send(type="message", conversation_id=conversation_id, client_id="a1", body="one")
    await agent.expect("ack", lambda f: f["client_id"] == "a1")
    restore_broker(server)
    await agent.send(type="message", conversation_id=conversation_id, client_id="a2", body="two")
    two = await visitor.expect("message", lambda f: f["body"] == "two")
    bodies = [f["body"] for f in visitor.of_type("message")]
    assert bodies[-2:] == ["one", "two"], bodies
    seqs = message_seqs(visitor, conversation_id)
    assert seqs == list(range(1, two["seq"] + 1)), seqs
    await agent.expect("message", lambda f: f["body"] == "two")
    assert message_seqs(agent, conversation_id) == seqs


async def test_after_a_broker_outage_each_socket_is_resynced_from_the_store(server: RunningServer) -> None:
    """Messages and the close lost by the broker reach both sides once recovery re-syncs the sockets."""
    agent, visitor, conversation_id, _ = await chat(server)
    dropped = drop_publishes(server, lambda e: e.get("type") in ("message", "closed"))
    await agent.send(type="message", conversation_id=conversation_id, client_id="a1", body="lost one")
    await agent.expect("ack", lambda f: f["client_id"] == "a1")
    await visitor.send(type="message", client_id="v2", body="lost two")
    await visitor.expect("ack", lambda f: f["client_id"] == "v2")
    await agent.send(type="close", conversation_id=conversation_id)
    await poll_until(lambda: any(e["type"] == "closed" for e in dropped))
    restore_broker(server)
    await server.services.resync_sockets()
    await visitor.expect("closed")
    await agent.expect("closed")
    await visitor.expect("message", lambda f: "closed the conversation" in f["body"])
    await agent.expect("message", lambda f: "closed the conversation" in f["body"])
    for client in (visitor, agent):
        bodies = [f["body"] for f in client.of_type("message")]
        assert bodies[-3:-1] == ["lost one", "lost two"], bodies
        seqs = message_seqs(client, conversation_id)
        assert seqs == list(range(1, seqs[-1] + 1)), seqs
    # A second re-sync has nothing new to say.
    await server.services.resync_sockets()
    await visitor.send(type="ping")
    await visitor.expect("pong")
    assert len(visitor.of_type("closed")) == 1 and len(message_seqs(visitor, conversation_id)) == seqs[-1]


async def test_a_close_whose_publish_fails_is_still_a_close(server: RunningServer) -> None:
    """The broker refuses after the commit: the agent is not told `internal`, the slot comes back, and
    the visitor hears of the close once the broker is back (the re-sync)."""
    agent, visitor, conversation_id, _ = await chat(server)
    broker = server.services.broker
    publish, detach = broker.fanout.publish, broker.routing.detach
    failures = {"detach": 1}

    async def refusing(channel: str, event: Event) -> None:
        if event.get("type") == "closed":
            raise ConnectionError("Redis is restarting")  # and nobody got it
        await publish(channel, event)

    async def flaky_detach(*args: Any) -> None:
        if failures["detach"]:
            failures["detach"] -= 1
            raise ConnectionError("Redis is restarting")
        await detach(*args)

    broker.fanout.publish = refusing  # type: ignore[method-assign]
    broker.routing.detach = flaky_detach  # type: ignore[method-assign]
    await agent.send(type="close", conversation_id=conversation_id)
    await agent.send(type="ping")
    await agent.expect("pong")
    assert not [f for f in agent.frames if f["type"] == "error"], agent.frames[-5:]

    stored = await server.services.conversations.get(conversation_id)
    assert stored is not None and stored.status == "closed"

    async def slot_free() -> bool:
        states = await broker.routing.agents(stored.site_id)
        return bool(states) and all(conversation_id not in s.conversations for s in states)

    await poll_until(slot_free, timeout=10)
    assert failures["detach"] == 0
    restore_broker(server)
    await server.services.resync_sockets()
    await visitor.expect("closed")
    await agent.expect("closed")
    assert len(visitor.of_type("closed")) == 1
