"""Redis broker: the same contract as `memory.py`, shared by any number of server processes.

Fan-out: Redis pub/sub, not streams. A published event goes to whoever is subscribed at that instant
and is lost for a process that is disconnected; that is fine because events are only notifications. The
store is the source of replay: a socket that missed something resumes with `resume_after` and reads the
messages from SQL. Streams would add consumer groups, trimming and acknowledgements to buy a durability
we already have. Each process holds ONE subscriber connection and ONE reader task; a channel is
subscribed in Redis when its first local handler arrives and unsubscribed when its last one leaves. Each
message is JSON-decoded once and handed to every local handler (`memory.dispatch`). `subscribe` returns
once Redis has confirmed the subscription, so an event published after it returns is delivered.

Local delivery: `publish` hands the event to this process's own handlers at once (in publish order, like
the memory backend) and sends it to Redis for the other processes. The payload starts with this
process's origin tag, so when Redis echoes it back the reader drops it with a prefix check, before any
JSON parsing. A single process thus never waits on Redis to reach its own sockets, and its handlers
still hear their own events while Redis is down (the publish itself still fails, so the caller knows the
other processes may have missed it). The reader handles everything already buffered on its connection
in one go: waiting for data is its only suspension, not one timed poll per message.

Presence: per agent a sorted set of connection ids scored by expiry time, and per site a hash of
`gone_since` per agent. Expiry times are taken from the Redis server clock (`TIME` inside the scripts),
so processes with skewed clocks still agree on who is live. `take_gone_agents` runs one Lua script per
agent that prunes expired sockets, checks the grace period and flips the agent to `offline`; only the
caller whose script did the flip gets the agent, so each gone agent is handed out exactly once.

Routing state, per site: a queue (zset conversation id -> score, plus a hash of the entry's other
fields as JSON), a set of agent ids, per agent a hash (status, capacity, teams, last_assigned_at) and a
set of its conversation ids, and a version counter that EVERY routing mutation increments inside its
own MULTI/EXEC or script. `assign` WATCHes the version, reads the state, calls
`routing_plan.plan_assignments` (the same pure function the memory backend calls, so the rules live in
one place) and applies the pairs in MULTI/EXEC; if anything changed meanwhile, EXEC fails and it retries
with a small jittered back-off. Conflicts cost a re-read, never a wrong assignment: one transaction per
round always wins, so there is progress even under heavy contention (see the tests: 200 concurrent
enqueue+assign from 3 brokers settle with ~1 % retries, no livelock, so no Lua pairing script is needed).
Two things keep that cheap: within one process, assign passes for a site run one at a time (concurrent
ones would only read the same state and conflict), and the state is read on the WATCHing connection by
one read-only script that returns a single JSON string (see _SNAPSHOT).

Resilience. Redis may restart or be flushed; the broker must notice rather than hang:
- commands fail fast (one immediate reconnect attempt, then `ConnectionError` to the caller); a burst
  waits for one of MAX_CONNECTIONS pooled connections instead of opening hundreds;
- the reader task reconnects with exponential back-off (capped at 2 s) and re-subscribes every channel
  that still has local handlers;
- a watchdog checks every second that the sentinel key `{prefix}epoch` still holds the value this
  process last saw. The key is created on connect; if it is missing, the watchdog sets a new value (SET
  NX, so concurrent processes agree on one) and every process, seeing a value it did not know, runs the
  `on_reset` callbacks. The callbacks also run once Redis answers again after an outage seen by the
  watchdog or the reader (events and heartbeats may have been lost even if the data survived), after
  the subscriber is back, so events the rebuild publishes reach this process too;
- `healthy()` is False while Redis does not answer a PING (or the subscriber is down);
- `disconnect()` stops the reader and the watchdog for good, even when Python 3.11 drops a cancel
  (see _raise_if_cancel_was_swallowed), then closes both connection pools.

Requires Redis >= 5 (scripts that call TIME before writing rely on effects replication) and a single
Redis (not Cluster: keys of one operation are not hash-tagged into one slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nameplate.broker.base import Broker, Event, Handler, ResetCallback
from nameplate.broker.memory import dispatch
from nameplate.protocol.vocabulary import Presence
from nameplate.routing.plan import AgentState, QueueEntry, plan_assignments

log = logging.getLogger("nameplate.broker")

T = TypeVar("T")
Write = Callable[[Pipeline], None]

# 2 s: a restarted Redis is picked up within ~2 s, while N processes polling a dead Redis stay cheap.
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 2.0
# 1 s: a flush is noticed within a second, for one tiny script call per second per process.
WATCHDOG_INTERVAL = 1.0
# The reader wakes at least this often to notice a resubscribe the watchdog asked for (one timer per batch
# of buffered messages, not per message).
READER_POLL = 1.0
# Generous: Redis confirms a SUBSCRIBE in microseconds unless something is badly wrong.
SUBSCRIBE_CONFIRM_TIMEOUT = 5.0
# A health probe must answer quickly or the answer is "no".
HEALTH_TIMEOUT = 1.0
# Routing transactions retry on conflicts; past this they raise rather than spin forever.
TRANSACTION_DEADLINE = 10.0
TRANSACTION_BACKOFF_FIRST = 0.002
TRANSACTION_BACKOFF_MAX = 0.05
# Fail fast on a dead server instead of stalling the request path; the watchdog handles recovery.
SOCKET_CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
# Per process. Callers beyond this wait (up to SOCKET_TIMEOUT) for a free connection instead of failing:
# a burst of arrivals queues briefly rather than erroring out or opening hundreds of sockets.
MAX_CONNECTIONS = 64
# A queued publish: Redis key, payload, and the future its publisher waits on (None: nobody waits).
_Outgoing = tuple[str, str, "asyncio.Future[None] | None"]

_LUA_CLOCK = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Lua turns numbers into strings with 14 significant digits; keep microseconds explicitly.
local function fmt(x) return string.format('%.6f', x) end
-- Drop expired sockets; the agent is gone since the last of them expired (like a silent process death).
local function prune(connections, gone, agent_id, t)
  local expired = redis.call('ZRANGEBYSCORE', connections, '-inf', fmt(t), 'WITHSCORES')
  if #expired > 0 then
    local since = tonumber(redis.call('HGET', gone, agent_id) or '0')
    for i = 2, #expired, 2 do since = math.max(since, tonumber(expired[i])) end
    redis.call('HSET', gone, agent_id, fmt(since))
    redis.call('ZREMRANGEBYSCORE', connections, '-inf', fmt(t))
  end
  return redis.call('ZCARD', connections)
end
"""

