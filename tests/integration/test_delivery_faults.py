"""Issue 19's fault test: what every client RECEIVED, checked against the store, through kill -9 of a server
process (restarted), a Redis restart (empty), FLUSHALL and client sockets cut without a close frame.

Two `nameplate serve` processes on PostgreSQL and a redis-server of this test's own. Visitors and agents
behave like the widget and the console: an outbox until ack, reconnect with back-off (to either process),
`hello {resume_after: max seq seen}`, unacked messages resent with the same client_id. Chats open and close
the whole time: a visitor says a few things, the agent answers each, the visitor says "bye", the agent
closes, the visitor (told of the close) starts the next chat. Bounded: 6 visitors, 3 agents, a few rounds.

Checked at the end, per conversation in the store: its visitor received every public message once, in seq
order (0 missed, 0 duplicated); its agent received every message once, in order (the close's own system
line may follow an agent's socket that was gone at that moment: the console drops a closed chat); both were
told of the close; every acked message is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis
from sqlalchemy import select

from nameplate.store.models import Conversation, Message
from tests.cluster import Cluster, ServerProcess, cluster, start_all
from tests.harness import agent_cookie, free_port, poll_until
from tests.services import private_redis_command

pytestmark = pytest.mark.services

VISITORS = 6
AGENTS = 3
MESSAGES_PER_CHAT = 3  # then "bye"
MIN_ROUNDS = 2
MAX_ROUNDS = 6
PASSWORD = "fault-test-pass"


class RedisServer:
    """The test's own redis-server: killed and started again on the same port (empty: no persistence)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: ASYNC220 (starts at once)
            private_redis_command(self.port, self.directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        redis = Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                return bool(await redis.ping())
            except Exception:
                return False

        try:
            await poll_until(answers, timeout=10)
        finally:
            await redis.aclose()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class Peer:
    """What the widget and the console share: one socket at a time, reconnecting, an outbox until ack."""

    name: str
    servers: list[ServerProcess]
    home: int
    ws: Any = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    # conversation id -> every message seq received, in arrival order, across all sockets
    received: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    closed_told: set[str] = field(default_factory=set)
    # client_id -> the frame to (re)send until acked
    outbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)
    sockets: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    recent: list[dict[str, Any]] = field(default_factory=list)  # the last frames, for a failure's message

    def max_seen(self, conversation_id: str) -> int:
        return max(self.received.get(conversation_id) or [0])

    async def run(self) -> None:
        delay = 0.05
        attempt = 0
        while not self.stopping:
            server = self.servers[(self.home + attempt) % len(self.servers)]
            try:
                await self.connect(server)
            except (OSError, websockets.WebSocketException, TimeoutError, httpx.HTTPError, KeyError):
                attempt += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(1.0, delay * 2)
                continue
            delay = 0.05
            self.sockets += 1
            try:
                await self.hello_and_resend()
                self.connected.set()
                async for raw in self.ws:
                    self.on_frame(json.loads(raw))
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await self.ws.close()
            attempt += 1

    async def connect(self, server: ServerProcess) -> None:
        raise NotImplementedError

    async def hello_and_resend(self) -> None:
        raise NotImplementedError

    def on_frame(self, frame: dict[str, Any]) -> None:
        self.recent = [
            *self.recent[-11:],
            {
                k: v
                for k, v in frame.items()
                if k in ("type", "seq", "code", "client_id", "body", "conversation_id", "status")
            },
        ]
        kind = frame.get("type")
        if kind == "message":
            self.received[frame["conversation_id"]].append(frame["seq"])
        elif kind == "ack":
            if self.outbox.pop(frame["client_id"], None) is not None:
                self.acked[frame["client_id"]] = (frame["conversation_id"], frame["seq"])
        elif kind == "closed":
            self.closed_told.add(frame["conversation_id"])
        elif kind == "error" and frame.get("client_id") and frame.get("code") == "forbidden":
            self.outbox.pop(frame["client_id"], None)  # the chat is not the agent's any more
        elif kind == "error" and frame.get("code") == "rate_limited" and frame.get("client_id") in self.outbox:
            asyncio.get_running_loop().create_task(self.resend_later(frame["client_id"]))
        self.wake.set()

    async def send(self, frame: dict[str, Any]) -> None:
        if "client_id" in frame:
            self.outbox[frame["client_id"]] = frame
        if self.connected.is_set():
            with contextlib.suppress(Exception):
                await self.ws.send(json.dumps(frame))

    async def welcome(self) -> dict[str, Any]:
        """The welcome; broker events that went out before it (e.g. the site's board) are taken as usual."""
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if frame.get("type") == "welcome":
                return frame
            self.on_frame(frame)

    async def resend_later(self, client_id: str) -> None:
        """Like the widget: a rate-limited message is sent again a moment later."""
        await asyncio.sleep(1.0)
        frame = self.outbox.get(client_id)
        if frame is not None and self.connected.is_set():
            with contextlib.suppress(Exception):
                await self.ws.send(json.dumps(frame))

    async def resend_outbox(self) -> None:
        for frame in list(self.outbox.values()):
            await self.ws.send(json.dumps(frame))

    def cut(self) -> None:
        """The network drops the socket: no close frame."""
        if self.ws is not None and self.connected.is_set():
            self.ws.transport.abort()

    async def until(self, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: timed out; connected={self.connected.is_set()} sockets={self.sockets}"
                    f" outbox={list(self.outbox)} recent={self.recent}"
                )
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(remaining, 0.5))


