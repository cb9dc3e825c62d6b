"""What both socket endpoints share: reading frames, counting bad ones, answering errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.datastructures import Headers
from starlette.websockets import WebSocket, WebSocketDisconnect

from nameplate.broker.base import Broker, Handler
from nameplate.errors import NameplateError, RateLimited
from nameplate.protocol import outbound
from nameplate.protocol.inbound import ProtocolError
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.realtime.connection import CLOSE_BAD_INPUT, CLOSE_RATE_LIMITED, CLOSE_UNAUTHORIZED, Connection

log = logging.getLogger("nameplate.realtime")

HelloT = TypeVar("HelloT")

# 10 s to say hello: enough for a slow phone, short enough that idle half-open sockets do not pile up.
HELLO_TIMEOUT_SECONDS = 10.0
# A peer that sends this many bad frames in a row is broken or hostile.
MAX_CONSECUTIVE_BAD_FRAMES = 20
# Rate-limited frames beyond this many in a row end the socket.
MAX_RATE_LIMITED = 30


async def receive_text(websocket: WebSocket) -> str | None:
    """The next text frame; None when the peer is gone. Binary frames are answered by the caller."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text: str | None = message.get("text")
    if text is not None:
        return text
    return message.get("bytes", b"").decode("utf-8", errors="replace") or "\x00binary"


async def receive_hello(websocket: WebSocket, parse: Callable[[str], HelloT]) -> HelloT | None:
    """The parsed hello; None once the socket has been refused (no hello in time, or a bad one)."""
    try:
        text = await asyncio.wait_for(receive_text(websocket), HELLO_TIMEOUT_SECONDS)
    except (TimeoutError, WebSocketDisconnect):
        text = None
    if text is None:
        await refuse(websocket, ErrorCode.hello_required, "say hello first")
        return None
    try:
        return parse(text)
    except ProtocolError as exc:
        await refuse(websocket, exc.code, exc.message)
        return None


def take_origin(websocket: WebSocket) -> str | None:
    """The handshake's Origin; the headers are dropped after it is read. The scope keeps them for the
    socket's whole life, about a kilobyte for every idle visitor, and nothing else reads them."""
    origin = Headers(scope=websocket.scope).get("origin")  # not websocket.headers: that caches a view
    websocket.scope["headers"] = []
    return origin


async def refuse(websocket: WebSocket, code: ErrorCode, message: str) -> None:
    """Explain, then close 4401: the client must not retry with the same credentials."""
    try:
        await websocket.send_json(outbound.error(code, message))
        await websocket.close(CLOSE_UNAUTHORIZED, message[:120])
    except Exception:
        pass


class FrameLoop:
    """Reads frames until the peer leaves, passing each to `handle`; turns errors into `error` frames."""

    __slots__ = ("websocket", "connection", "bad_frames", "rate_limited")  # one per open socket

    def __init__(self, websocket: WebSocket, connection: Connection) -> None:
        self.websocket = websocket
        self.connection = connection
        self.bad_frames = 0
        self.rate_limited = 0

    async def run(self, parse: Callable[[str], Any], handle: Callable[[Any], Awaitable[None]]) -> None:
        while True:
            try:
                text = await receive_text(self.websocket)
            except (WebSocketDisconnect, RuntimeError):
                return
            if text is None or not await self._one(text, parse, handle):
                return

    async def _one(self, text: str, parse: Callable[[str], Any], handle: Callable[[Any], Awaitable[None]]) -> bool:
        """Handle one frame; False once the socket is being closed. A method of its own so that the last
        frame is not kept alive, with its text, while the socket waits for the next one."""
        frame = None
        try:
            frame = parse(text)
            await handle(frame)
            self.bad_frames = 0
            self.rate_limited = 0
        except NameplateError as exc:
            self._error(exc.code, exc.message, frame)
            if isinstance(exc, RateLimited):
                self.rate_limited += 1
                if self.rate_limited > MAX_RATE_LIMITED:
                    self.connection.close(CLOSE_RATE_LIMITED, "rate limited")
                    return False
                return True
            self.bad_frames += 1
            if self.bad_frames >= MAX_CONSECUTIVE_BAD_FRAMES:
                self.connection.close(CLOSE_BAD_INPUT, "too many bad frames")
                return False
        except Exception:
            log.exception("handling a frame failed")
            self._error(ErrorCode.internal, "something went wrong on our side; try again", frame)
        return True

    def _error(self, code: ErrorCode, message: str, frame: Any) -> None:
        self.connection.send(outbound.error(code, message, getattr(frame, "client_id", None)))


class Subscriptions:
    """The broker channels one socket listens on.

    A subscription still in flight is awaited by everyone who asks for it again: otherwise a second
    caller could see the channel as "already watched" and publish before the broker delivers it
    (with Redis, a subscription is live only once Redis confirms it).
    """

    __slots__ = ("_broker", "_live")  # one per open socket

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        # None once the subscription is live: a finished task kept per channel would cost an idle socket
        # a kilobyte or more each, for nothing.
        self._live: dict[tuple[str, Handler], asyncio.Future[None] | None] = {}

    async def add(self, channel: str, handler: Handler) -> None:
        key = (channel, handler)
        if key in self._live:
            pending = self._live[key]
            if pending is not None:
                await asyncio.shield(pending)
            return
        pending = asyncio.ensure_future(self._broker.fanout.subscribe(channel, handler))
        self._live[key] = pending
        try:
            await asyncio.shield(pending)
        finally:
            if (
                pending.done()
                and not pending.cancelled()
                and pending.exception() is None
                and self._live.get(key) is pending
            ):
                self._live[key] = None

    def has(self, channel: str, handler: Handler) -> bool:
        return (channel, handler) in self._live

    async def remove(self, channel: str, handler: Handler) -> None:
        if (channel, handler) not in self._live:
            return
        pending = self._live.pop((channel, handler))
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
        await self._broker.fanout.unsubscribe(channel, handler)

    async def clear(self) -> None:
        for channel, handler in list(self._live):
            await self.remove(channel, handler)