# KEYS: connections; ARGV: connection id, ttl
_CONNECT = (
    _LUA_CLOCK
    + """
redis.call('ZADD', KEYS[1], fmt(now() + tonumber(ARGV[2])), ARGV[1])
return 1
"""
)

# KEYS: connections of each socket; ARGV: ttl, then the connection id of each socket
_REFRESH = (
    _LUA_CLOCK
    + """
local expires = fmt(now() + tonumber(ARGV[1]))
for i, key in ipairs(KEYS) do redis.call('ZADD', key, expires, ARGV[i + 1]) end
return #KEYS
"""
)

# KEYS: connections, gone; ARGV: connection id, agent id
_DISCONNECT = (
    _LUA_CLOCK
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], fmt(now()))
return 1
"""
)

# KEYS: connections, gone; ARGV: agent id
_LIVE_COUNT = (
    _LUA_CLOCK
    + """
return prune(KEYS[1], KEYS[2], ARGV[1], now())
"""
)

# KEYS: agent, connections, gone, version; ARGV: agent id, grace. Returns 1 to the one caller that wins.
_TAKE_GONE = (
    _LUA_CLOCK
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or status == 'offline' then return 0 end
local t = now()
if prune(KEYS[2], KEYS[3], ARGV[1], t) > 0 then return 0 end
local since = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if since + tonumber(ARGV[2]) > t then return 0 end
redis.call('HSET', KEYS[1], 'status', 'offline')
redis.call('INCR', KEYS[4])
return 1
"""
)

