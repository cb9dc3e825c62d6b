"""Fan-out over Redis pub/sub, shared by any number of server processes.

Pub/sub, not streams. A published event goes to whoever is subscribed at that instant and is lost for a
process that is disconnected; that is fine because events are only notifications. The store is the source
of replay: a socket that missed something resumes with `resume_after` and reads the messages from SQL.
Streams would add consumer groups, trimming and acknowledgements to buy a durability we already have. Each
process holds ONE subscriber connection and ONE reader task; a channel is subscribed in Redis when its
first local handler arrives and unsubscribed when its last one leaves. Each message is JSON-decoded once
and handed to every local handler (`contracts.dispatch`). `subscribe` returns once Redis has confirmed the
subscription, so an event published after it returns is delivered.

Local delivery: `publish` hands the event to this process's own handlers at once (in publish order, like
the memory backend) and sends it to Redis for the other processes. The payload starts with this process's
origin tag, so when Redis echoes it back the reader drops it with a prefix check, before any JSON parsing.
A single process thus never waits on Redis to reach its own sockets, and its handlers still hear their own
events while Redis is down (the publish itself still fails, so the caller knows the other processes may
have missed it). The reader handles everything already buffered on its connection in one go: waiting for
data is its only suspension, not one timed poll per message.

The reader task reconnects with exponential back-off (capped at 2 s) and re-subscribes every channel that
still has local handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nameplate.broker.contracts import Event, FanOut, Handler, dispatch
from nameplate.broker.redis.link import (
    RECONNECT_FIRST_DELAY,
    RECONNECT_MAX_DELAY,
    SOCKET_TIMEOUT,
    Backoff,
    RedisLink,
    cancel_for_good,
    raise_if_cancel_was_swallowed,
)

log = logging.getLogger("nameplate.broker")

# The reader wakes at least this often to notice a resubscribe the watchdog asked for (one timer per batch
# of buffered messages, not per message).
READER_POLL = 1.0
# Generous: Redis confirms a SUBSCRIBE in microseconds unless something is badly wrong.
SUBSCRIBE_CONFIRM_TIMEOUT = 5.0
# A queued publish: Redis key, payload, and the future its publisher waits on (None: nobody waits).
_Outgoing = tuple[str, str, "asyncio.Future[None] | None"]


class RedisFanOut(FanOut):
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._handlers: dict[str, set[Handler]] = {}
        # One future per SUBSCRIBE sent, in order; Redis confirms them in the same order.
        self._confirmations: dict[str, deque[asyncio.Future[bool]]] = {}
        self._pubsub: PubSub | None = None  # set only while subscribed to every channel in _handlers
        self._sub_lock = asyncio.Lock()
        self._sub_changed = asyncio.Condition()
        self._sub_connected_at = 0.0
        self._force_resubscribe = False
        # Publishes wait here while one round trip is in flight, then go together in the next (like the
        # message log's group commit): one command per frame would cost a round trip and a pooled
        # connection each, and two connections could deliver one channel's frames out of order.
        self._outgoing: list[_Outgoing] = []
        self._publisher: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle (driven by RedisBroker) ---------------------------------------------------------
    async def start(self) -> None:
        """Subscribe (raises if Redis is unreachable), then keep reading in a task of its own."""
        self._closing = False
        try:
            await self._open_subscriber()
        except BaseException:
            await self._close_subscriber()
            raise
        self._reader_task = asyncio.create_task(self._read_forever(), name="nameplate-broker-reader")

    @property
    def started(self) -> bool:
        return self._reader_task is not None

    @property
    def subscribed(self) -> bool:
        """False while the reader is between connections: commands may work, but fan-out does not."""
        return self._pubsub is not None

    async def stop(self) -> None:
        self._closing = True
        task, self._reader_task = self._reader_task, None
        if task is not None:
            await cancel_for_good(task)
        async with self._sub_lock:
            await self._close_subscriber()

    async def wait_for_fresh_subscriber(self) -> None:
        """The rebuild publishes events; this process must be subscribed again before it starts."""
        since = self._link.last_failure_at
        if self._pubsub is not None and self._sub_connected_at <= since:
            # The subscriber never noticed the outage (e.g. a silent network partition): its socket may
            # be half-open. Ask the reader to start over rather than trust it.
            self._force_resubscribe = True
        try:
            async with asyncio.timeout(2 * SUBSCRIBE_CONFIRM_TIMEOUT), self._sub_changed:
                await self._sub_changed.wait_for(lambda: self._pubsub is not None and self._sub_connected_at > since)
        except TimeoutError:
            log.warning("the broker subscriber is not back yet; running reset callbacks anyway")

    async def publish(self, channel: str, event: Event) -> None:
        await asyncio.gather(*self._queue_publish([(channel, event)], wait=True))

    async def publish_many(self, events: list[tuple[str, Event]]) -> None:
        await asyncio.gather(*self._queue_publish(events, wait=True))

    def publish_soon(self, channel: str, event: Event) -> None:
        self._queue_publish([(channel, event)], wait=False)

    def _queue_publish(self, events: list[tuple[str, Event]], wait: bool) -> list[asyncio.Future[None]]:
        """Deliver locally and queue for Redis; with `wait`, one future per event, done once Redis has it."""
        # Encode all first: an event that cannot be sent must not reach anyone, here or elsewhere.
        payloads = [self._link.origin + json.dumps(event, separators=(",", ":")) for _, event in events]
        loop = asyncio.get_running_loop()
        futures = []
        for (channel, event), payload in zip(events, payloads, strict=True):
            future: asyncio.Future[None] | None = None
            if wait:
                future = loop.create_future()
                futures.append(future)
            self._outgoing.append((self._link.channel_key(channel), payload, future))
            dispatch(self._handlers.get(channel), event)
        if self._publisher is None:
            self._publisher = loop.create_task(self._publish_queued())
        return futures

    async def _publish_queued(self) -> None:
        batch: list[_Outgoing] = []
        try:
            while self._outgoing:
                batch, self._outgoing = self._outgoing, []
                error: BaseException | None = None
                try:
                    # The publisher connection has no socket timeout, so the round trip is bounded here; on
                    # expiry redis-py drops the connection, so a late reply is never read as the next one.
                    async with asyncio.timeout(SOCKET_TIMEOUT):
                        if len(batch) == 1:
                            await self._link.pub_client.publish(batch[0][0], batch[0][1])
                        else:
                            async with self._link.pub_client.pipeline(transaction=False) as pipe:
                                for key, payload, _ in batch:
                                    pipe.publish(key, payload)
                                await pipe.execute()
                except Exception as exc:  # every waiting publisher hears about it
                    error = exc
                unawaited = 0
                for _, _, future in batch:
                    if future is None:
                        unawaited += 1
                    elif future.done():
                        continue  # its publisher was cancelled
                    elif error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
                if error is not None and unawaited:
                    log.warning(
                        "%d events published without waiting did not reach Redis (%s); other processes'"
                        " sockets get those messages from the store when they resume",
                        unawaited,
                        error,
                    )
        except asyncio.CancelledError:
            # Shutting down mid-flight: nobody may wait forever for a publish that will not happen.
            for _, _, future in [*batch, *self._outgoing]:
                if future is not None and not future.done():
                    future.set_exception(RedisError("the broker is shutting down"))
            self._outgoing = []
            raise
        finally:
            self._publisher = None

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Registers the handler even while Redis is down: the reader subscribes it on reconnect."""
        async with self._sub_lock:
            handlers = self._handlers.setdefault(channel, set())
            first = not handlers
            handlers.add(handler)
            if self._pubsub is None:
                return
            if first:
                confirmed = self._expect_confirmation(channel)
                try:
                    await self._pubsub.subscribe(self._link.channel_key(channel))
                except (RedisError, OSError) as error:
                    log.warning("subscribe to %r failed (%s); resubscribing", channel, error)
                    self._force_resubscribe = True
                    return
            else:
                pending = self._confirmations.get(channel)
                if not pending:
                    return
                confirmed = pending[-1]
        try:
            async with asyncio.timeout(SUBSCRIBE_CONFIRM_TIMEOUT):
                await asyncio.shield(confirmed)
        except TimeoutError:
            log.warning("Redis did not confirm the subscription to %r in time", channel)

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        async with self._sub_lock:
            handlers = self._handlers.get(channel)
            if handlers is None or handler not in handlers:
                return
            handlers.discard(handler)
            if handlers:
                return
            del self._handlers[channel]
            if self._pubsub is None:
                return
            try:
                await self._pubsub.unsubscribe(self._link.channel_key(channel))
            except (RedisError, OSError) as error:
                # Messages for a channel without handlers are dropped anyway; a fresh connection drops the
                # stray subscription for good.
                log.warning("unsubscribe from %r failed (%s); resubscribing", channel, error)
                self._force_resubscribe = True

    def _expect_confirmation(self, channel: str) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, deque()).append(future)
        return future

    async def _read_buffered(self, pubsub: PubSub, timeout: float) -> None:
        """Handle the next response from the subscriber connection (waiting up to `timeout` for it) and
        every response already buffered behind it. redis-py's get_message costs a timer, a retry wrapper
        and a dict per message; here a message costs one parse, and a batch one timer."""
        connection = pubsub.connection
        if connection is None:
            raise RedisConnectionError("the subscriber connection is closed")
        # A timeout can only strike while waiting for bytes: a response is either handled or still
        # buffered in the parser, never lost. The connection stays open for the next call.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                response = await connection.read_response(
                    timeout=math.inf, push_request=True, disconnect_on_error=False
                )
                while True:
                    if response[0] == "message":
                        self._on_message(response[1], response[2])
                    else:
                        await self._on_control_response(pubsub, response)
                    if not await connection.can_read():
                        return
                    response = await connection.read_response(
                        timeout=math.inf, push_request=True, disconnect_on_error=False
                    )

    def _channel_of(self, key: str) -> str | None:
        """The channel name of a key made by _channel_key; None for anything else."""
        prefix = self._link.channel_key("")
        return key[len(prefix) :] if key.startswith(prefix) else None

    def _on_message(self, key: str, data: str) -> None:
        if data.startswith(self._link.origin):
            return  # published here: the local handlers already had it
        channel = self._channel_of(key)
        handlers = self._handlers.get(channel) if channel is not None else None
        if not handlers:
            return  # unsubscribed while the message was in flight
        try:
            # Events are JSON objects: a payload that starts with "{" is untagged, from a process of a
            # version before the tags (during a rolling deploy), and is read all the same.
            event = json.loads(data if data.startswith("{") else data[len(self._link.origin) :])
        except ValueError:
            log.warning("dropping a message that is not JSON on %r", channel)
            return
        dispatch(handlers, event)

    async def _on_control_response(self, pubsub: PubSub, response: Any) -> None:
        """(Un)subscribe confirmations go through redis-py, which keeps its list of channels to re-send
        on reconnect; ours are the futures `subscribe` waits on."""
        message = await pubsub.handle_message(response)  # type: ignore[no-untyped-call]
        if message is None or message["type"] != "subscribe":
            return
        channel = self._channel_of(str(message["channel"]))
        if channel is None:
            return
        pending = self._confirmations.get(channel)
        if pending:
            future = pending.popleft()
            if not future.done():
                future.set_result(True)
            if not pending:
                del self._confirmations[channel]

    async def _open_subscriber(self) -> None:
        """A fresh subscriber connection, subscribed (and confirmed) to every channel with handlers."""
        async with self._sub_lock:
            await self._close_subscriber()
            pubsub = self._link.sub_client.pubsub()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                channels = list(self._handlers)
                waiting = [self._expect_confirmation(channel) for channel in channels]
                if channels:
                    await pubsub.subscribe(*(self._link.channel_key(channel) for channel in channels))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + SUBSCRIBE_CONFIRM_TIMEOUT
                # Read the confirmations here, so that "subscriber up" means Redis really has them all;
                # events that arrive in between are dispatched as usual.
                while not all(future.done() for future in waiting):
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise RedisTimeoutError("Redis did not confirm the subscriptions")
                    await self._read_buffered(pubsub, remaining)
            except BaseException:
                await self._close_pubsub(pubsub)
                raise
            self._pubsub = pubsub
            self._sub_connected_at = time.monotonic()
        async with self._sub_changed:
            self._sub_changed.notify_all()

    async def _close_subscriber(self) -> None:
        """Callers hold _sub_lock (or the reader is stopped)."""
        pubsub, self._pubsub = self._pubsub, None
        for pending in self._confirmations.values():
            for future in pending:
                if not future.done():
                    future.set_result(False)  # the next connection subscribes those channels again
        self._confirmations.clear()
        if pubsub is not None:
            await self._close_pubsub(pubsub)

    @staticmethod
    async def _close_pubsub(pubsub: PubSub) -> None:
        # A broken connection has nothing left to close.
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()

    async def _read_forever(self) -> None:
        backoff = Backoff(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY)
        while not self._closing:
            raise_if_cancel_was_swallowed()
            try:
                if self._force_resubscribe:
                    self._force_resubscribe = False
                    async with self._sub_lock:
                        await self._close_subscriber()
                if self._pubsub is None:
                    await self._open_subscriber()
                    backoff.reset()
                pubsub = self._pubsub
                if pubsub is None:
                    continue
                await self._read_buffered(pubsub, READER_POLL)
            except (RedisError, OSError) as error:
                if not self._link.outage:
                    log.warning("Redis subscriber lost (%s); reconnecting", error)
                self._link.note_failure()
                async with self._sub_lock:
                    await self._close_subscriber()
                await asyncio.sleep(backoff.next())
