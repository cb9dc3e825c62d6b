"""Issue 19, the identity findings: tokens with a lifetime, proof before history, a fresh token at
verification (no session fixation), no conversation carried across verified users on one socket."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import websockets

from nameplate.people.credentials import VisitorTokens
from nameplate.store.models import Conversation, Customer
from tests.harness import Client, RunningServer, connect_agent, connect_visitor, visitor_token
from tests.security import postgres_redis_server, proof


async def refused_hello(server: RunningServer, token: str) -> tuple[str, int | None]:
    """(error code, close code) of a hello with this token."""
    ws = await websockets.connect(f"{server.ws_url}/ws/visitor", ping_interval=None)
    client = Client(ws)
    await client.send(type="hello", site="site_demo", token=token)
    error = await client.expect("error")
    return error["code"], await client.wait_closed()


async def chat_and_close(server: RunningServer, visitor: Client, body: str) -> str:
    """The visitor chats with Jane, who closes it; returns the conversation id."""
    jane = await connect_agent(server, "jane@acme.example")
    await visitor.send(type="message", client_id="c-" + body[:20], body=body)
    ack = await visitor.expect("ack")
    await jane.expect("assigned", lambda f: f["conversation"]["id"] == ack["conversation_id"])
    await jane.send(type="close", conversation_id=ack["conversation_id"])
    await visitor.expect("closed")
    await jane.close()
    return ack["conversation_id"]


# -- lifetime ------------------------------------------------------------------------------------------
def test_tokens_carry_a_lifetime_and_expire() -> None:
    tokens = VisitorTokens("k", anonymous_seconds=100, verified_seconds=10)
    now = 1_000_000.0
    anonymous = tokens.issue("s", "c", now=now)
    verified = tokens.issue("s", "c", verified=True, now=now)
    claims = tokens.read(anonymous, now=now + 99)
    assert claims is not None and not claims.verified and claims.issued_at == int(now) and claims.lifetime == 100
    assert tokens.read(anonymous, now=now + 100) is None
    assert tokens.read(verified, now=now + 9) is not None and tokens.read(verified, now=now + 9).verified
    assert tokens.read(verified, now=now + 10) is None
    # Issued far in the future: not ours in good faith.
    assert tokens.read(tokens.issue("s", "c", now=now + 3600), now=now) is None
    assert VisitorTokens("other").read(anonymous, now=now) is None


async def test_an_expired_token_is_refused_and_a_fresh_one_works(server: RunningServer) -> None:
    token = await visitor_token(server.base_url)
    site = await server.services.directory.site_by_key("site_demo")
    claims = server.services.tokens.read(token)
    assert site is not None and claims is not None
    month_ago = time.time() - server.services.tokens.anonymous_seconds - 60
    stale = server.services.tokens.issue(site.id, claims.customer_id, now=month_ago)
    assert await refused_hello(server, stale) == ("bad_token", 4401)
    fresh, _ = await connect_visitor(server, token=token)
    assert fresh.of_type("welcome")[0]["customer"]["id"] == claims.customer_id


# -- proof before history ------------------------------------------------------------------------------
async def test_a_verified_token_alone_does_not_show_earlier_chats(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server, identify=await proof(server, "ada", name="Ada"))
    verified_token = visitor.of_type("welcome")[0]["token"]
    conversation_id = await chat_and_close(server, visitor, "my private order 1142")
    await visitor.close()

    # The next person at a shared browser: the stored token, no user_hash.
    shared, _ = await connect_visitor(server, token=verified_token)
    welcome = shared.of_type("welcome")[0]
    assert welcome["customer"]["verified"] is True
    assert welcome["earlier"] == []
    await shared.send(type="history", conversation_id=conversation_id)
    assert (await shared.expect("error"))["code"] == "not_found"
    assert not shared.of_type("history")

    # Fresh proof on this very socket opens it.
    await shared.send(type="identify", **await proof(server, "ada"))
    identified = await shared.expect("identified")
    assert [c["id"] for c in identified["earlier"]] == [conversation_id]
    await shared.send(type="history", conversation_id=conversation_id)
    history = await shared.expect("history")
    assert "my private order 1142" in [m["body"] for m in history["messages"]]

    # Proof in hello works the same (what the widget sends on every page load).
    proven, _ = await connect_visitor(server, token=verified_token, identify=await proof(server, "ada"))
    assert [c["id"] for c in proven.of_type("welcome")[0]["earlier"]] == [conversation_id]


# -- session fixation ----------------------------------------------------------------------------------
async def test_a_token_from_before_verification_never_reads_the_new_verified_record(server: RunningServer) -> None:
    planted = await visitor_token(server.base_url)  # an attacker's token, planted in the victim's browser
    victim, _ = await connect_visitor(server, token=planted, identify=await proof(server, "brian"))
    welcome = victim.of_type("welcome")[0]
    assert welcome["customer"]["verified"] is True
    assert welcome["token"] and welcome["token"] != planted
    await victim.send(type="message", client_id="v1", body="brian's secret")
    await victim.expect("ack")
    # The attacker's copy of the token: refused, not the victim's record.
    assert await refused_hello(server, planted) == ("bad_token", 4401)
    # The victim's fresh token still works.
    again, _ = await connect_visitor(server, token=welcome["token"])
    assert again.of_type("welcome")[0]["customer"]["id"] == welcome["customer"]["id"]


async def test_a_token_merged_into_an_existing_verified_customer_is_refused(server: RunningServer) -> None:
    first, _ = await connect_visitor(server, identify=await proof(server, "carla"))
    carla_id = first.of_type("welcome")[0]["customer"]["id"]
    await first.close()
    planted = await visitor_token(server.base_url)
    planted_id = server.services.tokens.read(planted).customer_id
    victim, _ = await connect_visitor(server, token=planted)
    await victim.send(type="identify", **await proof(server, "carla"))
    identified = await victim.expect("identified")
    assert identified["customer"]["id"] == carla_id and identified["token"] != planted
    async with server.services.sessions() as session:
        assert (await session.get(Customer, planted_id)).merged_into == carla_id
    assert await refused_hello(server, planted) == ("bad_token", 4401)


# -- one socket, two verified users --------------------------------------------------------------------
async def test_a_second_verified_user_on_the_socket_does_not_inherit_the_first_users_chat(
    server: RunningServer,
) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server, identify=await proof(server, "dana"))
    dana_id = visitor.of_type("welcome")[0]["customer"]["id"]
    await visitor.send(type="message", client_id="d1", body="Dana's question")
    dana_chat = (await visitor.expect("ack"))["conversation_id"]
    await jane.expect("assigned", lambda f: f["conversation"]["id"] == dana_chat)

    await visitor.send(type="identify", **await proof(server, "eli"))
    identified = await visitor.expect("identified")
    assert identified["customer"]["id"] != dana_id and identified["customer"]["verified"]
    assert identified["conversation_id"] != dana_chat

    await jane.send(type="message", conversation_id=dana_chat, client_id="j1", body="For Dana only")
    await jane.expect("ack")
    await visitor.send(type="message", client_id="e1", body="Eli writes")
    eli_ack = await visitor.expect("ack")
    assert eli_ack["conversation_id"] != dana_chat
    await visitor.send(type="ping")
    await visitor.expect("pong")
    assert "For Dana only" not in [f.get("body") for f in visitor.of_type("message")]
    async with server.services.sessions() as session:
        eli_chat = await session.get(Conversation, eli_ack["conversation_id"])
        assert eli_chat.customer_id == identified["customer"]["id"]
        history = await server.services.conversations.history(dana_chat)
    assert "Eli writes" not in [m["body"] for m in history]


# -- the same on PostgreSQL + Redis --------------------------------------------------------------------
@pytest.mark.services
async def test_fixation_and_expiry_are_refused_on_postgresql_and_redis(tmp_path: Path) -> None:
    async with postgres_redis_server(tmp_path) as server:
        planted = await visitor_token(server.base_url)
        victim, _ = await connect_visitor(server, token=planted, identify=await proof(server, "pg-user"))
        welcome = victim.of_type("welcome")[0]
        assert welcome["customer"]["verified"] and welcome["token"] != planted
        assert await refused_hello(server, planted) == ("bad_token", 4401)
        site = await server.services.directory.site_by_key("site_demo")
        old = server.services.tokens.issue(site.id, welcome["customer"]["id"], verified=True, now=time.time() - 90000)
        assert await refused_hello(server, old) == ("bad_token", 4401)
        shared, _ = await connect_visitor(server, token=welcome["token"])
        assert shared.of_type("welcome")[0]["earlier"] == []
        for client in (victim, shared):  # before the server stops: it waits for open sockets
            await client.drain(0.05)
            await client.close()
