"""One contract suite for every broker backend, plus what only Redis can show.

The `broker` fixture runs each contract test against the in-process `MemoryBroker` and a `RedisBroker`
on the real Redis (unique key prefix per test, keys deleted afterwards; never FLUSHALL the shared
server). The Redis-only tests cover what needs several processes (simulated by several brokers on one
prefix) or a Redis we may break: those start a private `redis-server` on a free port.

Waiting is always "poll or await an event, with a deadline": fan-out through Redis is asynchronous, so
a test that asserts "nothing arrived" first waits for a later marker event to arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from nameplate.broker.base import Broker, Event
from nameplate.broker.memory import MemoryBroker
from nameplate.broker.redis import RedisBroker
from nameplate.routing.plan import AgentState, QueueEntry
from tests.services import REDIS_URL, require_redis, unique_prefix

SITE = "site-1"
# Generous: a loaded CI machine, not the code, decides how long Redis round trips take.
DEADLINE = 10.0


# -- helpers -----------------------------------------------------------------------------------------
class Inbox:
    """A handler that records events and lets a test await them."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[Event] = []
        self._fail = fail
        self._arrived = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()
        if self._fail:
            raise RuntimeError("a broken handler")

    async def wait_for(self, count: int = 1, within: float = DEADLINE) -> list[Event]:
        async with asyncio.timeout(within):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events