# KEYS: queue, entries, agents; ARGV: key prefix of the site's agents, and what to read ("queue",
# "agents" or "all"). Read-only: the routing state in one round trip, as ONE JSON string, because
# redis-py's pure-Python parser costs ~20 us per reply element: a 200-entry queue as RESP arrays takes
# ~10 ms to parse, as JSON well under 1 ms. Entry fields are spliced in as the JSON we stored (one parse
# in Python, not one per entry); scores stay strings because ZRANGE prints them exactly and cjson would
# round them to 14 digits. Builds agent keys itself, which is fine on a single Redis.
_SNAPSHOT = """
local queue = 'null'
if ARGV[2] ~= 'agents' then
  local fields = {}
  local raw = redis.call('HGETALL', KEYS[2])
  for i = 1, #raw, 2 do fields[raw[i]] = raw[i + 1] end
  local items = {}
  local scored = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #scored, 2 do
    local id = scored[i]
    if fields[id] then
      items[#items + 1] = '[' .. cjson.encode(id) .. ',"' .. scored[i + 1] .. '",' .. fields[id] .. ']'
    end
  end
  queue = '[' .. table.concat(items, ',') .. ']'
end
local agents = 'null'
if ARGV[2] ~= 'queue' then
  local items = {}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local state = redis.call('HGETALL', ARGV[1] .. id .. ':state')
    local conversations = redis.call('SMEMBERS', ARGV[1] .. id .. ':conversations')
    items[#items + 1] = {id, state, conversations}
  end
  if #items > 0 then agents = cjson.encode(items) else agents = '[]' end
end
return '{"queue":' .. queue .. ',"agents":' .. agents .. '}'
"""

# KEYS: counter; ARGV: window in ms, cost. Cost 0 only looks, but like the memory backend it starts the
# window if there is none. A counter that somehow lost its TTL gets one again.
_HIT = """
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# KEYS: epoch; ARGV: a fresh token. Atomic so that processes racing after a flush agree on one value.
_ENSURE_EPOCH = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


class _Backoff:
    """Exponential delays with jitter, so processes that lost Redis together do not retry in lockstep."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = cap
        self._attempt = 0

    def next(self) -> float:
        delay = min(self._cap, self._first * 2**self._attempt)
        self._attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0


