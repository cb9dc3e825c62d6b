"""One open websocket as the server sees it: an ordered, bounded outbound queue.

Frames from broker handlers (synchronous callbacks) and replies to the client go through `send`, so
they reach the client in the order they were produced. A task to drain the queue exists only while
there is something to send: an idle socket costs no task beyond the one reading it.

Exactly once and in seq order, per conversation: the socket remembers the last seq it delivered of every
conversation it follows (`track`) and drops any message at or below it (a late live copy, a republished
resend, a replay overlapping live delivery). A message above last + 1 means one in between has not arrived
(it went through another process and Redis, or Redis lost it): the conversation is held while the gap is
fetched from the store (`filler`), then delivered in order. While a conversation's history is being
replayed, its live `message` frames are held back the same way and released afterwards.

While a sender's message is being published, its own socket is corked: its copy of the message and its
ack go out after the other side's copy, together, in one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
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

# Reads the stored messages of a conversation after a seq, as this socket may see them (private or not).
Filler = Callable[[str, int], Awaitable[list[dict[str, Any]]]]

CLOSE_BAD_INPUT = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_RATE_LIMITED = 4429


class State(Enum):
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Connection:
    __slots__ = (
        "websocket",
        "state",
        "_outbox",
        "_drainer",
        "_held",
        "_corked",
        "_send_now",
        "_delivered",
        "_closed_sent",
        "_fills",
        "filler",
        "__weakref__",
    )

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
        # conversation id -> [hold count, held frames]
        self._held: dict[str, tuple[list[int], list[dict[str, Any]]]] | None = None
        self._corked: list[dict[str, Any]] | None = None
        # conversation id -> the last seq this socket delivered of it (only conversations it tracks).
        self._delivered: dict[str, int] | None = None
        self._closed_sent: set[str] | None = None
        self._fills: set[asyncio.Task[None]] | None = None
        self.filler: Filler | None = None

    def send(self, frame: dict[str, Any], replayed: bool = False) -> None:
        """Queue a frame. `replayed` frames come from the store (replay, gap fetch) and are never held."""
        if self.state is not State.OPEN:
            return
        kind = frame.get("type")
        if kind == "message":
            conversation_id = frame.get("conversation_id", "")
            if not replayed and self._held is not None:
                held = self._held.get(conversation_id)
                if held is not None:
                    held[1].append(frame)
                    return
            delivered = self._delivered
            if delivered is not None and conversation_id in delivered:
                seq = frame.get("seq", 0)
                last = delivered[conversation_id]
                if seq <= last:
                    return  # delivered already
                if seq > last + 1 and not replayed and self.filler is not None:
                    # Something in between has not reached this socket: fetch it first.
                    self.hold(conversation_id)
                    self._held[conversation_id][1].append(frame)  # type: ignore[index]
                    self._start_fill(conversation_id, seq)
                    return
                delivered[conversation_id] = seq
        elif kind == "closed":
            conversation_id = frame.get("conversation_id", "")
            if self._closed_sent is None:
                self._closed_sent = set()
            elif conversation_id in self._closed_sent:
                return  # told already (live, or by a re-sync)
            self._closed_sent.add(conversation_id)
        self._queue(frame)

    def _queue(self, frame: dict[str, Any]) -> None:
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
                    self._queue(frame)

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (e.g. the error that explains why)."""
        if self.state is not State.OPEN:
            return
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append((code, reason))
        self.state = State.CLOSING
        self._ensure_drainer()

    # -- per-conversation delivery ---------------------------------------------------------------------
    def track(self, conversation_id: str, after: int) -> None:
        """Deliver this conversation's messages exactly once, in order, from seq `after` + 1 on. Tracking a
        conversation again never moves its mark back."""
        if self._delivered is None:
            self._delivered = {}
        if after > self._delivered.get(conversation_id, -1):
            self._delivered[conversation_id] = after

    def untrack(self, conversation_id: str) -> None:
        if self._delivered is not None:
            self._delivered.pop(conversation_id, None)

    def tracked(self) -> dict[str, int]:
        """Each tracked conversation and the last seq delivered of it."""
        return dict(self._delivered or {})

    def hold(self, conversation_id: str, after: int | None = None) -> None:
        """Start holding live messages of this conversation (while its history is replayed). With `after`,
        the conversation is tracked from there on (see `track`). Holds nest; each needs its `release`."""
        if after is not None:
            self.track(conversation_id, after)
        if self._held is None:
            self._held = {}
        held = self._held.get(conversation_id)
        if held is None:
            self._held[conversation_id] = ([1], [])
        else:
            held[0][0] += 1

    def release(self, conversation_id: str, replayed_up_to: int = 0) -> None:
        """End one hold; when the last one ends, send the held live messages the socket has not delivered
        yet, in seq order."""
        if self._held is None or conversation_id not in self._held:
            return
        count, frames = self._held[conversation_id]
        count[0] -= 1
        if count[0] > 0:
            return
        del self._held[conversation_id]
        if not self._held:
            self._held = None
        if self._delivered is not None and conversation_id in self._delivered:
            self.track(conversation_id, replayed_up_to)
            for frame in sorted(frames, key=lambda f: f.get("seq", 0)):
                self.send(frame)
            return
        seen: set[int] = set()
        for frame in sorted(frames, key=lambda f: f.get("seq", 0)):
            seq = frame.get("seq", 0)
            if seq > replayed_up_to and seq not in seen:
                seen.add(seq)
                self.send(frame)

    def _start_fill(self, conversation_id: str, upto: int) -> None:
        """Called with a hold taken for the fill; the fill releases it."""
        if self._fills is None:
            self._fills = set()
        task = asyncio.get_running_loop().create_task(self._fill_gap(conversation_id, upto))
        self._fills.add(task)
        task.add_done_callback(self._fill_done)

    def _fill_done(self, task: asyncio.Task[None]) -> None:
        if self._fills is not None:
            self._fills.discard(task)
            if not self._fills:
                self._fills = None

    async def _fill_gap(self, conversation_id: str, upto: int) -> None:
        try:
            await self._fetch(conversation_id)
        finally:
            # Everything up to the message that revealed the gap was committed before it: what the store
            # did not return is not for this socket (a private note, for a visitor).
            if self._delivered is not None and conversation_id in self._delivered:
                self.track(conversation_id, upto - 1)
            self.release(conversation_id)

    async def _fetch(self, conversation_id: str) -> None:
        """Deliver from the store what this socket has not delivered yet of a tracked conversation."""
        filler = self.filler
        if filler is None or self._delivered is None or conversation_id not in self._delivered:
            return
        try:
            frames = await filler(conversation_id, self._delivered[conversation_id])
        except Exception:
            log.exception("fetching the messages of %s from the store failed", conversation_id)
            return
        for frame in frames:
            self.send(frame, replayed=True)

    async def fill(self, conversation_id: str) -> None:
        """Re-sync one tracked conversation from the store (after a broker outage): live messages are
        held meanwhile, then everything is delivered once, in order."""
        if self._delivered is None or conversation_id not in self._delivered or self.state is not State.OPEN:
            return
        self.hold(conversation_id)
        try:
            await self._fetch(conversation_id)
        finally:
            self.release(conversation_id)

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
        for task in list(self._fills or ()):
            task.cancel()
