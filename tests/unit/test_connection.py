"""A socket's outbound queue: frames in order, the synchronous path while the transport keeps up, and a
peer that stops reading is closed (4408) instead of holding frames without bound."""

from __future__ import annotations

import asyncio
from typing import Any

from nameplate.protocol.outbound import encode
from nameplate.realtime.connection import CLOSE_TOO_SLOW, MAX_PENDING_FRAMES, Connection, State
from nameplate.realtime.lean_protocol import SEND_TEXTS_NOW


class FakeSocket:
    """Stands in for Starlette's WebSocket: records what is sent; `accepting` says whether the
    transport takes frames right away (the synchronous path) and `stalled` blocks the ASGI send."""

    def __init__(self, accepting: bool = True) -> None:
        self.accepting = accepting
        self.written: list[str] = []
        # One entry per synchronous write: the frames it carried.
        self.writes: list[list[str]] = []
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.stalled = asyncio.Event()
        self.stalled.set()
        self.scope: dict[str, Any] = {"extensions": {SEND_TEXTS_NOW: self._send_now}}

    def _send_now(self, texts: list[str]) -> bool:
        if not self.accepting:
            return False
        self.written.extend(texts)
        self.writes.append(list(texts))
        return True

    async def send_text(self, text: str) -> None:
        await self.stalled.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)


async def test_frames_go_out_at_once_while_the_transport_keeps_up() -> None:
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    frames = [{"type": "message", "seq": seq} for seq in range(1, 4)]
    for frame in frames:
        connection.send(frame)
    assert socket.written == [encode(f) for f in frames]
    assert connection._drainer is None and connection._outbox is None


async def test_order_is_kept_when_the_transport_pushes_back() -> None:
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    connection.send({"type": "message", "seq": 1})
    socket.accepting = False
    connection.send({"type": "message", "seq": 2})
    socket.accepting = True  # the transport has room again, but seq 2 is still queued ahead of seq 3
    connection.send({"type": "message", "seq": 3})
    assert connection._drainer is not None
    await asyncio.wait_for(asyncio.shield(connection._drainer), 1)
    assert socket.written + socket.sent == [encode({"type": "message", "seq": s}) for s in (1, 2, 3)]
    assert connection._outbox is None


async def test_a_peer_that_stops_reading_is_closed_as_too_slow() -> None:
    socket = FakeSocket(accepting=False)
    socket.stalled.clear()
    connection = Connection(socket)  # type: ignore[arg-type]
    for seq in range(MAX_PENDING_FRAMES + 5):
        connection.send({"type": "message", "seq": seq})
    assert connection.state is State.CLOSING
    socket.stalled.set()
    await connection.finish()
    assert socket.closed == (CLOSE_TOO_SLOW, "too slow")
    assert connection.state is State.CLOSED
    assert len(socket.sent) <= MAX_PENDING_FRAMES


async def test_a_corked_socket_sends_its_frames_after_the_block_in_one_write() -> None:
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    with connection.corked():
        connection.send({"type": "message", "seq": 1})
        with connection.corked():  # nested: only the outermost block sends
            connection.send({"type": "ack", "seq": 1})
        assert socket.written == []
    assert socket.writes == [[encode({"type": "message", "seq": 1}), encode({"type": "ack", "seq": 1})]]
    connection.send({"type": "message", "seq": 2})
    assert socket.writes[-1] == [encode({"type": "message", "seq": 2})]


async def test_corked_frames_queue_in_order_when_the_transport_pushes_back() -> None:
    socket = FakeSocket(accepting=False)
    connection = Connection(socket)  # type: ignore[arg-type]
    with connection.corked():
        connection.send({"type": "message", "seq": 1})
        connection.send({"type": "ack", "seq": 1})
    assert connection._drainer is not None
    await asyncio.wait_for(asyncio.shield(connection._drainer), 1)
    assert socket.sent == [encode({"type": "message", "seq": 1}), encode({"type": "ack", "seq": 1})]