async def eventually(check: Callable[[], Awaitable[bool]], within: float = DEADLINE, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {within} s")
        await asyncio.sleep(0.02)


async def purge(prefix: str, url: str = REDIS_URL) -> None:
    client = aioredis.from_url(url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def by_id(agents: list[AgentState]) -> dict[str, AgentState]:
    return {agent.agent_id: agent for agent in agents}


def entry(conversation_id: str, score: float, **fields: Any) -> QueueEntry:
    return QueueEntry(conversation_id, score, **fields)


async def queue_ids(broker: Broker, site_id: str = SITE) -> list[str]:
    return [e.conversation_id for e in await broker.routing.queue(site_id)]


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    if request.param == "memory":
        memory = MemoryBroker()
        await memory.connect()
        yield memory
        await memory.disconnect()
        return
    require_redis()
    prefix = unique_prefix("contract-")
    redis_broker = RedisBroker(REDIS_URL, prefix=prefix)
    await redis_broker.connect()
    try:
        yield redis_broker
    finally:
        await redis_broker.disconnect()
        await purge(prefix)


@pytest.fixture
async def redis_brokers() -> AsyncIterator[Callable[..., Awaitable[RedisBroker]]]:
    """A factory of connected RedisBrokers sharing one prefix, like processes sharing one Redis."""
    require_redis()
    shared = unique_prefix("multi-")
    made: list[RedisBroker] = []
    prefixes = {shared}

    async def make(prefix: str | None = None) -> RedisBroker:
        prefixes.add(prefix or shared)
        broker = RedisBroker(REDIS_URL, prefix=prefix or shared)
        await broker.connect()
        made.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in made:
            await broker.disconnect()
        for prefix in prefixes:
            await purge(prefix)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A throwaway redis-server we are allowed to flush, kill and restart."""

    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self._directory,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def answers() -> bool:
            client = aioredis.from_url(self.url)
            try:
                return bool(await client.ping())
            except (RedisConnectionError, OSError):
                return False
            finally:
                await client.aclose()

        await eventually(answers, what=f"private redis-server on port {self.port}")

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None


@contextlib.asynccontextmanager
async def publisher_and_listener(
    url: str,
    prefix: str,
) -> AsyncIterator[tuple[RedisBroker, RedisBroker, Inbox, Inbox, aioredis.Redis]]:
    """Two processes on one Redis, each with an inbox on conversation:1, and an admin client to pause it."""
    shared = unique_prefix(prefix)
    publisher, other = RedisBroker(url, prefix=shared), RedisBroker(url, prefix=shared)
    admin = aioredis.from_url(url, decode_responses=True)
    try:
        for broker in (publisher, other):
            await broker.connect()
        here, there = Inbox(), Inbox()
        await publisher.fanout.subscribe("conversation:1", here)
        await other.fanout.subscribe("conversation:1", there)
        yield publisher, other, here, there, admin
    finally:
        await admin.aclose()
        for broker in (publisher, other):
            await broker.disconnect()


@pytest.fixture
async def private_redis(tmp_path: Any) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        reason = "redis-server binary not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(f"SKIPPED LOUDLY: {reason}")
    server = PrivateRedis(str(tmp_path))
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


# == contract: fan-out ===============================================================================
async def test_publish_reaches_every_local_handler_of_the_channel_only(broker: Broker) -> None:
    first, second, elsewhere = Inbox(), Inbox(), Inbox()
    await broker.fanout.subscribe("conversation:1", first)
    await broker.fanout.subscribe("conversation:1", second)
    await broker.fanout.subscribe("conversation:2", elsewhere)
    event = {"type": "message", "seq": 7, "body": "Hi, Jane", "author": {"name": "Jane"}, "tags": [1, None]}

    await broker.fanout.publish("conversation:1", event)
    await broker.fanout.publish("conversation:2", {"type": "marker"})

    assert await first.wait_for() == [event]
    assert await second.wait_for() == [event]
    # The marker was published after the event, so had the event leaked here it would have come first.
    assert await elsewhere.wait_for() == [{"type": "marker"}]


async def test_events_on_one_channel_arrive_in_publish_order(broker: Broker) -> None:
    inbox = Inbox()
    await broker.fanout.subscribe("conversation:1", inbox)
    for seq in range(50):
        await broker.fanout.publish("conversation:1", {"seq": seq})
    events = await inbox.wait_for(50)
    assert [event["seq"] for event in events] == list(range(50))


async def test_publish_soon_delivers_here_before_it_returns_in_order_with_publish(broker: Broker) -> None:
    inbox = Inbox()
    await broker.fanout.subscribe("conversation:1", inbox)
    await broker.fanout.publish("conversation:1", {"seq": 0})
    broker.fanout.publish_soon("conversation:1", {"seq": 1})
    # Nothing was awaited since: the local handler had it during the call.
    assert inbox.events == [{"seq": 0}, {"seq": 1}]
    await broker.fanout.publish("conversation:1", {"seq": 2})
    assert await inbox.wait_for(3) == [{"seq": 0}, {"seq": 1}, {"seq": 2}]


async def test_unsubscribed_handler_gets_nothing_and_others_still_do(broker: Broker) -> None:
    leaving, staying = Inbox(), Inbox()
    await broker.fanout.subscribe("room", leaving)
    await broker.fanout.subscribe("room", staying)
    await broker.fanout.unsubscribe("room", leaving)
    await broker.fanout.unsubscribe("room", Inbox())  # never subscribed: a no-op
    await broker.fanout.unsubscribe("no-such-channel", staying)

    await broker.fanout.publish("room", {"n": 1})
    assert await staying.wait_for() == [{"n": 1}]
    assert leaving.events == []

    # The last handler leaving and a new one arriving must still work (Redis: UNSUBSCRIBE, SUBSCRIBE).
    await broker.fanout.unsubscribe("room", staying)
    newcomer = Inbox()
    await broker.fanout.subscribe("room", newcomer)
    await broker.fanout.publish("room", {"n": 2})
    assert await newcomer.wait_for() == [{"n": 2}]
    assert staying.events == [{"n": 1}]
    assert leaving.events == []


async def test_a_raising_handler_does_not_stop_the_others(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    broken = Inbox(fail=True)
    healthy = [Inbox() for _ in range(3)]
    await broker.fanout.subscribe("room", broken)
    for inbox in healthy:
        await broker.fanout.subscribe("room", inbox)

    with caplog.at_level(logging.ERROR, logger="nameplate.broker"):
        await broker.fanout.publish("room", {"n": 1})
        await broker.fanout.publish("room", {"n": 2})
        for inbox in healthy:
            assert await inbox.wait_for(2) == [{"n": 1}, {"n": 2}]
        assert await broken.wait_for(2) == [{"n": 1}, {"n": 2}]
    assert sum("broker handler failed" in record.getMessage() for record in caplog.records) == 2


# == contract: presence ==============================================================================
async def test_live_connections_follow_connect_and_disconnect(broker: Broker) -> None:
    assert await broker.presence.live_connection_count(SITE, "jane") == 0
    await broker.presence.agent_connected(SITE, "jane", "tab-1", ttl=60)
    await broker.presence.agent_connected(SITE, "jane", "tab-2", ttl=60)
    await broker.presence.agent_connected(SITE, "omar", "tab-1", ttl=60)
    assert await broker.presence.live_connection_count(SITE, "jane") == 2
    await broker.presence.agent_disconnected(SITE, "jane", "tab-1")
    await broker.presence.agent_disconnected(SITE, "jane", "tab-1")  # twice: harmless
    assert await broker.presence.live_connection_count(SITE, "jane") == 1
    assert await broker.presence.live_connection_count(SITE, "omar") == 1
    assert await broker.presence.live_connection_count("other-site", "jane") == 0


async def test_connections_expire_unless_refreshed(broker: Broker) -> None:
    await broker.presence.agent_connected(SITE, "jane", "tab-1", ttl=0.3)
    await broker.presence.refresh_connections([(SITE, "jane", "tab-1")], ttl=60)
    # Connected after Jane's first expiry and with the same short ttl: once it has expired, Jane's
    # original ttl has too, so Jane is only still live thanks to the refresh.
    await broker.presence.agent_connected(SITE, "omar", "tab-1", ttl=0.3)
    assert await broker.presence.live_connection_count(SITE, "omar") == 1

    async def omar_expired() -> bool:
        return await broker.presence.live_connection_count(SITE, "omar") == 0

    await eventually(omar_expired, what="expiry of an unrefreshed connection")
    assert await broker.presence.live_connection_count(SITE, "jane") == 1
    await broker.presence.refresh_connections([], ttl=60)  # an idle process heartbeats nothing


async def test_take_gone_agents_waits_for_grace_and_returns_each_agent_once(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 3, frozenset())
    await broker.routing.attach(SITE, "jane", "conv-1")
    await broker.presence.agent_connected(SITE, "jane", "tab-1", ttl=60)
    assert await broker.presence.take_gone_agents(grace=0) == []  # live

    await broker.presence.agent_disconnected(SITE, "jane", "tab-1")
    left_at = time.time()
    assert await broker.presence.take_gone_agents(grace=60) == []  # within grace: a page reload, not a departure

    grace = 0.3
    taken: list[tuple[str, str]] = []

    async def gone_after_grace() -> bool:
        taken.extend(await broker.presence.take_gone_agents(grace=grace))
        return bool(taken)

    await eventually(gone_after_grace, what="the grace period to pass")
    assert time.time() - left_at >= grace - 0.05
    assert taken == [(SITE, "jane")]
    assert await broker.presence.take_gone_agents(grace=0) == []  # handed out once only

    jane = by_id(await broker.routing.agents(SITE))["jane"]
    assert jane.status == "offline"
    assert jane.conversations == frozenset({"conv-1"})  # kept, so the caller can requeue them


async def test_take_gone_agents_skips_live_and_offline_agents_and_reconnects(broker: Broker) -> None:
    statuses = {"live": "available", "off": "offline", "away": "away", "back": "available"}
    for agent_id, status in statuses.items():
        await broker.routing.set_agent_status(SITE, agent_id, status, 2, frozenset())
    await broker.presence.agent_connected(SITE, "live", "tab", ttl=60)
    await broker.presence.agent_connected(SITE, "back", "tab-1", ttl=60)
    await broker.presence.agent_disconnected(SITE, "back", "tab-1")
    await broker.presence.agent_connected(SITE, "back", "tab-2", ttl=60)  # reconnected within grace

    # "away" has no socket at all: away still means "not offline", so they are gone.
    assert await broker.presence.take_gone_agents(grace=0) == [(SITE, "away")]
    statuses = {agent.agent_id: agent.status for agent in await broker.routing.agents(SITE)}
    assert statuses == {"live": "available", "off": "offline", "away": "offline", "back": "available"}


async def test_an_expired_connection_makes_its_agent_gone(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 2, frozenset())
    await broker.presence.agent_connected(SITE, "jane", "tab-1", ttl=0.2)  # the process died: no disconnect

    async def expired() -> bool:
        return await broker.presence.live_connection_count(SITE, "jane") == 0

    await eventually(expired, what="the connection to expire")
    # Gone since the expiry, so a long grace still protects the agent.
    assert await broker.presence.take_gone_agents(grace=60) == []
    taken: list[tuple[str, str]] = []

    async def gone() -> bool:
        taken.extend(await broker.presence.take_gone_agents(grace=0))
        return bool(taken)

    await eventually(gone, what="the expired agent to be taken")
    assert taken == [(SITE, "jane")]


async def test_concurrent_take_gone_agents_hand_out_each_agent_once(broker: Broker) -> None:
    for index in range(8):
        await broker.routing.set_agent_status(SITE, f"agent-{index}", "available", 2, frozenset())
    results = await asyncio.gather(*(broker.presence.take_gone_agents(grace=0) for _ in range(6)))
    taken = [agent for result in results for agent in result]
    assert sorted(taken) == [(SITE, f"agent-{index}") for index in range(8)]


# == contract: agents ================================================================================
async def test_set_agent_status_creates_and_updates_the_record(broker: Broker) -> None:
    before = time.time()
    await broker.routing.set_agent_status(SITE, "jane", "available", 3, frozenset({"sales", "support"}))
    await broker.routing.set_agent_status(SITE, "omar", "away", 1, frozenset())
    await broker.routing.set_agent_status("other-site", "lena", "available", 1, frozenset())
    after = time.time()

    agents = by_id(await broker.routing.agents(SITE))
    assert set(agents) == {"jane", "omar"}
    jane = agents["jane"]
    assert (jane.status, jane.capacity, jane.teams, jane.conversations) == (
        "available",
        3,
        frozenset({"sales", "support"}),
        frozenset(),
    )
    assert before <= jane.last_assigned_at <= after  # coming online counts as the start of idling
    assert agents["omar"].status == "away"
    assert await broker.routing.agents("empty-site") == []

    await broker.routing.attach(SITE, "jane", "conv-1")
    await broker.routing.set_agent_status(SITE, "jane", "away", 5, frozenset({"vip"}))
    jane = by_id(await broker.routing.agents(SITE))["jane"]
    assert (jane.status, jane.capacity, jane.teams) == ("away", 5, frozenset({"vip"}))
    assert jane.conversations == frozenset({"conv-1"})  # their chats survive a status change


async def test_last_assigned_at_resets_only_when_becoming_available(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 3, frozenset())
    await broker.routing.enqueue(SITE, entry("conv-1", 1.0))
    assert await broker.routing.assign(SITE, now=12345.0) == [("conv-1", "jane")]
    assert by_id(await broker.routing.agents(SITE))["jane"].last_assigned_at == 12345.0

    await broker.routing.set_agent_status(SITE, "jane", "available", 4, frozenset())  # still available
    assert by_id(await broker.routing.agents(SITE))["jane"].last_assigned_at == 12345.0
    await broker.routing.set_agent_status(SITE, "jane", "away", 4, frozenset())
    assert by_id(await broker.routing.agents(SITE))["jane"].last_assigned_at == 12345.0

    before = time.time()
    await broker.routing.set_agent_status(SITE, "jane", "available", 4, frozenset())
    assert by_id(await broker.routing.agents(SITE))["jane"].last_assigned_at >= before


# == contract: queue =================================================================================
async def test_queue_is_ordered_by_score_and_keeps_every_field(broker: Broker) -> None:
    waiting_longest = entry("conv-a", 1_700_000_000.123456, team_id="sales")
    await broker.routing.enqueue(SITE, entry("conv-c", 1_700_000_300.5))
    await broker.routing.enqueue(SITE, waiting_longest)
    loyal = entry("conv-b", 1_700_000_100.0, preferred_agent_id="jane", only_preferred=True)
    await broker.routing.enqueue(SITE, loyal)
    await broker.routing.enqueue("other-site", entry("conv-x", 1.0))

    queue = await broker.routing.queue(SITE)
    assert [e.conversation_id for e in queue] == ["conv-a", "conv-b", "conv-c"]
    assert queue[0] == waiting_longest  # the score survives to the microsecond
    assert queue[1] == loyal
    assert await queue_ids(broker, "other-site") == ["conv-x"]
    assert await broker.routing.queue("empty-site") == []


async def test_enqueue_again_updates_the_entry_instead_of_duplicating_it(broker: Broker) -> None:
    await broker.routing.enqueue(SITE, entry("conv-a", 10.0))
    await broker.routing.enqueue(SITE, entry("conv-b", 20.0))
    await broker.routing.enqueue(SITE, entry("conv-a", 30.0, team_id="support"))
    assert await broker.routing.queue(SITE) == [entry("conv-b", 20.0), entry("conv-a", 30.0, team_id="support")]


async def test_enqueue_front_goes_ahead_of_everyone(broker: Broker) -> None:
    await broker.routing.enqueue(SITE, entry("requeued-into-empty", 50.0), front=True)
    assert await broker.routing.queue(SITE) == [entry("requeued-into-empty", 49.0)]

    await broker.routing.enqueue(SITE, entry("conv-a", 10.0))
    await broker.routing.enqueue(SITE, entry("conv-b", 20.0))
    await broker.routing.enqueue(SITE, entry("requeued", 99.0, team_id="support"), front=True)
    queue = await broker.routing.queue(SITE)
    assert [e.conversation_id for e in queue] == ["requeued", "conv-a", "conv-b", "requeued-into-empty"]
    assert queue[0] == entry("requeued", 9.0, team_id="support")


async def test_dequeue_removes_only_that_conversation(broker: Broker) -> None:
    await broker.routing.enqueue(SITE, entry("conv-a", 1.0))
    await broker.routing.enqueue(SITE, entry("conv-b", 2.0))
    assert await broker.routing.dequeue(SITE, "conv-a") is True
    assert await broker.routing.dequeue(SITE, "conv-a") is False
    assert await broker.routing.dequeue("other-site", "conv-b") is False
    assert await queue_ids(broker) == ["conv-b"]


# == contract: assign ================================================================================
async def test_assign_serves_the_longest_waiting_first(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 1, frozenset())
    await broker.routing.enqueue(SITE, entry("newer", 200.0))
    await broker.routing.enqueue(SITE, entry("older", 100.0))
    assert await broker.routing.assign(SITE, now=1000.0) == [("older", "jane")]
    assert await queue_ids(broker) == ["newer"]
    assert by_id(await broker.routing.agents(SITE))["jane"].conversations == frozenset({"older"})


async def test_assign_prefers_the_least_busy_then_the_longest_idle(broker: Broker) -> None:
    for agent_id in ("busy", "idle-a", "idle-b"):
        await broker.routing.set_agent_status(SITE, agent_id, "available", 5, frozenset())
    await broker.routing.attach(SITE, "busy", "ongoing")
    await broker.routing.enqueue(SITE, entry("conv-1", 1.0))
    first = await broker.routing.assign(SITE, now=10_000_000_000.0)
    assert len(first) == 1 and first[0][1] in {"idle-a", "idle-b"}  # load 0 beats load 1
    just_served = first[0][1]
    other_idle = "idle-b" if just_served == "idle-a" else "idle-a"
    await broker.routing.detach(SITE, just_served, "conv-1")  # back to load 0, but it just got a chat

    await broker.routing.enqueue(SITE, entry("conv-2", 2.0))
    assert await broker.routing.assign(SITE, now=10_000_000_001.0) == [("conv-2", other_idle)]
    await broker.routing.enqueue(SITE, entry("conv-3", 3.0))
    assert await broker.routing.assign(SITE, now=10_000_000_002.0) == [("conv-3", just_served)]  # load 0 again
    # All three at load 1 now: "busy" has been idle longest (since it came online).
    await broker.routing.enqueue(SITE, entry("conv-4", 4.0))
    assert await broker.routing.assign(SITE, now=10_000_000_003.0) == [("conv-4", "busy")]


async def test_assign_never_exceeds_capacity(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 2, frozenset())
    await broker.routing.set_agent_status(SITE, "omar", "available", 3, frozenset())
    await broker.routing.attach(SITE, "omar", "ongoing")
    for index in range(10):
        await broker.routing.enqueue(SITE, entry(f"conv-{index}", float(index)))

    pairs = await broker.routing.assign(SITE, now=1000.0)
    assert len(pairs) == 4
    assert [conversation for conversation, _ in pairs] == [f"conv-{index}" for index in range(4)]
    assert await broker.routing.assign(SITE, now=1001.0) == []
    agents = by_id(await broker.routing.agents(SITE))
    assert agents["jane"].load == 2 and agents["omar"].load == 3
    assert await queue_ids(broker) == [f"conv-{index}" for index in range(4, 10)]


async def test_assign_skips_agents_who_are_away_or_offline(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "away", "away", 3, frozenset())
    await broker.routing.set_agent_status(SITE, "off", "offline", 3, frozenset())
    await broker.routing.enqueue(SITE, entry("conv-1", 1.0))
    assert await broker.routing.assign(SITE, now=1000.0) == []
    assert await queue_ids(broker) == ["conv-1"]
    await broker.routing.set_agent_status(SITE, "away", "available", 3, frozenset())
    assert await broker.routing.assign(SITE, now=1001.0) == [("conv-1", "away")]


async def test_assign_matches_teams(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "sales-rep", "available", 3, frozenset({"sales"}))
    await broker.routing.set_agent_status(SITE, "support-rep", "available", 3, frozenset({"support"}))
    await broker.routing.attach(SITE, "support-rep", "ongoing")  # busier, yet the only one in the team
    await broker.routing.enqueue(SITE, entry("needs-support", 1.0, team_id="support"))
    await broker.routing.enqueue(SITE, entry("needs-billing", 2.0, team_id="billing"))
    await broker.routing.enqueue(SITE, entry("anyone", 3.0))

    pairs = await broker.routing.assign(SITE, now=1000.0)
    assert pairs == [("needs-support", "support-rep"), ("anyone", "sales-rep")]
    assert await queue_ids(broker) == ["needs-billing"]  # nobody in billing: it waits


async def test_assign_prefers_the_previous_agent(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "free", "available", 3, frozenset())
    await broker.routing.set_agent_status(SITE, "previous", "available", 3, frozenset())
    await broker.routing.attach(SITE, "previous", "x")
    await broker.routing.attach(SITE, "previous", "y")
    await broker.routing.enqueue(SITE, entry("returning", 1.0, preferred_agent_id="previous"))
    await broker.routing.enqueue(SITE, entry("returning-again", 2.0, preferred_agent_id="previous"))

    # The previous agent wins over a less busy one while they have room; once full, anyone may help.
    assert await broker.routing.assign(SITE, now=1000.0) == [("returning", "previous"), ("returning-again", "free")]


async def test_only_preferred_waits_for_that_agent(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "free", "available", 3, frozenset())
    await broker.routing.set_agent_status(SITE, "previous", "away", 3, frozenset())
    await broker.routing.enqueue(SITE, entry("loyal", 1.0, preferred_agent_id="previous", only_preferred=True))
    await broker.routing.enqueue(SITE, entry("anyone", 2.0))

    assert await broker.routing.assign(SITE, now=1000.0) == [("anyone", "free")]  # the loyal one does not block
    assert await queue_ids(broker) == ["loyal"]
    await broker.routing.set_agent_status(SITE, "previous", "available", 3, frozenset())
    assert await broker.routing.assign(SITE, now=1001.0) == [("loyal", "previous")]


async def test_assign_with_nobody_online_keeps_the_queue(broker: Broker) -> None:
    await broker.routing.enqueue(SITE, entry("conv-1", 1.0))
    assert await broker.routing.assign(SITE, now=1000.0) == []
    assert await broker.routing.assign("empty-site", now=1000.0) == []
    assert await queue_ids(broker) == ["conv-1"]


# == contract: attach, detach, rebuild ===============================================================
async def test_attach_is_idempotent_and_takes_the_conversation_out_of_the_queue(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 2, frozenset())
    await broker.routing.enqueue(SITE, entry("conv-1", 1.0))
    await broker.routing.attach(SITE, "jane", "conv-1")
    await broker.routing.attach(SITE, "jane", "conv-1")
    assert await broker.routing.queue(SITE) == []
    assert by_id(await broker.routing.agents(SITE))["jane"].conversations == frozenset({"conv-1"})

    # Unknown agent (a rebuild before they came online): an offline record that gets no new chats.
    await broker.routing.attach(SITE, "ghost", "conv-2")
    ghost = by_id(await broker.routing.agents(SITE))["ghost"]
    assert (ghost.status, ghost.capacity, ghost.conversations) == ("offline", 0, frozenset({"conv-2"}))


async def test_detach_is_idempotent_and_frees_capacity(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 1, frozenset())
    await broker.routing.attach(SITE, "jane", "conv-1")
    await broker.routing.enqueue(SITE, entry("conv-2", 1.0))
    assert await broker.routing.assign(SITE, now=1000.0) == []  # full

    await broker.routing.detach(SITE, "jane", "conv-1")
    await broker.routing.detach(SITE, "jane", "conv-1")
    await broker.routing.detach(SITE, "nobody", "conv-1")
    agents = by_id(await broker.routing.agents(SITE))
    assert set(agents) == {"jane"}  # detaching from an unknown agent creates nothing
    assert agents["jane"].conversations == frozenset()
    assert await broker.routing.assign(SITE, now=1001.0) == [("conv-2", "jane")]


async def test_replace_site_state_rebuilds_queue_and_conversations(broker: Broker) -> None:
    await broker.routing.set_agent_status(SITE, "jane", "available", 3, frozenset({"sales"}))
    await broker.routing.set_agent_status(SITE, "omar", "away", 2, frozenset())
    await broker.routing.attach(SITE, "jane", "stale")
    await broker.routing.attach(SITE, "omar", "omar-chat")
    await broker.routing.enqueue(SITE, entry("stale-queued", 1.0))
    await broker.routing.enqueue("other-site", entry("untouched", 1.0))

    rebuilt_queue = [entry("waiting-2", 20.0), entry("waiting-1", 10.0, team_id="sales")]
    await broker.routing.replace_site_state(SITE, rebuilt_queue, {"jane": {"c1", "c2"}, "lena": {"c3"}, "zoe": set()})

    assert await broker.routing.queue(SITE) == [entry("waiting-1", 10.0, team_id="sales"), entry("waiting-2", 20.0)]
    agents = by_id(await broker.routing.agents(SITE))
    jane = agents["jane"]
    assert jane.conversations == frozenset({"c1", "c2"})
    assert (jane.status, jane.capacity, jane.teams) == ("available", 3, frozenset({"sales"}))
    assert (agents["lena"].status, agents["lena"].conversations) == ("offline", frozenset({"c3"}))
    assert agents["zoe"].conversations == frozenset()
    # Current contract: agents not named in the rebuild keep what they had.
    assert agents["omar"].conversations == frozenset({"omar-chat"})
    assert await queue_ids(broker, "other-site") == ["untouched"]

    assert await broker.routing.assign(SITE, now=1000.0) == [("waiting-1", "jane")]


# == contract: counters ==============================================================================
async def test_hit_allows_up_to_the_limit_per_window(broker: Broker) -> None:
    results = [await broker.counters.hit("login:1.2.3.4", limit=3, window=60) for _ in range(4)]
    assert [allowed for allowed, _ in results] == [True, True, True, False]
    assert all(0 < retry_after <= 60 for _, retry_after in results)
    assert (await broker.counters.hit("login:5.6.7.8", limit=3, window=60))[0] is True  # keys are independent


async def test_hit_with_cost_zero_only_looks_and_cost_counts_several(broker: Broker) -> None:
    for _ in range(5):
        assert (await broker.counters.hit("k", limit=2, window=60, cost=0))[0] is True
    assert (await broker.counters.hit("k", limit=2, window=60))[0] is True
    assert (await broker.counters.hit("k", limit=2, window=60))[0] is True
    assert (await broker.counters.hit("k", limit=2, window=60, cost=0))[0] is True  # 2 attempts, limit 2
    assert (await broker.counters.hit("k", limit=2, window=60))[0] is False
    allowed, retry_after = await broker.counters.hit("k", limit=2, window=60, cost=0)
    assert allowed is False and 0 < retry_after <= 60  # a look sees the exhaustion

    assert (await broker.counters.hit("burst", limit=3, window=60, cost=3))[0] is True
    assert (await broker.counters.hit("burst", limit=3, window=60, cost=1))[0] is False


async def test_hit_starts_a_new_window_when_the_old_one_ends(broker: Broker) -> None:
    window = 2.0  # long enough that a slow machine cannot cross it between two calls
    assert (await broker.counters.hit("k", limit=1, window=window))[0] is True
    allowed, retry_after = await broker.counters.hit("k", limit=1, window=window)
    assert allowed is False and 0 < retry_after <= window

    async def allowed_again() -> bool:
        return (await broker.counters.hit("k", limit=1, window=window))[0]

    await eventually(allowed_again, what="a new rate-limit window")
    assert (await broker.counters.hit("k", limit=1, window=window))[0] is False  # a fresh count, not unlimited


# == Redis only: several processes ===================================================================
async def test_fan_out_crosses_processes_and_stays_within_the_prefix(
    redis_brokers: Callable[..., Awaitable[RedisBroker]],
) -> None:
    publisher, listener_a, listener_b = await redis_brokers(), await redis_brokers(), await redis_brokers()
    stranger = await redis_brokers(prefix=unique_prefix("stranger-"))
    inbox_a, inbox_b, stranger_inbox = Inbox(), Inbox(), Inbox()
    await listener_a.fanout.subscribe("conversation:1", inbox_a)
    await listener_b.fanout.subscribe("conversation:1", inbox_b)
    await stranger.fanout.subscribe("conversation:1", stranger_inbox)

    await publisher.fanout.publish("conversation:1", {"seq": 1})
    await stranger.fanout.publish("conversation:1", {"marker": True})
    assert await inbox_a.wait_for() == [{"seq": 1}]
    assert await inbox_b.wait_for() == [{"seq": 1}]
    assert await stranger_inbox.wait_for() == [{"marker": True}]


async def test_own_events_are_delivered_here_at_once_and_elsewhere_through_redis_exactly_once_in_order(
    private_redis: PrivateRedis,
) -> None:
    async with publisher_and_listener(private_redis.url, "local-") as (publisher, other, here, there, admin):
        # Redis holds the PUBLISH: this process's handler has the event all the same, and publish still
        # waits for Redis (it is how the caller learns of a failure).
        await admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        held = asyncio.create_task(publisher.fanout.publish("conversation:1", {"seq": 0}))
        assert await here.wait_for(1) == [{"seq": 0}]
        assert not held.done()
        await admin.execute_command("CLIENT", "UNPAUSE")
        await held

        # Concurrent publishes go out together in pipelines; they keep the order they were made in.
        await asyncio.gather(*(publisher.fanout.publish("conversation:1", {"seq": seq}) for seq in range(1, 50)))
        await publisher.fanout.publish_many([("conversation:1", {"seq": seq}) for seq in range(50, 60)])
        sent = [{"seq": seq} for seq in range(60)]
        assert await there.wait_for(len(sent)) == sent
        # Redis echoes the publisher's events back to it before this reply, so by the time the reply has
        # arrived any second copy of them would have too.
        await other.fanout.publish("conversation:1", {"reply": True})
        assert await here.wait_for(len(sent) + 1) == [*sent, {"reply": True}]
        assert there.events == [*sent, {"reply": True}]


async def test_publish_soon_waits_for_nobody_keeps_the_order_elsewhere_and_logs_a_failure(
    private_redis: PrivateRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with publisher_and_listener(private_redis.url, "soon-") as (publisher, _, here, there, admin):
        # Redis holds the PUBLISH: publish_soon has returned (it is not even a coroutine) and this
        # process's handler has the event; a publish made after it waits, and goes out after it.
        await admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        publisher.fanout.publish_soon("conversation:1", {"seq": 1})
        assert here.events == [{"seq": 1}]
        waited = asyncio.create_task(publisher.fanout.publish("conversation:1", {"seq": 2}))
        assert await here.wait_for(2) == [{"seq": 1}, {"seq": 2}]
        publisher.fanout.publish_soon("conversation:1", {"seq": 3})
        assert here.events == [{"seq": 1}, {"seq": 2}, {"seq": 3}]
        assert not waited.done()
        await admin.execute_command("CLIENT", "UNPAUSE")
        await waited
        assert await there.wait_for(3) == [{"seq": 1}, {"seq": 2}, {"seq": 3}]

        # Redis gone: the local handler still has the event, and the failure is a warning, not a raise.
        await admin.aclose()
        await private_redis.kill()
        with caplog.at_level(logging.WARNING, logger="nameplate.broker"):
            publisher.fanout.publish_soon("conversation:1", {"seq": 4})
            assert here.events[-1] == {"seq": 4}

            async def warned() -> bool:
                return any("did not reach Redis" in record.getMessage() for record in caplog.records)

            await eventually(warned, within=20, what="a warning about the unsent event")
        assert there.events == [{"seq": 1}, {"seq": 2}, {"seq": 3}]


async def test_an_untagged_event_from_an_older_process_is_still_delivered(private_redis: PrivateRedis) -> None:
    prefix = unique_prefix("untagged-")
    broker = RedisBroker(private_redis.url, prefix=prefix)
    admin = aioredis.from_url(private_redis.url, decode_responses=True)
    try:
        await broker.connect()
        inbox = Inbox()
        await broker.fanout.subscribe("conversation:1", inbox)
        # What a process of the version before origin tags publishes: the bare JSON.
        await admin.publish(f"{prefix}channel:conversation:1", '{"seq": 1}')
        assert await inbox.wait_for(1) == [{"seq": 1}]
    finally:
        await admin.aclose()
        await broker.disconnect()


async def test_one_redis_subscription_per_channel_whatever_the_handlers(
    redis_brokers: Callable[..., Awaitable[RedisBroker]],
) -> None:
    prefix = unique_prefix("numsub-")
    broker = await redis_brokers(prefix=prefix)
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        first, second = Inbox(), Inbox()
        await broker.fanout.subscribe("room", first)
        await broker.fanout.subscribe("room", second)
        channels = await client.pubsub_channels(f"{prefix}*")
        assert len(channels) == 1 and channels[0].endswith("room")
        assert (await client.pubsub_numsub(channels[0]))[0][1] == 1

        await broker.fanout.unsubscribe("room", first)
        assert (await client.pubsub_numsub(channels[0]))[0][1] == 1

        await broker.fanout.unsubscribe("room", second)

        async def gone() -> bool:
            return await client.pubsub_channels(f"{prefix}*") == []

        await eventually(gone, what="the Redis subscription to end after the last handler")
    finally:
        await client.aclose()


async def test_concurrent_assign_from_several_processes_never_double_assigns(
    redis_brokers: Callable[..., Awaitable[RedisBroker]],
) -> None:
    brokers = [await redis_brokers() for _ in range(3)]
    agent_ids = [f"agent-{index:02d}" for index in range(20)]
    for index, agent_id in enumerate(agent_ids):
        await brokers[index % 3].routing.set_agent_status(SITE, agent_id, "available", 3, frozenset())
    await asyncio.gather(
        *(brokers[i % 3].routing.enqueue(SITE, entry(f"conv-{i:03d}", 1000.0 + i)) for i in range(200))
    )

    results = await asyncio.gather(*(broker.routing.assign(SITE, now=5000.0) for broker in brokers for _ in range(4)))
    pairs = [pair for result in results for pair in result]
    conversations = [conversation for conversation, _ in pairs]

    assert len(pairs) == 60
    assert len(set(conversations)) == 60
    assert set(conversations) == {f"conv-{index:03d}" for index in range(60)}  # the longest waiting
    assert Counter(agent for _, agent in pairs) == dict.fromkeys(agent_ids, 3)
    agents = by_id(await brokers[0].routing.agents(SITE))
    assert all(agents[agent_id].load == 3 for agent_id in agent_ids)
    recorded = {(c, agent.agent_id) for agent in agents.values() for c in agent.conversations}
    assert recorded == set(pairs)
    assert await queue_ids(brokers[1]) == [f"conv-{index:03d}" for index in range(60, 200)]


async def test_enqueue_and_assign_under_contention_make_progress(
    redis_brokers: Callable[..., Awaitable[RedisBroker]],
) -> None:
    """The livelock check: 200 visitors arrive at once on 3 processes, each arrival triggers assign."""
    brokers = [await redis_brokers() for _ in range(3)]
    for index in range(20):
        await brokers[index % 3].routing.set_agent_status(SITE, f"agent-{index:02d}", "available", 3, frozenset())

    async def arrive(index: int) -> list[tuple[str, str]]:
        broker = brokers[index % 3]
        await broker.routing.enqueue(SITE, entry(f"conv-{index:03d}", 1000.0 + index))
        return await broker.routing.assign(SITE, now=5000.0 + index)

    async with asyncio.timeout(30):  # a livelock fails here instead of hanging the suite
        results = await asyncio.gather(*(arrive(index) for index in range(200)))

    pairs = [pair for result in results for pair in result]
    assert len(pairs) == 60 and len({conversation for conversation, _ in pairs}) == 60
    assert max(Counter(agent for _, agent in pairs).values()) == 3
    assert len(await brokers[2].routing.queue(SITE)) == 140


async def test_take_gone_agents_across_processes_hands_each_agent_to_one(
    redis_brokers: Callable[..., Awaitable[RedisBroker]],
) -> None:
    brokers = [await redis_brokers() for _ in range(3)]
    for index in range(12):
        await brokers[0].routing.set_agent_status(SITE, f"agent-{index:02d}", "available", 2, frozenset())
        await brokers[1].presence.agent_connected(SITE, f"agent-{index:02d}", "tab", ttl=60)
        await brokers[2].presence.agent_disconnected(SITE, f"agent-{index:02d}", "tab")
    results = await asyncio.gather(*(b.presence.take_gone_agents(grace=0) for b in brokers for _ in range(4)))
    taken = [agent for result in results for agent in result]
    assert sorted(taken) == [(SITE, f"agent-{index:02d}") for index in range(12)]


async def test_hit_is_shared_by_all_processes(redis_brokers: Callable[..., Awaitable[RedisBroker]]) -> None:
    brokers = [await redis_brokers() for _ in range(3)]
    results = await asyncio.gather(*(brokers[i % 3].counters.hit("signup", limit=10, window=60) for i in range(30)))
    assert sum(allowed for allowed, _ in results) == 10


async def test_disconnect_leaves_no_task_behind() -> None:
    require_redis()
    prefix = unique_prefix("lifecycle-")
    before = asyncio.all_tasks()
    broker = RedisBroker(REDIS_URL, prefix=prefix)
    await broker.connect()
    try:
        await broker.fanout.subscribe("room", Inbox())
        ours = {task.get_name() for task in asyncio.all_tasks() - before}
        assert {"nameplate-broker-reader", "nameplate-broker-watchdog"} <= ours
    finally:
        async with asyncio.timeout(DEADLINE):  # a swallowed cancel must fail here, not hang the suite
            await broker.disconnect()
        await purge(prefix)
    assert asyncio.all_tasks() - before == set()


async def test_connect_fails_loudly_when_redis_is_unreachable() -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", prefix=unique_prefix("nowhere-"))
    with pytest.raises(RedisConnectionError):
        await broker.connect()
    assert await broker.healthy() is False
    await broker.disconnect()


# == Redis only: a Redis we may break ================================================================
async def test_every_key_lives_under_the_prefix(private_redis: PrivateRedis) -> None:
    prefix = unique_prefix("keys-")
    broker = RedisBroker(private_redis.url, prefix=prefix)
    await broker.connect()
    try:
        await broker.fanout.subscribe("room", Inbox())
        await broker.routing.set_agent_status(SITE, "jane", "available", 2, frozenset({"sales"}))
        await broker.presence.agent_connected(SITE, "jane", "tab", ttl=60)
        await broker.presence.agent_disconnected(SITE, "jane", "tab")
        await broker.routing.enqueue(SITE, entry("conv-1", 1.0))
        await broker.routing.enqueue(SITE, entry("conv-0", 1.0), front=True)
        await broker.routing.assign(SITE, now=1000.0)
        await broker.routing.attach(SITE, "omar", "conv-1")
        await broker.routing.replace_site_state(SITE, [entry("conv-2", 2.0)], {"omar": {"conv-1"}})
        await broker.counters.hit("login", limit=1, window=60)
        await broker.presence.take_gone_agents(grace=0)

        client = aioredis.from_url(private_redis.url, decode_responses=True)
        try:
            keys = await client.keys("*")
            channels = await client.pubsub_channels("*")
        finally:
            await client.aclose()
        assert len(keys) > 5
        assert [key for key in keys + channels if not key.startswith(prefix)] == []
    finally:
        await broker.disconnect()


async def test_subscribe_returns_only_once_redis_has_the_subscription(private_redis: PrivateRedis) -> None:
    """Resume is "subscribe, then replay from the store": a subscription that is not active yet when
    subscribe() returns would lose whatever is published in between."""
    prefix = unique_prefix("confirm-")
    broker = RedisBroker(private_redis.url, prefix=prefix)
    await broker.connect()
    admin = aioredis.from_url(private_redis.url, decode_responses=True)
    try:
        pause = 0.4
        await admin.execute_command("CLIENT", "PAUSE", int(pause * 1000), "ALL")  # holds the SUBSCRIBE
        started = time.monotonic()
        await broker.fanout.subscribe("room", Inbox())
        assert time.monotonic() - started >= pause / 2
        assert len(await admin.pubsub_channels(f"{prefix}*")) == 1
    finally:
        await admin.aclose()
        await broker.disconnect()


async def test_a_dropped_subscriber_connection_comes_back_and_reports_a_reset(
    private_redis: PrivateRedis,
) -> None:
    prefix = unique_prefix("dropped-")
    broker = RedisBroker(private_redis.url, prefix=prefix)
    reset = asyncio.Event()

    async def on_reset() -> None:
        reset.set()

    broker.on_reset(on_reset)
    await broker.connect()
    admin = aioredis.from_url(private_redis.url, decode_responses=True)
    try:
        inbox = Inbox()
        await broker.fanout.subscribe("room", inbox)
        # Only the subscriber connection dies; commands and the sentinel key are fine. Events may have
        # been missed meanwhile, so the app still gets its chance to resynchronise.
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        async with asyncio.timeout(DEADLINE):
            await reset.wait()
        await broker.fanout.publish("room", {"after": "drop"})
        assert await inbox.wait_for() == [{"after": "drop"}]
    finally:
        await admin.aclose()
        await broker.disconnect()


async def test_a_flush_runs_the_reset_callbacks_of_every_process(private_redis: PrivateRedis) -> None:
    prefix = unique_prefix("flush-")
    brokers = [RedisBroker(private_redis.url, prefix=prefix) for _ in range(2)]
    resets = [asyncio.Event() for _ in brokers]
    for broker, reset in zip(brokers, resets, strict=True):

        async def on_reset(reset: asyncio.Event = reset) -> None:
            reset.set()

        broker.on_reset(on_reset)
        await broker.connect()
    try:
        await brokers[0].routing.enqueue(SITE, entry("conv-1", 1.0))
        assert not any(reset.is_set() for reset in resets)  # connecting is not a reset

        client = aioredis.from_url(private_redis.url)
        try:
            await client.flushall()
        finally:
            await client.aclose()

        async with asyncio.timeout(10):
            await asyncio.gather(*(reset.wait() for reset in resets))
        assert await brokers[1].routing.queue(SITE) == []  # the state really was gone
        assert all([await broker.healthy() for broker in brokers])
    finally:
        for broker in brokers:
            await broker.disconnect()


async def test_a_restart_is_survived_resubscribed_and_reported(private_redis: PrivateRedis) -> None:
    prefix = unique_prefix("restart-")
    broker = RedisBroker(private_redis.url, prefix=prefix)
    inbox, dropped = Inbox(), Inbox()
    resets: list[float] = []
    reset_done = asyncio.Event()

    async def on_reset() -> None:
        resets.append(time.monotonic())
        # What the app does: rebuild and announce it. This process must hear its own announcement.
        await broker.fanout.publish("room", {"rebuilt": True})
        reset_done.set()

    broker.on_reset(on_reset)
    await broker.connect()
    publisher: RedisBroker | None = None
    try:
        await broker.fanout.subscribe("room", inbox)
        await broker.fanout.subscribe("left-before-the-outage", dropped)
        await broker.fanout.unsubscribe("left-before-the-outage", dropped)
        assert await broker.healthy() is True

        await private_redis.kill()

        async def unhealthy() -> bool:
            return not await broker.healthy()

        await eventually(unhealthy, what="healthy() to turn False while Redis is down")
        await private_redis.start()

        async def healthy() -> bool:
            return await broker.healthy()

        await eventually(healthy, what="healthy() to turn True once Redis is back")
        async with asyncio.timeout(10):
            await reset_done.wait()
        assert len(resets) == 1
        assert await inbox.wait_for() == [{"rebuilt": True}]

        # Only the channel that still has a handler is subscribed on the new server.
        client = aioredis.from_url(private_redis.url, decode_responses=True)
        try:
            channels = await client.pubsub_channels(f"{prefix}*")
        finally:
            await client.aclose()
        assert len(channels) == 1 and channels[0].endswith("room")

        # Another process publishes after the restart: the re-subscribed handler hears it.
        publisher = RedisBroker(private_redis.url, prefix=prefix)
        await publisher.connect()
        await publisher.fanout.publish("room", {"after": "restart"})
        assert await inbox.wait_for(2) == [{"rebuilt": True}, {"after": "restart"}]
        # Routing works again against the fresh server.
        await broker.routing.set_agent_status(SITE, "jane", "available", 1, frozenset())
        await publisher.routing.enqueue(SITE, entry("conv-1", 1.0))
        assert await broker.routing.assign(SITE, now=1000.0) == [("conv-1", "jane")]
    finally:
        if publisher is not None:
            await publisher.disconnect()
        await broker.disconnect()
