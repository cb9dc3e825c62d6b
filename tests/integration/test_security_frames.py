"""Issue 19, the socket findings: frames bounded by ws_max_size before hello, bounded integers, deep
nesting and lone surrogates refused with an error frame, crashing frames counted toward the 4400 close and
logged once per socket, and rate limits on identify, read, email, rate and history frames."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from nameplate.protocol.inbound import MAX_FRAME_BYTES, MAX_SEQ, WS_MAX_SIZE
from nameplate.realtime.common import ASK_RATE, MAX_CONSECUTIVE_BAD_FRAMES
from nameplate.store.models import Message
from tests.harness import Client, RunningServer, agent_cookie, connect_agent, connect_visitor, visitor_token
from tests.security import postgres_redis_server, proof

DEEP = "[" * 30000 + "]" * 30000  # under the 64 KiB limit, far past the parser's recursion limit


async def raw_visitor(server: RunningServer) -> Client:
    return Client(await websockets.connect(f"{server.ws_url}/ws/visitor", ping_interval=None, max_size=None))


async def raw_agent(server: RunningServer) -> Client:
    cookie = await agent_cookie(server.base_url, "jane@acme.example")
    ws = await websockets.connect(
        f"{server.ws_url}/ws/agent", additional_headers={"Cookie": cookie}, ping_interval=None
    )
    return Client(ws)


# -- size ----------------------------------------------------------------------------------------------
async def test_a_frame_beyond_ws_max_size_is_cut_off_before_hello(server: RunningServer) -> None:
    assert MAX_FRAME_BYTES < WS_MAX_SIZE < 1024 * 1024
    client = await raw_visitor(server)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.send_raw("x" * (WS_MAX_SIZE + 1))
        await client.ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big


# -- first frames that used to end in 1006 -------------------------------------------------------------
@pytest.mark.parametrize(
    "first",
    [
        DEEP,
        '{"type":"hello","site":"site_demo","token":"t","identify":{"attributes":' + "[" * 20000 + "]" * 20000 + "}}",
        json.dumps({"type": "hello", "site": "site_demo", "token": "t", "resume_after": 10**30}),
    ],
    ids=["deep-array", "deep-identify", "huge-resume_after"],
)
async def test_bad_visitor_first_frames_get_an_error_and_4401(server: RunningServer, first: str) -> None:
    client = await raw_visitor(server)
    await client.send_raw(first)
    error = await client.expect("error")
    assert error["code"] in ("bad_json", "bad_frame")
    assert await client.wait_closed() == 4401


async def test_bad_agent_first_frames_get_an_error_and_4401(server: RunningServer) -> None:
    for first in (DEEP, json.dumps({"type": "hello", "resume_after": {"c1": 10**30}})):
        client = await raw_agent(server)
        await client.send_raw(first)
        assert (await client.expect("error"))["code"] in ("bad_json", "bad_frame")
        assert await client.wait_closed() == 4401


async def test_bounded_integers_and_bad_text_are_refused_and_the_socket_stays(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="m1", body="hello")
    conversation_id = (await visitor.expect("ack"))["conversation_id"]
    await visitor.send(type="read", seq=10**30)
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    await visitor.send(type="read", seq=MAX_SEQ)  # the bound itself is a valid number
    await visitor.send_raw('{"type":"message","client_id":"m2","body":"lone \\ud800 surrogate"}')
    error = await visitor.expect("error")
    assert error["code"] == "bad_frame" and "surrogate" in error["message"]
    await visitor.send_raw('{"type":"message","client_id":"m3","body":"paired \\ud83d\\ude00"}')
    assert (await visitor.expect("ack"))["seq"] == 2
    await visitor.send_raw('{"type":"message","client_id":"m4","body":' + "[" * 5000 + "]" * 5000 + "}")
    assert (await visitor.expect("error"))["code"] == "bad_json"
    history = await server.services.conversations.history(conversation_id)
    assert [m["body"] for m in history] == ["hello", "paired 😀"]

    jane = await connect_agent(server, "jane@acme.example")
    await jane.send_raw(
        json.dumps({"type": "note", "conversation_id": conversation_id, "body": "x"}).replace('"x"', '"\\udfff"')
    )
    assert (await jane.expect("error"))["code"] == "bad_frame"
    await jane.send(type="read", conversation_id=conversation_id, seq=2**63)
    assert (await jane.expect("error"))["code"] == "bad_frame"
    await jane.send(type="ping")
    await jane.expect("pong")


# -- crashes -------------------------------------------------------------------------------------------
async def test_frames_that_crash_a_handler_close_the_socket_and_log_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="m1", body="hello")
    await visitor.expect("ack")

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a handler bug")

    # Stands for any bug a frame can reach: the loop must contain it, whatever it is.
    monkeypatch.setattr(server.services.conversations, "mark_read", broken)
    caplog.set_level(logging.ERROR, logger="nameplate.realtime")
    for _ in range(MAX_CONSECUTIVE_BAD_FRAMES + 5):
        try:
            await visitor.send(type="read", seq=1)
        except websockets.ConnectionClosed:
            break
    assert await visitor.wait_closed() == 4400
    assert len(visitor.of_type("error")) == MAX_CONSECUTIVE_BAD_FRAMES
    assert all(e["code"] == "internal" for e in visitor.of_type("error"))
    crashes = [r for r in caplog.records if r.getMessage().startswith("handling a frame failed")]
    assert len(crashes) == 1 and crashes[0].exc_info is not None


# -- rate limits on frames -----------------------------------------------------------------------------
def ask(kind: str, conversation_id: str) -> dict[str, Any]:
    """A valid frame of each kind, so that only the rate limit can refuse it."""
    return {
        "identify": {"type": "identify", "name": "Sam"},
        "read": {"type": "read", "seq": 1},
        "email": {"type": "email", "email": "sam@example.com"},
        "rate": {"type": "rate", "score": 5, "conversation_id": conversation_id},
        "history": {"type": "history", "conversation_id": conversation_id},
    }[kind]


@pytest.mark.parametrize("kind", ["email", "history", "identify", "rate", "read"])
async def test_ask_frames_are_rate_limited_per_socket(server: RunningServer, kind: str) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server, identify=await proof(server, "sam"))
    await visitor.send(type="message", client_id="m1", body="hello")
    conversation_id = (await visitor.expect("ack"))["conversation_id"]
    await jane.expect("assigned")
    await jane.send(type="close", conversation_id=conversation_id)
    await visitor.expect("closed")
    burst, per_second = ASK_RATE
    started = time.monotonic()
    count = int(burst) + 10
    for _ in range(count):
        await visitor.send(**ask(kind, conversation_id))
    await visitor.send(type="ping")
    await visitor.expect("pong")
    elapsed = time.monotonic() - started
    errors = visitor.of_type("error")
    limited = [e for e in errors if e["code"] == "rate_limited"]
    assert len(limited) == len(errors), errors  # the frames themselves were fine
    answered = count - len(limited)
    assert limited, f"{count} {kind} frames, none refused"
    assert burst <= answered <= burst + per_second * elapsed + 1
    replies = {"identify": "identified", "email": "email_saved", "rate": "rated", "history": "history"}
    if kind in replies:  # refused frames did nothing: one reply per answered frame
        assert len(visitor.of_type(replies[kind])) == answered


async def test_agent_read_frames_are_rate_limited(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="m1", body="hello")
    conversation_id = (await visitor.expect("ack"))["conversation_id"]
    jane = await connect_agent(server, "jane@acme.example")
    await jane.expect("assigned")
    for _ in range(75):  # a console's burst is 60
        await jane.send(type="read", conversation_id=conversation_id, seq=1)
    await jane.send(type="ping")
    await jane.expect("pong")
    assert any(e["code"] == "rate_limited" for e in jane.of_type("error"))


# -- PostgreSQL + Redis: nothing reaches the database's encoder ----------------------------------------
@pytest.mark.services
async def test_lone_surrogates_and_huge_seqs_never_reach_postgresql(tmp_path: Path) -> None:
    async with postgres_redis_server(tmp_path) as server:
        token = await visitor_token(server.base_url)
        visitor, _ = await connect_visitor(server, token=token)
        await visitor.send(type="message", client_id="m1", body="first")
        conversation_id = (await visitor.expect("ack"))["conversation_id"]
        await visitor.send_raw('{"type":"message","client_id":"m2","body":"\\udc00"}')
        assert (await visitor.expect("error"))["code"] == "bad_frame"
        await visitor.send(type="read", seq=10**30)
        assert (await visitor.expect("error"))["code"] == "bad_frame"
        await visitor.send(type="read", seq=MAX_SEQ)
        await visitor.send(type="message", client_id="m3", body="still fine")
        assert (await visitor.expect("ack"))["seq"] == 2
        assert not [e for e in visitor.of_type("error") if e["code"] == "internal"]
        async with server.services.sessions() as session:
            from sqlalchemy import select

            bodies = list(
                (
                    await session.execute(select(Message.body).where(Message.conversation_id == conversation_id))
                ).scalars()
            )
        assert sorted(bodies) == ["first", "still fine"]
        await visitor.close()  # before the server stops: it waits for open sockets
