"""Bad input never breaks a socket for good and never reaches the store."""

from __future__ import annotations

import json

import websockets

from nameplate.protocol.inbound import MAX_FRAME_BYTES
from tests.harness import Client, RunningServer, connect_agent, connect_visitor, visitor_token
from tests.integration.test_core_chat import stored_messages


async def raw_visitor(server: RunningServer, **headers: str) -> Client:
    ws = await websockets.connect(f"{server.ws_url}/ws/visitor", additional_headers=headers or None)
    return Client(ws)


async def test_garbage_frames_get_error_frames_and_the_socket_stays_usable(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send_raw("this is not json")
    assert (await visitor.expect("error"))["code"] == "bad_json"
    await visitor.send_raw(json.dumps(["a", "list"]))
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    await visitor.send(type="launch_missiles")
    assert (await visitor.expect("error"))["code"] == "unknown_type"
    await visitor.send(type="message", body="no client id")
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    await visitor.send_raw("x" * (MAX_FRAME_BYTES + 1))
    assert (await visitor.expect("error"))["code"] == "too_large"
    await visitor.send(type="message", client_id="ok", body="still here")
    ack = await visitor.expect("ack")
    assert ack["seq"] == 1


async def test_too_large_and_empty_bodies_are_refused_and_not_stored(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="ok", body="first")
    ack = await visitor.expect("ack")
    limit = server.services.settings.max_message_chars
    await visitor.send(type="message", client_id="big", body="y" * (limit + 1))
    assert (await visitor.expect("error"))["code"] == "too_large"
    await visitor.send(type="message", client_id="blank", body="   \n ")
    assert (await visitor.expect("error"))["code"] == "empty"
    rows = await stored_messages(server, ack["conversation_id"])
    assert [m.client_id for m in rows] == ["ok"]


async def test_a_peer_that_keeps_sending_garbage_is_closed_4400(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    for _ in range(25):
        await visitor.send_raw("{")
    assert await visitor.wait_closed() == 4400


async def test_no_hello_first_closes_4401(server: RunningServer) -> None:
    client = await raw_visitor(server)
    await client.send(type="message", client_id="x", body="hi")
    assert await client.wait_closed() == 4401


async def test_unknown_site_closes_4401(server: RunningServer) -> None:
    token = await visitor_token(server.base_url)
    client = await raw_visitor(server)
    await client.send(type="hello", site="site_nope", token=token)
    assert await client.wait_closed() == 4401


async def test_forged_token_closes_4401(server: RunningServer) -> None:
    token = await visitor_token(server.base_url)
    client = await raw_visitor(server)
    await client.send(type="hello", site="site_demo", token=token[:-2] + "xx")
    assert await client.wait_closed() == 4401


async def test_token_from_another_site_closes_4401(server: RunningServer) -> None:
    other = await server.services.directory.create_site("Other shop", allowed_origins="*")
    token = await visitor_token(server.base_url, other.public_key)
    client = await raw_visitor(server)
    await client.send(type="hello", site="site_demo", token=token)
    assert await client.wait_closed() == 4401


async def test_foreign_origin_closes_4401(server: RunningServer) -> None:
    site = await server.services.directory.site_by_key("site_demo")
    site.allowed_origins = "https://shop.example"
    async with server.services.sessions() as session:
        session.add(site)
        await session.commit()
    token = await visitor_token(server.base_url)
    client = await raw_visitor(server, Origin="https://evil.example")
    await client.send(type="hello", site="site_demo", token=token)
    assert await client.wait_closed() == 4401
    allowed = await raw_visitor(server, Origin="https://shop.example")
    await allowed.send(type="hello", site="site_demo", token=token)
    assert (await allowed.expect("welcome"))["type"] == "welcome"


async def test_agent_socket_without_a_session_closes_4401(server: RunningServer) -> None:
    ws = await websockets.connect(f"{server.ws_url}/ws/agent")
    client = Client(ws)
    assert await client.wait_closed() == 4401
    assert client.of_type("error")[0]["code"] == "unauthorized"
    forged = await websockets.connect(
        f"{server.ws_url}/ws/agent", additional_headers={"Cookie": "nameplate_session=forged.value.here"}
    )
    assert await Client(forged).wait_closed() == 4401


async def test_agent_cannot_write_into_a_conversation_not_assigned_to_them(server: RunningServer) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="v", body="Help")
    ack = await visitor.expect("ack")
    await jane.expect("assigned")
    tomas = await connect_agent(server, "tomas@acme.example", status="available")
    for frame in (
        {"type": "message", "conversation_id": ack["conversation_id"], "client_id": "t", "body": "I'm not Jane"},
        {"type": "note", "conversation_id": ack["conversation_id"], "body": "sneaky"},
        {"type": "close", "conversation_id": ack["conversation_id"]},
    ):
        await tomas.send(**frame)
        assert (await tomas.expect("error"))["code"] == "forbidden"
    await tomas.send(type="message", conversation_id="does-not-exist", client_id="u", body="x")
    assert (await tomas.expect("error"))["code"] == "not_found"
    rows = await stored_messages(server, ack["conversation_id"])
    assert all(m.agent_id is None or m.body != "I'm not Jane" for m in rows)
    assert [m.body for m in rows if m.author_kind != "system"] == ["Help"]


async def test_visitor_rate_limit_refuses_floods(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    burst = server.services.settings.message_burst
    for n in range(burst + 5):
        await visitor.send(type="message", client_id=f"f{n}", body=f"flood {n}")
    error = await visitor.expect("error", lambda f: f["code"] == "rate_limited")
    assert "too quickly" in error["message"]
    acks = [await visitor.expect("ack") for _ in range(burst)]
    assert len({a["seq"] for a in acks}) == burst


async def test_visitor_api_validates_input(server: RunningServer) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.post("/api/v1/visitors", content=b"nope")).json()["error"]["code"] == "bad_json"
        missing = await http.post("/api/v1/visitors", json={})
        assert missing.status_code == 422 and missing.json()["error"]["code"] == "invalid"
        unknown = await http.post("/api/v1/visitors", json={"site": "site_nope"})
        assert unknown.status_code == 404
        ok = await http.post("/api/v1/visitors", json={"site": "site_demo"}, headers={"Origin": "http://x.example"})
        assert ok.status_code == 201 and ok.headers["access-control-allow-origin"] == "http://x.example"


async def test_after_a_transfer_only_the_new_agent_can_write(server: RunningServer) -> None:
    """Jane's console remembers her conversations to spare a query per message; a hand-over must end that."""
    jane = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="v", body="Help")
    conversation_id = (await visitor.expect("ack"))["conversation_id"]
    await jane.expect("assigned")
    await jane.send(type="message", conversation_id=conversation_id, client_id="j1", body="Hi, Jane here")
    await jane.expect("ack", lambda f: f["client_id"] == "j1")
    tomas = await connect_agent(server, "tomas@acme.example", status="available")
    tomas_id = tomas.of_type("welcome")[0]["agent"]["id"]
    await jane.send(type="transfer", conversation_id=conversation_id, to_agent=tomas_id, note="over to you")
    await tomas.expect("assigned")
    await jane.send(type="message", conversation_id=conversation_id, client_id="j2", body="still me?")
    assert (await jane.expect("error"))["code"] == "forbidden"
    await tomas.send(type="message", conversation_id=conversation_id, client_id="t1", body="Tomas taking over")
    await tomas.expect("ack", lambda f: f["client_id"] == "t1")
    bodies = [m.body for m in await stored_messages(server, conversation_id) if m.author_kind == "agent"]
    assert bodies == ["Hi, Jane here", "Tomas taking over"]