def _raise_if_cancel_was_swallowed() -> None:
    """Python 3.11's asyncio.wait_for (used by redis-py while connecting) can drop a cancel that races
    with the connection completing (bpo-42130). The task still says it is being cancelled: honour that,
    or a background loop would outlive disconnect() and hang the event loop's shutdown."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _entry_json(entry: QueueEntry) -> str:
    # The score lives in the zset only, so the two can never disagree.
    return json.dumps(
        {
            "team_id": entry.team_id,
            "preferred_agent_id": entry.preferred_agent_id,
            "only_preferred": entry.only_preferred,
        }
    )


def _entry_from_redis(conversation_id: str, score: float, fields: dict[str, Any]) -> QueueEntry:
    return QueueEntry(
        conversation_id,
        score,
        team_id=fields.get("team_id"),
        preferred_agent_id=fields.get("preferred_agent_id"),
        only_preferred=bool(fields.get("only_preferred", False)),
    )


def _pairs(flat: list[str] | dict[str, str]) -> dict[str, str]:
    """HGETALL as a script sees it, [field, value, ...]; cjson writes an empty one as {}."""
    return dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else {}


def _agent_from_redis(agent_id: str, fields: dict[str, str], conversations: set[str]) -> AgentState | None:
    if "status" not in fields:
        return None
    return AgentState(
        agent_id,
        fields["status"],
        int(fields.get("capacity", "0")),
        conversations=frozenset(conversations),
        teams=frozenset(json.loads(fields.get("teams", "[]"))),
        last_assigned_at=float(fields.get("last_assigned_at", "0")),
    )


class RedisBroker(Broker):
    def __init__(self, url: str, prefix: str = "nameplate:") -> None:
        self._prefix = prefix
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
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        # The subscriber never retries by itself: the reader task owns reconnecting and re-subscribing.
        # Its pool also serves the watchdog and health probes, so that a burst of requests queuing for the
        # main pool is not mistaken for an outage (which would trigger a needless rebuild).
        self._sub_client: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.ConnectionPool.from_url(url, retry=Retry(NoBackoff(), 0), **options)
        )
        # Publishes have a connection of their own (the publisher task has one round trip in flight, so it
        # holds one): they never queue behind a burst of routing commands, and with no socket timeout
        # redis-py writes right away instead of in a task of its own (asyncio.wait_for on Python 3.11),
        # which would cost a turn of a busy event loop per round trip. _publish_queued bounds the round
        # trip itself.
        self._pub_client: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.ConnectionPool.from_url(url, retry=Retry(NoBackoff(), 1), **(options | {"socket_timeout": None}))
        )
        # Every process's tag has the same length, so a receiver strips it without searching.
        self._origin = f"{uuid.uuid4().hex}:"

        self._connect_script = self._redis.register_script(_CONNECT)
        self._refresh_script = self._redis.register_script(_REFRESH)
        self._disconnect_script = self._redis.register_script(_DISCONNECT)
        self._live_count_script = self._redis.register_script(_LIVE_COUNT)
        self._take_gone_script = self._redis.register_script(_TAKE_GONE)
        self._hit_script = self._redis.register_script(_HIT)
        self._epoch_script = self._redis.register_script(_ENSURE_EPOCH)

        self._handlers: dict[str, set[Handler]] = {}
        # One future per SUBSCRIBE sent, in order; Redis confirms them in the same order.
        self._confirmations: dict[str, deque[asyncio.Future[bool]]] = {}
        self._pubsub: PubSub | None = None  # set only while subscribed to every channel in _handlers
        self._sub_lock = asyncio.Lock()
        self._sub_changed = asyncio.Condition()
        self._sub_connected_at = 0.0
        self._force_resubscribe = False

        # One assign pass per site at a time in this process: concurrent passes would read and plan the
        # same state only to conflict on EXEC, and they all compete for the one event loop.
        self._assign_locks: dict[str, asyncio.Lock] = {}

        self._reset_callbacks: list[ResetCallback] = []
        # Publishes wait here while one round trip is in flight, then go together in the next (like the
        # message log's group commit): one command per frame would cost a round trip and a pooled
        # connection each, and two connections could deliver one channel's frames out of order.
        self._outgoing: list[_Outgoing] = []
        self._publisher: asyncio.Task[None] | None = None
        self._epoch: str | None = None
        self._outage = False
        self._last_failure_at = 0.0
        self._reader_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- keys --------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _channel_key(self, channel: str) -> str:
        return self._key("channel", channel)

    def _site_key(self, site_id: str, name: str) -> str:
        return self._key("site", site_id, name)

    def _agent_key(self, site_id: str, agent_id: str, name: str = "state") -> str:
        return self._agent_key_prefix(site_id) + f"{agent_id}:{name}"

    def _agent_key_prefix(self, site_id: str) -> str:
        """_SNAPSHOT appends "<agent id>:state" / ":conversations" to this, like _agent_key does."""
        return self._key("site", site_id, "agent", "")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Fails loudly if Redis is unreachable at start-up: a wrong URL should not look like an outage."""
        if self._reader_task is not None:
            return
        self._closing = False
        try:
            self._epoch = await self._ensure_epoch()
            await self._open_subscriber()
        except (RedisError, OSError) as error:
            await self._close_subscriber()
            raise RedisConnectionError(f"cannot reach Redis for the broker: {error}") from error
        self._reader_task = asyncio.create_task(self._read_forever(), name="nameplate-broker-reader")
        self._watchdog_task = asyncio.create_task(self._watch_forever(), name="nameplate-broker-watchdog")

    async def disconnect(self) -> None:
        self._closing = True
        tasks = [task for task in (self._reader_task, self._watchdog_task) if task is not None]
        self._reader_task = self._watchdog_task = None
        for task in tasks:
            # Cancel until really done: see _raise_if_cancel_was_swallowed.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            if not task.cancelled() and task.exception() is not None:
                log.error("broker task %s failed", task.get_name(), exc_info=task.exception())
        async with self._sub_lock:
            await self._close_subscriber()
        await self._sub_client.aclose()
        await self._pub_client.aclose()
        await self._redis.aclose()

    async def healthy(self) -> bool:
        if self._reader_task is not None and self._pubsub is None:
            return False  # commands may work, but fan-out does not
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                return bool(await self._sub_client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    def on_reset(self, callback: ResetCallback) -> None:
        self._reset_callbacks.append(callback)

    async def _ensure_epoch(self) -> str:
        epoch = await self._epoch_script(keys=[self._key("epoch")], args=[uuid.uuid4().hex], client=self._sub_client)
        return str(epoch)

    def _note_failure(self) -> None:
        self._outage = True
        self._last_failure_at = time.monotonic()

    async def _watch_forever(self) -> None:
        backoff = _Backoff(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY)
        while not self._closing:
            _raise_if_cancel_was_swallowed()
            try:
                epoch = await self._ensure_epoch()
            except (RedisError, OSError) as error:
                if not self._outage:
                    log.warning("Redis unreachable (%s); the broker keeps retrying", error)
                self._note_failure()
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            flushed = epoch != self._epoch
            if flushed or self._outage:
                # Cleared before the callbacks run: an outage during them must trigger another rebuild.
                self._epoch = epoch
                self._outage = False
                await self._recover("was flushed" if flushed else "may have missed events during an outage")
            await asyncio.sleep(WATCHDOG_INTERVAL)

    async def _recover(self, why: str) -> None:
        await self._wait_for_fresh_subscriber()
        log.warning("Redis state %s; running %d reset callback(s)", why, len(self._reset_callbacks))
        for callback in list(self._reset_callbacks):
            try:
                await callback()
            except Exception:
                log.exception("broker reset callback failed")

    async def _wait_for_fresh_subscriber(self) -> None:
        """The rebuild publishes events; this process must be subscribed again before it starts."""
        since = self._last_failure_at
        if self._pubsub is not None and self._sub_connected_at <= since:
            # The subscriber never noticed the outage (e.g. a silent network partition): its socket may
            # be half-open. Ask the reader to start over rather than trust it.
            self._force_resubscribe = True
        try:
            async with asyncio.timeout(2 * SUBSCRIBE_CONFIRM_TIMEOUT), self._sub_changed:
                await self._sub_changed.wait_for(lambda: self._pubsub is not None and self._sub_connected_at > since)
        except TimeoutError:
            log.warning("the broker subscriber is not back yet; running reset callbacks anyway")

    # -- fan-out -----------------------------------------------------------------------------------
    async def publish(self, channel: str, event: Event) -> None:
        await asyncio.gather(*self._queue_publish([(channel, event)], wait=True))

    async def publish_many(self, events: list[tuple[str, Event]]) -> None:
        await asyncio.gather(*self._queue_publish(events, wait=True))

    def publish_soon(self, channel: str, event: Event) -> None:
        self._queue_publish([(channel, event)], wait=False)

    def _queue_publish(self, events: list[tuple[str, Event]], wait: bool) -> list[asyncio.Future[None]]:
        """Deliver locally and queue for Redis; with `wait`, one future per event, done once Redis has it."""
        # Encode all first: an event that cannot be sent must not reach anyone, here or elsewhere.
        payloads = [self._origin + json.dumps(event, separators=(",", ":")) for _, event in events]
        loop = asyncio.get_running_loop()
        futures = []
        for (channel, event), payload in zip(events, payloads, strict=True):
            future: asyncio.Future[None] | None = None
            if wait:
                future = loop.create_future()
                futures.append(future)
            self._outgoing.append((self._channel_key(channel), payload, future))
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
                            await self._pub_client.publish(batch[0][0], batch[0][1])
                        else:
                            async with self._pub_client.pipeline(transaction=False) as pipe:
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
                    await self._pubsub.subscribe(self._channel_key(channel))
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
                await self._pubsub.unsubscribe(self._channel_key(channel))
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
        prefix = self._channel_key("")
        return key[len(prefix) :] if key.startswith(prefix) else None

    def _on_message(self, key: str, data: str) -> None:
        if data.startswith(self._origin):
            return  # published here: the local handlers already had it
        channel = self._channel_of(key)
        handlers = self._handlers.get(channel) if channel is not None else None
        if not handlers:
            return  # unsubscribed while the message was in flight
        try:
            # Events are JSON objects: a payload that starts with "{" is untagged, from a process of a
            # version before the tags (during a rolling deploy), and is read all the same.
            event = json.loads(data if data.startswith("{") else data[len(self._origin) :])
        except ValueError:
            log.warning("dropping a message that is not JSON on %r", channel)
            return
        dispatch(handlers, event)

    async def _on_control_response(self, pubsub: PubSub, response: Any) -> None:
        """(Un)subscribe confirmations go through redis-py, which keeps its list of channels to re-send
        on reconnect; ours are the futures `subscribe` waits on."""
        message = await pubsub.handle_message(response)
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
            pubsub = self._sub_client.pubsub()
            try:
                await pubsub.connect()
                channels = list(self._handlers)
                waiting = [self._expect_confirmation(channel) for channel in channels]
                if channels:
                    await pubsub.subscribe(*(self._channel_key(channel) for channel in channels))
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
        backoff = _Backoff(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY)
        while not self._closing:
            _raise_if_cancel_was_swallowed()
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
                if not self._outage:
                    log.warning("Redis subscriber lost (%s); reconnecting", error)
                self._note_failure()
                async with self._sub_lock:
                    await self._close_subscriber()
                await asyncio.sleep(backoff.next())

    # -- presence ----------------------------------------------------------------------------------
    async def agent_connected(self, site_id: str, agent_id: str, connection_id: str, ttl: float) -> None:
        await self._connect_script(keys=[self._agent_key(site_id, agent_id, "connections")], args=[connection_id, ttl])

    async def agent_disconnected(self, site_id: str, agent_id: str, connection_id: str) -> None:
        await self._disconnect_script(
            keys=[self._agent_key(site_id, agent_id, "connections"), self._site_key(site_id, "gone")],
            args=[connection_id, agent_id],
        )

    async def refresh_connections(self, connections: list[tuple[str, str, str]], ttl: float) -> None:
        if not connections:
            return
        await self._refresh_script(
            keys=[self._agent_key(site_id, agent_id, "connections") for site_id, agent_id, _ in connections],
            args=[ttl, *(connection_id for _, _, connection_id in connections)],
        )

    async def live_connection_count(self, site_id: str, agent_id: str) -> int:
        count = await self._live_count_script(
            keys=[self._agent_key(site_id, agent_id, "connections"), self._site_key(site_id, "gone")],
            args=[agent_id],
        )
        return int(count)

    async def take_gone_agents(self, grace: float) -> list[tuple[str, str]]:
        sites = sorted(await self._redis.smembers(self._key("sites")))
        if not sites:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for site_id in sites:
                pipe.smembers(self._site_key(site_id, "agents"))
            members: list[set[str]] = await pipe.execute()
        candidates = [
            (site_id, agent_id)
            for site_id, agent_ids in zip(sites, members, strict=True)
            for agent_id in sorted(agent_ids)
        ]
        if not candidates:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for site_id, agent_id in candidates:
                await self._take_gone_script(
                    keys=[
                        self._agent_key(site_id, agent_id),
                        self._agent_key(site_id, agent_id, "connections"),
                        self._site_key(site_id, "gone"),
                        self._site_key(site_id, "version"),
                    ],
                    args=[agent_id, grace],
                    client=pipe,
                )
            won = await pipe.execute()
        return [candidate for candidate, result in zip(candidates, won, strict=True) if int(result) == 1]

    # -- routing state -----------------------------------------------------------------------------
    async def _transact(self, site_id: str, plan: Callable[[Pipeline], Awaitable[tuple[T, Write | None]]]) -> T:
        """Optimistic transaction on the site's version. `plan` reads through the given pipeline (WATCH
        mode: commands run at once, on the WATCHing connection, so a transaction never holds two pooled
        connections) and returns its result plus the writes to apply, or None when there is nothing to
        write (the reads are then a consistent answer as they stand). Retries with jittered back-off
        when another process changed the site in between; gives up after TRANSACTION_DEADLINE."""
        version = self._site_key(site_id, "version")
        deadline = time.monotonic() + TRANSACTION_DEADLINE
        backoff = _Backoff(TRANSACTION_BACKOFF_FIRST, TRANSACTION_BACKOFF_MAX)
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(version)
                    result, write = await plan(pipe)
                    if write is None:
                        return result
                    pipe.multi()
                    write(pipe)
                    pipe.incr(version)
                    await pipe.execute()
                    return result
                except WatchError:
                    # Also raised when the connection died while WATCHing; the retry then meets the
                    # outage head-on and raises ConnectionError.
                    if time.monotonic() > deadline:
                        raise
            await asyncio.sleep(backoff.next())

    async def _snapshot(
        self, client: aioredis.Redis | Pipeline, site_id: str, parts: str = "all"
    ) -> tuple[list[QueueEntry], list[AgentState]]:
        """The site's queue (in order) and agents (by id). With a WATCHing pipeline as `client`, the read
        runs on the WATCHing connection. EVAL rather than EVALSHA: no NOSCRIPT dance inside a WATCH, and
        Redis caches the compiled script either way."""
        reply = await client.eval(
            _SNAPSHOT,
            3,
            self._site_key(site_id, "queue"),
            self._site_key(site_id, "entries"),
            self._site_key(site_id, "agents"),
            self._agent_key_prefix(site_id),
            parts,
        )
        snapshot = json.loads(reply)
        queue = [_entry_from_redis(cid, float(score), fields) for cid, score, fields in snapshot.get("queue") or []]
        agents = []
        for agent_id, state, conversations in snapshot.get("agents") or []:
            agent = _agent_from_redis(agent_id, _pairs(state), set(conversations or []))
            if agent is not None:
                agents.append(agent)
        agents.sort(key=lambda agent: agent.agent_id)
        return queue, agents

    def _write_entry(self, pipe: Pipeline, site_id: str, entry: QueueEntry, score: float) -> None:
        pipe.zadd(self._site_key(site_id, "queue"), {entry.conversation_id: score})
        pipe.hset(self._site_key(site_id, "entries"), entry.conversation_id, _entry_json(entry))

    def _ensure_agent(self, pipe: Pipeline, site_id: str, agent_id: str) -> None:
        """An unknown agent gets an offline, zero-capacity record (as in the memory backend)."""
        key = self._agent_key(site_id, agent_id)
        defaults = {"status": Presence.offline, "capacity": 0, "teams": "[]", "last_assigned_at": 0.0}
        for name, value in defaults.items():
            pipe.hsetnx(key, name, value)
        pipe.sadd(self._site_key(site_id, "agents"), agent_id)
        pipe.sadd(self._key("sites"), site_id)

    async def set_agent_status(
        self, site_id: str, agent_id: str, status: str, capacity: int, teams: frozenset[str]
    ) -> None:
        key = self._agent_key(site_id, agent_id)

        async def plan(pipe: Pipeline) -> tuple[None, Write]:
            current, last = await pipe.hmget(key, ["status", "last_assigned_at"])
            now = time.time()
            # Coming online counts as "just got a chat", so the longest-idle rule stays fair to others.
            became_available = current is None or (status == Presence.available and current != Presence.available)
            last_assigned_at = now if became_available else float(last or 0.0)

            def write(pipe: Pipeline) -> None:
                pipe.hset(
                    key,
                    mapping={
                        "status": status,
                        "capacity": capacity,
                        "teams": json.dumps(sorted(teams)),
                        "last_assigned_at": last_assigned_at,
                    },
                )
                pipe.sadd(self._site_key(site_id, "agents"), agent_id)
                pipe.sadd(self._key("sites"), site_id)

            return None, write

        await self._transact(site_id, plan)

    async def agents(self, site_id: str) -> list[AgentState]:
        _, agents = await self._snapshot(self._redis, site_id, "agents")
        return agents

    async def enqueue(self, site_id: str, entry: QueueEntry, front: bool = False) -> None:
        if not front:
            async with self._redis.pipeline(transaction=True) as pipe:
                self._write_entry(pipe, site_id, entry, entry.score)
                pipe.incr(self._site_key(site_id, "version"))
                await pipe.execute()
            return

        async def plan(pipe: Pipeline) -> tuple[None, Write]:
            lowest = await pipe.zrange(self._site_key(site_id, "queue"), 0, 0, withscores=True)
            score = min(float(lowest[0][1]) if lowest else entry.score, entry.score) - 1.0
            return None, lambda pipe: self._write_entry(pipe, site_id, entry, score)

        await self._transact(site_id, plan)

    async def dequeue(self, site_id: str, conversation_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._site_key(site_id, "queue"), conversation_id)
            pipe.hdel(self._site_key(site_id, "entries"), conversation_id)
            pipe.incr(self._site_key(site_id, "version"))
            removed, _, _ = await pipe.execute()
        return bool(removed)

    async def queue(self, site_id: str) -> list[QueueEntry]:
        queue, _ = await self._snapshot(self._redis, site_id, "queue")
        return queue

    async def assign(self, site_id: str, now: float) -> list[tuple[str, str]]:
        async def plan(pipe: Pipeline) -> tuple[list[tuple[str, str]], Write | None]:
            queue, agents = await self._snapshot(pipe, site_id, "all")
            pairs = plan_assignments(queue, agents, now)
            if not pairs:
                return pairs, None

            def write(pipe: Pipeline) -> None:
                for conversation_id, agent_id in pairs:
                    pipe.zrem(self._site_key(site_id, "queue"), conversation_id)
                    pipe.hdel(self._site_key(site_id, "entries"), conversation_id)
                    pipe.sadd(self._agent_key(site_id, agent_id, "conversations"), conversation_id)
                    pipe.hset(self._agent_key(site_id, agent_id), "last_assigned_at", now)

            return pairs, write

        lock = self._assign_locks.setdefault(site_id, asyncio.Lock())
        async with lock:
            return await self._transact(site_id, plan)

    async def attach(self, site_id: str, agent_id: str, conversation_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._site_key(site_id, "queue"), conversation_id)
            pipe.hdel(self._site_key(site_id, "entries"), conversation_id)
            self._ensure_agent(pipe, site_id, agent_id)
            pipe.sadd(self._agent_key(site_id, agent_id, "conversations"), conversation_id)
            pipe.incr(self._site_key(site_id, "version"))
            await pipe.execute()

    async def detach(self, site_id: str, agent_id: str, conversation_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(self._agent_key(site_id, agent_id, "conversations"), conversation_id)
            pipe.incr(self._site_key(site_id, "version"))
            await pipe.execute()

    async def replace_site_state(
        self, site_id: str, queue: list[QueueEntry], conversations_by_agent: dict[str, set[str]]
    ) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._site_key(site_id, "queue"), self._site_key(site_id, "entries"))
            for entry in queue:
                self._write_entry(pipe, site_id, entry, entry.score)
            for agent_id, conversations in conversations_by_agent.items():
                self._ensure_agent(pipe, site_id, agent_id)
                key = self._agent_key(site_id, agent_id, "conversations")
                pipe.delete(key)
                if conversations:
                    pipe.sadd(key, *conversations)
            pipe.incr(self._site_key(site_id, "version"))
            await pipe.execute()

    # -- counters ----------------------------------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> tuple[bool, float]:
        count, ttl_ms = await self._hit_script(keys=[self._key("hit", key)], args=[max(1, round(window * 1000)), cost])
        return int(count) <= limit, max(0.0, int(ttl_ms) / 1000)
