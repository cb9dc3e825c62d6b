"""Issue 19: client_ids are idempotency keys per author. An agent's message reusing a client_id the
visitor used (or the other way round) is stored; each side's own retries are still answered once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import RunningServer, connect_agent, connect_visitor
from tests.security import postgres_redis_server


async def check_keys_per_author(server: RunningServer) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="shared-1", body="visitor says one")
    first = await visitor.expect("ack")
    conversation_id = first["conversation_id"]
    await jane.expect("assigned", lambda f: f["conversation"]["id"] == conversation_id)

    # The agent's console happens to (or is made to) use the visitor's key: stored, a new seq.
    await jane.send(type="message", conversation_id=conversation_id, client_id="shared-1", body="agent says two")
    agent_ack = await jane.expect("ack", lambda f: f["client_id"] == "shared-1")
    assert agent_ack["seq"] > first["seq"]  # (a "joined" system line may sit between them)
    # A visitor reusing the agent's next key: stored too.
    await jane.send(type="message", conversation_id=conversation_id, client_id="agent-2", body="agent says three")
    third = (await jane.expect("ack", lambda f: f["client_id"] == "agent-2"))["seq"]
    await visitor.send(type="message", client_id="agent-2", body="visitor says four")
    fourth = (await visitor.expect("ack", lambda f: f["client_id"] == "agent-2"))["seq"]
    assert first["seq"] < agent_ack["seq"] < third < fourth

    # Each side's own retry is still a retry: acked with the original seq, not stored again.
    await visitor.send(type="message", client_id="shared-1", body="visitor says one")
    assert (await visitor.expect("ack", lambda f: f["client_id"] == "shared-1"))["seq"] == first["seq"]
    await jane.send(type="message", conversation_id=conversation_id, client_id="shared-1", body="agent says two")
    assert (await jane.expect("ack", lambda f: f["client_id"] == "shared-1"))["seq"] == agent_ack["seq"]

    history = await server.services.conversations.history(conversation_id)
    bodies = [m["body"] for m in history if m["author"]["kind"] != "system"]
    assert bodies == ["visitor says one", "agent says two", "agent says three", "visitor says four"]
    assert [m["seq"] for m in history] == sorted({m["seq"] for m in history})

    # After the close, a visitor message with a key only the agent used is new (it opens a conversation),
    # not mistaken for a resend of the visitor's own that crossed the close.
    await jane.send(type="message", conversation_id=conversation_id, client_id="agent-5", body="agent says five")
    await jane.expect("ack", lambda f: f["client_id"] == "agent-5")
    await jane.send(type="close", conversation_id=conversation_id)
    await visitor.expect("closed")
    await visitor.send(type="message", client_id="agent-5", body="visitor starts again")
    again = await visitor.expect("ack", lambda f: f["client_id"] == "agent-5")
    assert again["conversation_id"] != conversation_id
    reopened = await server.services.conversations.history(again["conversation_id"])
    assert [m["body"] for m in reopened if m["author"]["kind"] == "visitor"] == ["visitor starts again"]
    for client in (visitor, jane):  # before the server stops: it waits for open sockets
        await client.drain(0.05)
        await client.close()


async def test_client_ids_are_keyed_per_author(server: RunningServer) -> None:
    await check_keys_per_author(server)


@pytest.mark.services
async def test_client_ids_are_keyed_per_author_on_postgresql_and_redis(tmp_path: Path) -> None:
    async with postgres_redis_server(tmp_path) as server:
        await check_keys_per_author(server)
