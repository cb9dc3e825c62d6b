"""Redis broker: the same four contracts as `memory/`, shared by any number of server processes.

`link.py` is the connection every part shares; `fanout.py`, `presence.py`, `routing.py` and `counters.py`
implement one contract each. This module keeps the broker's lifecycle and its recovery.

Resilience. Redis may restart or be flushed; the broker must notice rather than hang:
- commands fail fast (see link.py);
- the fan-out's reader reconnects with back-off and re-subscribes every channel that still has handlers;
- a watchdog checks every second that the sentinel key `{prefix}epoch` still holds the value this process
  last saw. The key is created on connect; if it is missing, the watchdog sets a new value (SET NX, so
  concurrent processes agree on one) and every process, seeing a value it did not know, runs the
  `on_reset` callbacks. The callbacks also run once Redis answers again after an outage seen by the
  watchdog or the reader (events and heartbeats may have been lost even if the data survived), after the
  subscriber is back, so events the rebuild publishes reach this process too;
- `healthy()` is False while Redis does not answer a PING (or the subscriber is down);
- `disconnect()` stops the reader and the watchdog for good, even when Python 3.11 drops a cancel (see
  link.raise_if_cancel_was_swallowed), then closes the connection pools.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from nameplate.broker.base import Broker
from nameplate.broker.contracts import ResetCallback
from nameplate.broker.redis.counters import RedisCounters
from nameplate.broker.redis.fanout import RedisFanOut
from nameplate.broker.redis.link import (
    RECONNECT_FIRST_DELAY,
    RECONNECT_MAX_DELAY,
    Backoff,
    RedisLink,
    cancel_for_good,
    raise_if_cancel_was_swallowed,
)
from nameplate.broker.redis.presence import RedisPresence
from nameplate.broker.redis.routing import RedisRoutingState

log = logging.getLogger("nameplate.broker")

# 1 s: a flush is noticed within a second, for one tiny script call per second per process.
WATCHDOG_INTERVAL = 1.0
# A health probe must answer quickly or the answer is "no".
HEALTH_TIMEOUT = 1.0

# KEYS: epoch; ARGV: a fresh token. Atomic so that processes racing after a flush agree on one value.
_ENSURE_EPOCH = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


class RedisBroker(Broker):
    def __init__(self, url: str, prefix: str = "nameplate:") -> None:
        self._link = link = RedisLink(url, prefix)
        self._fanout = RedisFanOut(link)
        super().__init__(self._fanout, RedisPresence(link), RedisRoutingState(link), RedisCounters(link))
        self._epoch_script = link.redis.register_script(_ENSURE_EPOCH)
        self._reset_callbacks: list[ResetCallback] = []
        self._epoch: str | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._closing = False

    async def connect(self) -> None:
        """Fails loudly if Redis is unreachable at start-up: a wrong URL should not look like an outage."""
        if self._fanout.started:
            return
        self._closing = False
        try:
            self._epoch = await self._ensure_epoch()
            await self._fanout.start()
        except (RedisError, OSError) as error:
            raise RedisConnectionError(f"cannot reach Redis for the broker: {error}") from error
        self._watchdog_task = asyncio.create_task(self._watch_forever(), name="nameplate-broker-watchdog")

    async def disconnect(self) -> None:
        self._closing = True
        watchdog, self._watchdog_task = self._watchdog_task, None
        if watchdog is not None:
            await cancel_for_good(watchdog)
        await self._fanout.stop()
        await self._link.aclose()

    async def healthy(self) -> bool:
        if self._fanout.started and not self._fanout.subscribed:
            return False  # commands may work, but fan-out does not
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                return bool(await self._link.sub_client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    def on_reset(self, callback: ResetCallback) -> None:
        self._reset_callbacks.append(callback)

    async def _ensure_epoch(self) -> str:
        epoch = await self._epoch_script(
            keys=[self._link.key("epoch")], args=[uuid.uuid4().hex], client=self._link.sub_client
        )
        return str(epoch)

    async def _watch_forever(self) -> None:
        backoff = Backoff(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY)
        link = self._link
        while not self._closing:
            raise_if_cancel_was_swallowed()
            try:
                epoch = await self._ensure_epoch()
            except (RedisError, OSError) as error:
                if not link.outage:
                    log.warning("Redis unreachable (%s); the broker keeps retrying", error)
                link.note_failure()
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            flushed = epoch != self._epoch
            if flushed or link.outage:
                # Cleared before the callbacks run: an outage during them must trigger another rebuild.
                self._epoch = epoch
                link.outage = False
                await self._recover("was flushed" if flushed else "may have missed events during an outage")
            await asyncio.sleep(WATCHDOG_INTERVAL)

    async def _recover(self, why: str) -> None:
        await self._fanout.wait_for_fresh_subscriber()
        log.warning("Redis state %s; running %d reset callback(s)", why, len(self._reset_callbacks))
        for callback in list(self._reset_callbacks):
            try:
                await callback()
            except Exception:
                log.exception("broker reset callback failed")
