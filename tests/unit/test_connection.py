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


# -- exactly once, in seq order, per conversation ---------------------------------------------------------
def _message(seq: int, conversation_id: str = "c1") -> dict[str, Any]:
    return {"type": "message", "conversation_id": conversation_id, "seq": seq, "body": f"m{seq}"}


def _seqs(socket: FakeSocket) -> list[int]:
    import json

    return [json.loads(text)["seq"] for text in socket.written if json.loads(text)["type"] == "message"]


async def _fills_done(connection: Connection) -> None:
    async with asyncio.timeout(5):
        while connection._fills:
            await asyncio.gather(*list(connection._fills))


async def test_a_tracked_conversation_drops_what_it_delivered_already() -> None:
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    connection.track("c1", 2)
    for seq in (1, 2, 3, 3, 4, 2, 4):
        connection.send(_message(seq))
    assert _seqs(socket) == [3, 4]


async def test_a_late_live_copy_after_release_is_not_sent_again() -> None:
    """The duplicate of issue 19: a live copy from another process arriving just after `release`."""
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    connection.hold("c1", after=0)
    connection.send(_message(2))  # live, held
    for seq in (1, 2):
        connection.send(_message(seq), replayed=True)
    connection.release("c1", 2)
    connection.send(_message(2))  # the late live copy
    connection.send(_message(3))
    assert _seqs(socket) == [1, 2, 3]


async def test_a_gap_is_fetched_from_the_store_before_the_later_message() -> None:
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    stored = {seq: _message(seq) for seq in range(1, 6)}
    fetched = asyncio.Event()
    asked: list[int] = []

    async def filler(conversation_id: str, after: int) -> list[dict[str, Any]]:
        asked.append(after)
        await fetched.wait()
        return [frame for seq, frame in stored.items() if seq > after]

    connection.filler = filler
    connection.track("c1", 1)
    connection.send(_message(4))  # 2 and 3 went through another process and have not arrived
    connection.send(_message(5))
    assert _seqs(socket) == []  # held while the gap is fetched
    fetched.set()
    await _fills_done(connection)
    assert _seqs(socket) == [2, 3, 4, 5]
    assert asked == [1]
    connection.send(_message(3))  # the copies through Redis arrive late: dropped
    connection.send(_message(2))
    connection.send(_message(6))
    assert _seqs(socket) == [2, 3, 4, 5, 6]


async def test_a_gap_the_store_cannot_fill_is_not_a_hole_forever() -> None:
    """A visitor never sees private notes: seq 2 is one, so the store returns nothing for it."""
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    calls = 0

    async def filler(conversation_id: str, after: int) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return [_message(3)] if after < 3 else []

    connection.filler = filler
    connection.track("c1", 1)
    connection.send(_message(3))
    await _fills_done(connection)
    connection.send(_message(4))
    assert _seqs(socket) == [3, 4]
    assert calls == 1


async def test_closed_is_told_once_per_conversation() -> None:
    socket = FakeSocket()
    connection = Connection(socket)  # type: ignore[arg-type]
    for _ in range(3):
        connection.send({"type": "closed", "conversation_id": "c1", "by": "Ann"})
    connection.send({"type": "closed", "conversation_id": "c2", "by": "Ann"})
    assert len(socket.written) == 2
