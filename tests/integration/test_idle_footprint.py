"""What an open visitor socket keeps after its handshake: the things dropped to save memory stay dropped,
and the socket still works (no Starlette middleware in its path, handshake objects gone)."""

from __future__ import annotations

import gc
import sys

from nameplate.realtime.lean_protocol import LeanWebSocketProtocol
from nameplate.realtime.visitor import VisitorSession
from nameplate.store.models import Conversation, Customer
from tests.harness import RunningServer, connect_visitor, poll_until


def visitor_protocols(server: RunningServer) -> list[LeanWebSocketProtocol]:
    return [
        p
        for p in server.server.server_state.connections
        if isinstance(p, LeanWebSocketProtocol) and getattr(p, "scope", {}).get("path") == "/ws/visitor"
    ]


async def test_an_open_visitor_socket_keeps_no_handshake_objects_and_still_chats(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    protocols = await poll_until(lambda: visitor_protocols(server))
    assert len(protocols) == 1
    protocol = protocols[0]
    assert protocol.request is None and protocol.response is None
    assert protocol.scope["headers"] == []
    assert protocol.queue.empty()
    # The attribute dict was copied compact once the handshake was done (uvicorn's grew by doubling).
    assert sys.getsizeof(protocol.__dict__) <= sys.getsizeof(dict(protocol.__dict__))

    await visitor.send(type="message", client_id="c1", body="Still works?")
    ack = await visitor.expect("ack", lambda f: f["client_id"] == "c1")
    assert ack["seq"] == 1
    # The session keeps its own small views of the customer and the conversation, no ORM objects.
    [session] = [o for o in gc.get_objects() if type(o) is VisitorSession]  # type(): proxies in there too
    assert session.conversation is not None and session.conversation.id == ack["conversation_id"]
    kept = [getattr(session, name) for name in VisitorSession.__slots__]
    assert not any(isinstance(value, Customer | Conversation) for value in kept)
    await visitor.send(type="ping")
    await visitor.expect("pong")
    await visitor.close()
    await poll_until(lambda: not visitor_protocols(server))