@dataclass
class Visitor(Peer):
    site_key: str = ""
    token: str = ""
    conversation_id: str | None = None
    conversations: list[str] = field(default_factory=list)
    welcome_closed: set[str] = field(default_factory=set)

    async def connect(self, server: ServerProcess) -> None:
        if not self.token:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(f"{server.base_url}/api/v1/visitors", json={"site": self.site_key})
                self.token = response.json()["token"]
        self.ws = await websockets.connect(f"{server.ws_url}/ws/visitor", ping_interval=None, open_timeout=5)

    async def hello_and_resend(self) -> None:
        hello: dict[str, Any] = {"type": "hello", "site": self.site_key, "token": self.token}
        if self.conversation_id:
            hello |= {"conversation_id": self.conversation_id, "resume_after": self.max_seen(self.conversation_id)}
        await self.ws.send(json.dumps(hello))
        welcome = await self.welcome()
        current = welcome.get("conversation")
        if current and current["status"] == "closed":
            self.welcome_closed.add(current["id"])
        elif current and self.conversation_id is None:
            self.follow(current["id"])
        await self.resend_outbox()

    def follow(self, conversation_id: str) -> None:
        if conversation_id not in self.conversations:
            self.conversations.append(conversation_id)
        self.conversation_id = conversation_id

    def on_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "ack":
            self.follow(frame["conversation_id"])
        super().on_frame(frame)

    def told_closed(self, conversation_id: str) -> bool:
        return conversation_id in self.closed_told or conversation_id in self.welcome_closed

    async def chat(self, round_number: int) -> None:
        """One chat: a few lines, each answered, then "bye"; done once told it is closed."""
        for n in range(MESSAGES_PER_CHAT + 1):
            body = "bye" if n == MESSAGES_PER_CHAT else f"{self.name} round {round_number} line {n}"
            client_id = f"{self.name}-r{round_number}-{n}"
            await self.send({"type": "message", "client_id": client_id, "body": body})
            await self.until(lambda c=client_id: c in self.acked, timeout=30)
            await asyncio.sleep(random.uniform(0.05, 0.2))  # a person typing
        conversation_id = self.acked[f"{self.name}-r{round_number}-0"][0]
        await self.until(lambda: self.told_closed(conversation_id), timeout=30)


