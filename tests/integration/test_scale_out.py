"""Several server processes on one PostgreSQL and one Redis: chats cross processes, no visitor is ever
assigned twice, a crashed process or a flushed Redis loses nothing."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
import websockets
from redis.asyncio import Redis
from sqlalchemy import func, select

from nameplate.demo.seed import seed_demo
from nameplate.store.models import Conversation, Message
from tests.cluster import Cluster, cluster, start_all
from tests.harness import Client, agent_cookie, connect_agent, connect_visitor, free_port, poll_until
from tests.services import private_redis_command

pytestmark = pytest.mark.services


async def store_count(c: Cluster, *conditions) -> int:  # noqa: ANN002
    async with c.services.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Conversation).where(*conditions))


async def test_visitor_agent_and_supervisor_on_three_processes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await seed_demo(c.services, "*")
        a, b, sup = c.servers
        await start_all(c.servers)
        jane = await connect_agent(b, "jane@acme.example")
        tomas = await connect_agent(sup, "tomas@acme.example", status="available")
        await tomas.send(type="status", status="away")
        await tomas.expect("status", lambda f: f["status"] == "away")
        visitor, _ = await connect_visitor(a)
        await visitor.send(type="message", client_id="v1", body="Hello from process A")
        assigned = await jane.expect("assigned")
        conversation_id = assigned["conversation"]["id"]
        await visitor.expect("agent_joined")
        first = await jane.expect("message", lambda f: f["body"] == "Hello from process A")
        await tomas.send(type="watch", conversation_id=conversation_id)
        await tomas.expect("watching")
        await tomas.expect("message", lambda f: f["body"] == "Hello from process A")

        await visitor.send(type="typing", on=True)
        assert (await jane.expect("typing", lambda f: f["by"] == "visitor"))["on"] is True
        await jane.send(type="read", conversation_id=conversation_id, seq=first["seq"])
        assert (await visitor.expect("read", lambda f: f["by"] == "agent"))["seq"] == first["seq"]
        await jane.send(type="typing", conversation_id=conversation_id, on=True)
        assert (await visitor.expect("typing", lambda f: f["by"] == "agent"))["name"] == "Jane"
        await jane.send(type="message", conversation_id=conversation_id, client_id="j1", body="Hi from B")
        assert (await visitor.expect("message", lambda f: f["body"] == "Hi from B"))["author"]["family_name"] == (
            "Chang-Katzenberg"
        )
        assert (await tomas.expect("message", lambda f: f["body"] == "Hi from B"))["seq"] > first["seq"]
        await jane.send(type="note", conversation_id=conversation_id, body="internal only")
        await tomas.expect("message", lambda f: f["body"] == "internal only" and f["private"])
        await visitor.send(type="ping")
        await visitor.expect("pong")
        assert "internal only" not in [f.get("body") for f in visitor.frames]


async def _round(c: Cluster, round_number: int) -> None:
    site = await c.services.directory.create_site(f"Load shop {round_number}", allowed_origins="*")
    emails = []
    for n in range(20):
        agent = await c.services.directory.create_agent(
            site.id,
            given_name=f"Agent{n}",
            family_name=f"Round{round_number}",
            email=f"a{n}@r{round_number}.test",
            password="load-test-pass",
            capacity=3,
        )
        emails.append(agent.email)
    agents = []
    for n, email in enumerate(emails):
        server = c.servers[n % 3]
        cookie = await agent_cookie(server.base_url, email, "load-test-pass")
        agents.append(await connect_agent(server, email, cookie))

    http = httpx.AsyncClient(timeout=60)

    async def arrive(n: int) -> Client:
        # A burst of 200 arrivals on a 2-core machine: what matters here is correctness, so be patient.
        server = c.servers[n % 3]
        response = await http.post(f"{server.base_url}/api/v1/visitors", json={"site": site.public_key})
        token = response.json()["token"]
        visitor = Client(await websockets.connect(f"{server.ws_url}/ws/visitor", ping_interval=None, max_queue=None))
        await visitor.send(type="hello", site=site.public_key, token=token)
        await visitor.expect("welcome", timeout=60)
        await visitor.send(type="message", client_id=f"hello-{n}", body=f"visitor {n} at once")
        await visitor.expect("ack", timeout=60)
        return visitor

    try:
        visitors = await asyncio.gather(*(arrive(n) for n in range(200)))
    finally:
        await http.aclose()
    await poll_until(
        lambda: store_count(c, Conversation.site_id == site.id, Conversation.status == "active"), timeout=30
    )

    async def settled() -> bool:
        active = await store_count(c, Conversation.site_id == site.id, Conversation.status == "active")
        queued = await store_count(c, Conversation.site_id == site.id, Conversation.status == "queued")
        return active == 60 and queued == 140

    await poll_until(settled, timeout=30)
    await asyncio.gather(*(v.expect({"agent_joined", "queue"}, timeout=60) for v in visitors))

    async def positions_converged() -> bool:
        await asyncio.gather(*(v.drain(quiet=0.1) for v in visitors))
        joined = [v for v in visitors if v.of_type("agent_joined")]
        waiting = [v for v in visitors if not v.of_type("agent_joined")]
        latest = sorted(v.of_type("queue")[-1]["position"] for v in waiting if v.of_type("queue"))
        return len(joined) == 60 and latest == list(range(1, 141))

    await poll_until(positions_converged, timeout=30, interval=0.05)
    assert all(len(v.of_type("agent_joined")) <= 1 for v in visitors), "a visitor was assigned twice"
    await asyncio.gather(*(a.drain(quiet=0.2) for a in agents))
    assigned = [f["conversation"]["id"] for a in agents for f in a.of_type("assigned")]
    assert len(assigned) == 60 and len(set(assigned)) == 60, "a conversation went to two agents"
    assert max(len(a.of_type("assigned")) for a in agents) <= 3, "an agent went over capacity"
    async with c.services.sessions() as session:
        loads = Counter(
            (
                await session.execute(
                    select(Conversation.agent_id).where(
                        Conversation.site_id == site.id, Conversation.status == "active"
                    )
                )
            ).scalars()
        )
    assert len(loads) == 20 and max(loads.values()) == 3
    for client in [*visitors, *agents]:
        await client.close()


@pytest.mark.timeout(480)  # five rounds of 220 sockets on a 2-core machine
async def test_two_hundred_visitors_at_once_over_three_processes_five_times(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await start_all(c.servers)
        for round_number in range(5):
            await _round(c, round_number)


async def test_kill_9_of_a_visitors_process_loses_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path, processes=2) as c:
        await seed_demo(c.services, "*")
        a, b = c.servers
        await start_all(c.servers)
        jane = await connect_agent(b, "jane@acme.example")
        visitor, token = await connect_visitor(a)
        await visitor.send(type="message", client_id="v1", body="Mid-chat on A")
        assigned = await jane.expect("assigned")
        conversation_id = assigned["conversation"]["id"]
        await jane.send(type="message", conversation_id=conversation_id, client_id="j0", body="before the crash")
        seen = await visitor.expect("message", lambda f: f["body"] == "before the crash")
        a.kill()
        for n in range(3):
            await jane.send(type="message", conversation_id=conversation_id, client_id=f"j{n + 1}", body=f"after {n}")
            await jane.expect("ack", lambda f, n=n: f["client_id"] == f"j{n + 1}")
        again, _ = await connect_visitor(b, token, conversation_id=conversation_id, resume_after=seen["seq"])
        await again.send(type="message", client_id="v2", body="back, on B")
        await again.expect("ack")
        replayed = [f["body"] for f in again.of_type("message") if f["author"]["kind"] == "agent"]
        assert replayed == ["after 0", "after 1", "after 2"]
        seqs = [f["seq"] for f in again.of_type("message")]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
        await jane.expect("message", lambda f: f["body"] == "back, on B")
        conversation = await c.services.conversations.get(conversation_id)
        assert conversation.status == "active" and conversation.agent_id == assigned["conversation"]["agent"]["id"]


@pytest.fixture
def private_redis(tmp_path: Path):  # noqa: ANN201
    """A redis-server of this test's own, so flushing it touches nobody else."""
    port = free_port()
    process = subprocess.Popen(
        private_redis_command(port, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


async def test_redis_flush_mid_chat_recovers_within_ten_seconds(tmp_path: Path, private_redis: str) -> None:
    redis = Redis.from_url(private_redis)

    async def answers() -> bool:
        try:
            return bool(await redis.ping())
        except OSError:
            return False
        except Exception:  # redis.ConnectionError while the server is still starting
            return False

    await poll_until(answers)
    async with cluster(tmp_path, processes=2, redis_url=private_redis) as c:
        await seed_demo(c.services, "*")
        a, b = c.servers
        await start_all(c.servers)
        jane = await connect_agent(b, "jane@acme.example")
        visitors = []
        for n in range(4):  # Jane takes three; the fourth waits in line
            visitor, _ = await connect_visitor(a if n % 2 == 0 else b)
            await visitor.send(type="message", client_id=f"v{n}", body=f"visitor {n}")
            await visitor.expect({"agent_joined", "queue"})
            visitors.append(visitor)
        first, waiting = visitors[0], visitors[3]
        assert waiting.of_type("queue") and not waiting.of_type("agent_joined")
        conversation_id = first.of_type("ack")[0]["conversation_id"]
        site = await c.services.directory.site_by_key("site_demo")

        await redis.flushall()

        async def chats_flow() -> bool:
            marker = f"after flush {asyncio.get_running_loop().time()}"
            await jane.send(type="message", conversation_id=conversation_id, client_id=marker, body=marker)
            try:
                await first.expect("message", lambda f: f["body"] == marker, timeout=0.5)
            except AssertionError:
                return False
            return True

        await poll_until(chats_flow, timeout=10, interval=0.2)
        await poll_until(lambda: c.services.broker.routing.queue(site.id), timeout=10)
        queue = await c.services.broker.routing.queue(site.id)
        assert [e.conversation_id for e in queue] == [waiting.of_type("ack")[0]["conversation_id"]]

        async def jane_back() -> bool:
            # The process holding Jane's socket re-announces her status after its own rebuild.
            states = await c.services.broker.routing.agents(site.id)
            return any(s.status == "available" and s.load == 3 for s in states)

        await poll_until(jane_back, timeout=10)
        # Routing works on the rebuilt state: a chat closes, the waiting visitor gets Jane.
        await jane.send(type="close", conversation_id=conversation_id)
        await waiting.expect("agent_joined", timeout=10)
        async with c.services.sessions() as session:
            bodies = list(
                (
                    await session.execute(select(Message.body).where(Message.conversation_id == conversation_id))
                ).scalars()
            )
        assert "visitor 0" in bodies and any(b.startswith("after flush") for b in bodies)
    await redis.aclose()


async def test_health_endpoints_report_a_redis_outage_while_it_lasts(tmp_path: Path) -> None:
    port = free_port()
    command = private_redis_command(port, tmp_path)
    redis_server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220 (starts at once)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        async with cluster(tmp_path, processes=1, redis_url=url) as c:
            await start_all(c.servers)
            base = c.servers[0].base_url
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                assert (await http.get("/readyz")).json() == {"store": "up", "broker": "up"}
                redis_server.terminate()
                redis_server.wait(10)

                async def reports_down() -> bool:
                    ready = await http.get("/readyz")
                    live = await http.get("/healthz")
                    return ready.status_code == 503 and live.status_code == 200 and live.json()["broker"] == "down"

                await poll_until(reports_down, timeout=15)
                redis_server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220

                async def back_up() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await poll_until(back_up, timeout=20)
    finally:
        redis_server.terminate()
        redis_server.wait(10)
