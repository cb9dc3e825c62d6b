"""One open websocket as the server sees it: an ordered, bounded outbound queue.

Frames from broker handlers (synchronous callbacks) and replies to the client go through `send`, so
they reach the client in the order they were produced. A task to drain the queue exists only while
there is something to send: an idle socket costs no task beyond the one reading it.

While a conversation's history is being replayed, its live `message` frames are held back and then
released without the ones the replay already carried, so a resuming client gets every message once.

While a sender's message is being published, its own socket is corked: its copy of the message and its
ack go out after the other side's copy, together, in one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Any

from starlette.websockets import WebSocket

from nameplate.protocol.outbound import encode
from nameplate.realtime.lean_protocol import SEND_TEXTS_NOW

log = logging.getLogger("nameplate.realtime")

# A client this far behind is not reading: drop it rather than let it hold memory or slow others.
MAX_PENDING_FRAMES = 1000

# A closing peer gets this long to receive the frames that explain the close.
FINAL_FLUSH_SECONDS = 2.0

CLOSE_BAD_INPUT = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_RATE_LIMITED = 4429


class State(Enum):
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Connection:
    __slots__ = ("websocket", "state", "_outbox", "_drainer", "_held", "_corked", "_send_now", "__weakref__")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.state = State.OPEN
        # The server's synchronous write, when it offers one (see lean_protocol): used while nothing is
        # queued, so frames still go out in order, and a socket that stops reading still fills the
        # bounded outbox (the transport refuses once its buffer is full).
        self._send_now: Callable[[Sequence[str]], bool] | None = (websocket.scope.get("extensions") or {}).get(
            SEND_TEXTS_NOW
        )
        # Created when there is something to send, dropped when drained: an empty deque is ~600 bytes,
        # and most sockets are idle most of the time.
        self._outbox: deque[dict[str, Any] | tuple[int, str]] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._held: dict[str, list[dict[str, Any]]] | None = None
        self._corked: list[dict[str, Any]] | None = None

    def send(self, frame: dict[str, Any], replayed: bool = False) -> None:
        """Queue a frame. `replayed` frames come from the store during a replay and are never held."""
        if self.state is not State.OPEN:
            return
        if not replayed and self._held is not None and frame.get("type") == "message":
            held = self._held.get(frame.get("conversation_id", ""))
            if held is not None:
                held.append(frame)
                return
        if self._corked is not None:
            self._corked.append(frame)
            return
        outbox = self._outbox
        if outbox is None:
            if self._write_now((frame,)):
                return
            outbox = self._outbox = deque()
        elif len(outbox) >= MAX_PENDING_FRAMES:
            log.warning("closing a websocket that stopped reading (%d frames pending)", len(outbox))
            self.close(CLOSE_TOO_SLOW, "too slow")
            return
        outbox.append(frame)
        self._ensure_drainer()

    def _write_now(self, frames: Sequence[dict[str, Any]]) -> bool:
        """The synchronous write, when nothing is queued ahead of these frames and the transport takes them."""
        return (
            self._outbox is None
            and self._drainer is None
            and self._send_now is not None
            and self._send_now([encode(frame) for frame in frames])
        )

    @contextmanager
    def corked(self) -> Iterator[None]:
        """Hold this socket's frames while the block runs, then send them in order, in one write when the
        transport takes them at once. Nested blocks send when the outermost one ends."""
        if self._corked is not None:
            yield
            return
        self._corked = []
        try:
            yield
        finally:
            frames, self._corked = self._corked, None
            if frames and self.state is State.OPEN and not self._write_now(frames):
                for frame in frames:
                    self.send(frame)

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (e.g. the error that explains why)."""
        if self.state is not State.OPEN:
            return
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append((code, reason))
        self.state = State.CLOSING
        self._ensure_drainer()

    def hold(self, conversation_id: str) -> None:
        """Start holding live messages of this conversation while its history is replayed."""
        if self._held is None:
            self._held = {}
        self._held.setdefault(conversation_id, [])

    def release(self, conversation_id: str, replayed_up_to: int) -> None:
        """Send the held live messages that the replay did not already carry, in seq order."""
        if self._held is None:
            return
        held = self._held.pop(conversation_id, [])
        if not self._held:
            self._held = None
        seen: set[int] = set()
        for frame in sorted(held, key=lambda f: f.get("seq", 0)):
            seq = frame.get("seq", 0)
            if seq > replayed_up_to and seq not in seen:
                seen.add(seq)
                self.send(frame)

    def _ensure_drainer(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._outbox:
                item = self._outbox.popleft()
                if isinstance(item, tuple):
                    code, reason = item
                    self.state = State.CLOSED
                    self._outbox = None
                    await self.websocket.close(code, reason)
                    return
                await self.websocket.send_text(encode(item))
        except Exception:
            # The peer went away mid-send; the reading side notices and cleans up.
            self.state = State.CLOSED
        finally:
            self._drainer = None
            if self.state is State.CLOSED or not self._outbox:
                self._outbox = None

    async def finish(self) -> None:
        """The reading side is done: deliver a pending close (it explains why), then drop everything."""
        if self.state is State.CLOSING and self._drainer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._drainer), FINAL_FLUSH_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                pass
        self.state = State.CLOSED
        self._outbox = None
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