@dataclass
class Agent(Peer):
    email: str = ""
    cookie: str = ""
    # conversations the console holds now, and whether the visitor said bye in them
    mine: set[str] = field(default_factory=set)
    answered: set[tuple[str, int]] = field(default_factory=set)
    byes: set[str] = field(default_factory=set)
    closing: set[str] = field(default_factory=set)
    told_gone: set[str] = field(default_factory=set)
    counter: int = 0

    async def connect(self, server: ServerProcess) -> None:
        cookie = await agent_cookie(server.base_url, self.email, PASSWORD)
        self.ws = await websockets.connect(
            f"{server.ws_url}/ws/agent", additional_headers={"Cookie": cookie}, ping_interval=None, open_timeout=5
        )

    async def hello_and_resend(self) -> None:
        resume = {c: self.max_seen(c) for c in self.mine}
        await self.ws.send(json.dumps({"type": "hello", "resume_after": resume}))
        welcome = await self.welcome()
        now_mine = {c["id"] for c in welcome["conversations"]}
        for gone in self.mine - now_mine:
            self.told_gone.add(gone)  # closed while this console was away: it drops the chat
        self.mine = now_mine
        await self.resend_outbox()
        for conversation_id in self.byes & self.mine:
            await self.ws.send(json.dumps({"type": "close", "conversation_id": conversation_id}))

    def on_frame(self, frame: dict[str, Any]) -> None:
        super().on_frame(frame)
        kind = frame.get("type")
        if kind == "assigned":
            self.mine.add(frame["conversation"]["id"])
        elif kind == "unassigned" or kind == "closed":
            self.mine.discard(frame["conversation_id"])
        elif kind == "message" and frame["author"]["kind"] == "visitor":
            key = (frame["conversation_id"], frame["seq"])
            if key not in self.answered:
                self.answered.add(key)
                asyncio.get_running_loop().create_task(self.answer(frame))

    async def answer(self, frame: dict[str, Any]) -> None:
        conversation_id = frame["conversation_id"]
        if frame["body"] == "bye":
            self.byes.add(conversation_id)
            await self.send({"type": "close", "conversation_id": conversation_id})
            return
        self.counter += 1
        client_id = f"{self.name}-{self.counter}"
        await self.send(
            {
                "type": "message",
                "conversation_id": conversation_id,
                "client_id": client_id,
                "body": "re " + frame["body"],
            }
        )


async def make_site(c: Cluster) -> tuple[str, list[str]]:
    site = await c.services.directory.create_site("Fault shop", allowed_origins="*")
    emails = []
    for n in range(AGENTS):
        agent = await c.services.directory.create_agent(
            site.id,
            given_name=f"Agent{n}",
            family_name="Faults",
            email=f"a{n}@faults.test",
            password=PASSWORD,
            capacity=3,
        )
        emails.append(agent.email)
    return site.public_key, emails


async def test_every_client_receives_every_message_once_in_order_through_faults(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)
    await redis_server.start()
    try:
        async with cluster(tmp_path, processes=2, redis_url=redis_server.url) as c:
            site_key, emails = await make_site(c)
            await start_all(c.servers)
            agents = [Agent(f"agent{n}", c.servers, n % 2, email=email) for n, email in enumerate(emails)]
            visitors = [Visitor(f"visitor{n}", c.servers, n % 2, site_key=site_key) for n in range(VISITORS)]
            peers: list[Peer] = [*agents, *visitors]
            tasks = [asyncio.create_task(peer.run()) for peer in peers]
            faults_done = asyncio.Event()
            log: list[str] = []
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(a.connected.wait() for a in agents), *(v.connected.wait() for v in visitors)), 30
                )

                async def visitor_life(visitor: Visitor) -> None:
                    rounds = 0
                    while rounds < MAX_ROUNDS and (rounds < MIN_ROUNDS or not faults_done.is_set()):
                        await visitor.chat(rounds)
                        rounds += 1

                async def faults() -> None:
                    rng = random.Random(19)
                    steps = ["kill", "cut", "redis_restart", "cut", "flushall", "kill"]
                    for step in steps:
                        await asyncio.sleep(rng.uniform(1.0, 2.0))
                        started = time.monotonic()
                        if step == "kill":
                            victim = c.servers[rng.randrange(2)]
                            victim.kill()
                            await asyncio.sleep(1.0)
                            victim.start()
                            await victim.wait_ready()
                        elif step == "redis_restart":
                            redis_server.kill()
                            await asyncio.sleep(1.0)
                            await redis_server.start()
                        elif step == "flushall":
                            redis = Redis.from_url(redis_server.url)
                            await redis.flushall()
                            await redis.aclose()
                        elif step == "cut":
                            for peer in rng.sample(peers, 3):
                                peer.cut()
                        log.append(f"{step} ({time.monotonic() - started:.1f}s)")
                    faults_done.set()

                await asyncio.wait_for(asyncio.gather(faults(), *(visitor_life(v) for v in visitors)), timeout=100)
                # Everyone's last frames: each peer's socket settles (connected), then a quiet moment.
                await asyncio.wait_for(asyncio.gather(*(p.connected.wait() for p in peers)), 30)
                await check(c, visitors, agents, log)
            finally:
                for peer in peers:
                    peer.stopping = True
                    with contextlib.suppress(Exception):
                        await peer.ws.close()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        redis_server.kill()


