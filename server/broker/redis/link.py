"""The Redis connection every part of the broker shares: three clients, the key scheme, failure bookkeeping.

Commands fail fast (one immediate reconnect attempt, then `ConnectionError` to the caller); a burst waits
for one of MAX_CONNECTIONS pooled connections instead of opening hundreds. Requires Redis >= 5 (scripts
that call TIME before writing rely on effects replication) and a single Redis (not Cluster: keys of one
operation are not hash-tagged into one slot).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("nameplate.broker")

# 2 s: a restarted Redis is picked up within ~2 s, while N processes polling a dead Redis stay cheap.
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 2.0
# Fail fast on a dead server instead of stalling the request path; the watchdog handles recovery.
SOCKET_CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
# Per process. Callers beyond this wait (up to SOCKET_TIMEOUT) for a free connection instead of failing:
# a burst of arrivals queues briefly rather than erroring out or opening hundreds of sockets.
MAX_CONNECTIONS = 64


class Backoff:
    """Exponential delays with jitter, so processes that lost Redis together do not retry in lockstep."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = cap
        self._attempt = 0

    def next(self) -> float:
        delay: float = min(self._cap, self._first * 2.0**self._attempt)
        self._attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0


def raise_if_cancel_was_swallowed() -> None:
    """Python 3.11's asyncio.wait_for (used by redis-py while connecting) can drop a cancel that races
    with the connection completing (bpo-42130). The task still says it is being cancelled: honour that,
    or a background loop would outlive disconnect() and hang the event loop's shutdown."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_for_good(task: asyncio.Task[None]) -> None:
    """Cancel until really done (see raise_if_cancel_was_swallowed); a failure is logged, not raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.error("broker task %s failed", task.get_name(), exc_info=task.exception())


class RedisLink:
    def __init__(self, url: str, prefix: str = "nameplate:") -> None:
        self.prefix = prefix
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
            "socket_timeout": SOCKET_TIMEOUT,
        }
        # One quick retry heals a pooled connection that died with a Redis restart; more would only
        # make callers wait during a real outage.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            **options,
        )
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        # The subscriber never retries by itself: the reader task owns reconnecting and re-subscribing.
        # Its pool also serves the watchdog and health probes, so that a burst of requests queuing for the
        # main pool is not mistaken for an outage (which would trigger a needless rebuild).
        self.sub_client: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.ConnectionPool.from_url(url, retry=Retry(NoBackoff(), 0), **options)
        )
        # Publishes have a connection of their own (the publisher task has one round trip in flight, so it
        # holds one): they never queue behind a burst of routing commands, and with no socket timeout
        # redis-py writes right away instead of in a task of its own (asyncio.wait_for on Python 3.11),
        # which would cost a turn of a busy event loop per round trip. The fan-out bounds the round trip.
        self.pub_client: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.ConnectionPool.from_url(url, retry=Retry(NoBackoff(), 1), **(options | {"socket_timeout": None}))
        )
        # Every process's tag has the same length, so a receiver strips it without searching.
        self.origin = f"{uuid.uuid4().hex}:"
        # Set by whichever part first sees Redis fail; the watchdog clears it once Redis answers again.
        self.outage = False
        self.last_failure_at = 0.0

    def note_failure(self) -> None:
        self.outage = True
        self.last_failure_at = time.monotonic()

    async def aclose(self) -> None:
        await self.sub_client.aclose()
        await self.pub_client.aclose()
        await self.redis.aclose()

    # -- keys --------------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def channel_key(self, channel: str) -> str:
        return self.key("channel", channel)

    def site_key(self, site_id: str, name: str) -> str:
        return self.key("site", site_id, name)

    def agent_key(self, site_id: str, agent_id: str, name: str = "state") -> str:
        return self.agent_key_prefix(site_id) + f"{agent_id}:{name}"

    def agent_key_prefix(self, site_id: str) -> str:
        """The routing snapshot script appends "<agent id>:state" / ":conversations", like agent_key does."""
        return self.key("site", site_id, "agent", "")
