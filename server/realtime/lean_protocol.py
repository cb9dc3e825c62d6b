"""uvicorn's sans-I/O websocket protocol, minus what an idle socket need not carry.

Every open socket costs memory for as long as it is open, and a chat server holds many idle ones (18,000
a process is the target). uvicorn's `WebSocketsSansIOProtocol` keeps per socket, for its whole life:
the parsed handshake request and response (header objects, ~3 KiB), an `asyncio.Queue` for incoming
events (three deques, ~2.5 KiB) and an `asyncio.Event` for write flow control (~1.4 KiB). This subclass
drops the handshake once it has been answered (and then copies its own attribute dict, which had grown
by doubling, into a compact one) and uses a one-waiter inbox and a lazily-armed flag instead; the
protocol logic itself is uvicorn's, unchanged. It also offers the app a synchronous
`send_texts_now` (an ASGI scope extension), so that frames to a socket that keeps up cost no task.

Served with `uvicorn.run(..., ws=LeanWebSocketProtocol)` (see `nameplate.cli.run_server`); the test
harness serves the same class, so every websocket test goes through it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState


class _Inbox:
    """The part of `asyncio.Queue` uvicorn uses: `put_nowait`, `get`, `empty`; one reader at a time
    (the ASGI app's `receive`). Storage and the waiter exist only while needed."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None  # an empty deque is ~600 bytes; most sockets are idle most of the time
        return item


class _Flag:
    """The part of `asyncio.Event` uvicorn uses for write flow control: set, clear, wait, is_set.
    Almost always set, so `wait` almost never creates anything."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


# The ASGI scope extension under which the protocol offers `send_texts_now` to the app.
SEND_TEXTS_NOW = "nameplate.send_texts_now"


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_TEXTS_NOW] = self.send_texts_now

    def send_texts_now(self, texts: Sequence[str]) -> bool:
        """Write text frames to the transport right away, in one write, if nothing stands in the way (the
        socket is open and the transport is not asking us to wait); False means: use the ASGI `send`.

        The ASGI `send` is a coroutine, so every frame sent through it costs a task (or a turn of the
        event loop) for what is, on an open socket that keeps up, a synchronous write. And each write is
        a system call that, on loopback or a busy host, costs more than building the frame: frames that
        are ready together (a sender's ack and its own copy of the message) go out in one.
        """
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            return False
        try:
            for text in texts:
                self.conn.send_text(text.encode())
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    async def send(self, message: Any) -> None:
        answered = self.handshake_complete
        await super().send(message)
        if not answered and self.handshake_complete and getattr(self, "request", None) is not None:
            # The handshake has been answered (accepted or refused): its request and response objects,
            # with all their headers, are never read again (the ASGI scope has its own copy of the
            # headers). Emptying the request's headers matters most: the websockets parser's generator
            # frame keeps the request alive as a local for as long as the connection lasts.
            self.request.headers.clear()
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
            # uvicorn gives a protocol 37 attributes, more than CPython shares keys for, so the instance
            # dict grew by doubling to 1.6 KiB; a copy made now, with every attribute in it, is 0.8 KiB.
            self.__dict__ = dict(self.__dict__)