async def check(c: Cluster, visitors: list[Visitor], agents: list[Agent], log: list[str]) -> None:
    async with c.services.sessions() as session:
        conversations = {conv.id: conv for conv in (await session.execute(select(Conversation))).scalars()}
        rows = list((await session.execute(select(Message).order_by(Message.conversation_id, Message.seq))).scalars())
    stored: dict[str, list[Message]] = defaultdict(list)
    for row in rows:
        stored[row.conversation_id].append(row)
    by_email = {a.email: a for a in agents}
    agent_of = {
        a.id: by_email[a.email] for a in await c.services.directory.agents(next(iter(conversations.values())).site_id)
    }

    def public(conversation_id: str) -> list[int]:
        return [m.seq for m in stored[conversation_id] if not m.private]

    # The last deliveries may still be on the wire: wait (with a deadline) for what the store says is due.
    def visitor_done(v: Visitor) -> bool:
        return all(v.received.get(cid, []) == public(cid) for cid in v.conversations)

    with contextlib.suppress(AssertionError):  # what is still missing then is reported below
        await poll_until(lambda: all(visitor_done(v) for v in visitors), timeout=15, interval=0.1)

    problems: list[str] = []
    told_closed = 0
    for visitor in visitors:
        for client_id, (conversation_id, seq) in visitor.acked.items():
            if not any(m.client_id == client_id and m.seq == seq for m in stored[conversation_id]):
                problems.append(f"{visitor.name}: acked {client_id} not stored as seq {seq}")
        for conversation_id in visitor.conversations:
            got, want = visitor.received.get(conversation_id, []), public(conversation_id)
            if got != want:
                problems.append(f"{visitor.name} {conversation_id[:8]}: received {got}, stored {want}")
            conversation = conversations[conversation_id]
            if conversation.status == "closed":
                if not visitor.told_closed(conversation_id):
                    problems.append(f"{visitor.name} {conversation_id[:8]}: never told of the close")
                told_closed += 1
    for conversation_id, conversation in conversations.items():
        if conversation.agent_id is None:
            continue
        agent = agent_of[conversation.agent_id]
        got = agent.received.get(conversation_id, [])
        want = [m.seq for m in stored[conversation_id]]
        closing_line = conversation.status == "closed" and want and stored[conversation_id][-1].author_kind == "system"
        if got != want and not (closing_line and got == want[:-1] and conversation_id in agent.told_gone):
            problems.append(f"{agent.name} {conversation_id[:8]}: received {got}, stored {want}")
        if conversation.status == "closed" and conversation_id not in agent.closed_told | agent.told_gone:
            problems.append(f"{agent.name} {conversation_id[:8]}: never told of the close")
    closed = sum(1 for conv in conversations.values() if conv.status == "closed")
    assert not problems, f"faults: {log}\n" + "\n".join(problems)
    # The run did what it says: chats closed meanwhile, every socket reconnected at least once somewhere.
    assert closed >= VISITORS * MIN_ROUNDS and told_closed == closed, (closed, told_closed)
    assert len(rows) >= VISITORS * MIN_ROUNDS * (MESSAGES_PER_CHAT * 2 + 1)
    everyone = [*visitors, *agents]
    reconnects = sum(peer.sockets - 1 for peer in everyone)
    assert reconnects >= len(everyone) // 2, [(p.name, p.sockets) for p in everyone]
    print(f"faults: {log}; {closed} chats closed, {len(rows)} messages, sockets {[p.sockets for p in everyone]}")
