"""Client worker processes: real websocket peers on the `websockets` library.

The orchestrator (bench/cli.py) starts workers with multiprocessing (spawn) and talks to each over a pipe:
it sends (command, kwargs) and gets ("ok", result) or ("error", traceback). A worker holds at most a few
thousand sockets (the open-file limit is 20,000 per process), and every wait has a deadline.

Two kinds of worker:
- `IdleWorker`: visitors that say hello, send one message (a conversation starts), get its ack, then only
  read (counting frames by type) while pings keep the sockets honest.
- `PairWorker`: visitor–agent pairs (or relay pairs) that exchange messages at a fixed total rate. Every
  message has a unique client_id; the worker keeps client_id → send time, and timestamps the sender's
  `ack` and the other side's `message` with the same monotonic clock, so no clock crosses a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import time
import traceback
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

CONNECT_OPTIONS: dict[str, Any] = {
    "compression": None,  # the server turns per-message deflate off; so do browsers' peers here
    "open_timeout": 60,
    "ping_interval": 20,  # like a browser's idle socket answering the server's 20 s pings, and pinging too
    "ping_timeout": 20,
    "close_timeout": 2,
    "max_size": 2**20,
}
FIRST_MESSAGE = "Hello! I have a question about my order, could someone help me?"
BODY_TEXT = "Thanks! And how long does delivery to Lisbon usually take for the 40 litre backpack? "
CLOSE_CONCURRENCY = 200


class SetupError(Exception):
    pass


def worker_entry(conn: Connection, kind: str, index: int) -> None:
    """The worker process: one event loop (uvloop when installed, like the server), commands from the pipe."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(conn, kind, index))
    else:
        uvloop.run(_serve(conn, kind, index))


async def _serve(conn: Connection, kind: str, index: int) -> None:
    worker: IdleWorker | PairWorker = IdleWorker(index) if kind == "idle" else PairWorker(index)
    loop = asyncio.get_running_loop()
    while True:
        command, kwargs = await loop.run_in_executor(None, conn.recv)
        if command == "exit":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.close_all(), 30)
            conn.send(("ok", None))
            return
        try:
            result = await getattr(worker, command)(**kwargs)
            conn.send(("ok", result))
        except Exception:  # noqa: BLE001 - the orchestrator reports it
            conn.send(("error", traceback.format_exc()))


class WorkerError(RuntimeError):
    pass


class Workers:
    """The orchestrator's side: N worker processes of one kind, called all at once."""

    def __init__(self, kind: str, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for index in range(count):
            parent, child = context.Pipe()
            proc = context.Process(
                target=worker_entry, args=(child, kind, index), daemon=True, name=f"bench-{kind}-{index}"
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def send(self, command: str, kwargs_list: list[dict[str, Any]]) -> None:
        for conn, kwargs in zip(self.conns, kwargs_list, strict=True):
            conn.send((command, kwargs))

    def collect(self, command: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        results = []
        for index, conn in enumerate(self.conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise WorkerError(f"worker {index} did not finish {command!r} within {timeout:.0f}s")
            status, value = conn.recv()
            if status != "ok":
                raise WorkerError(f"worker {index} failed {command!r}:\n{value}")
            results.append(value)
        return results

    def call(self, command: str, kwargs_list: list[dict[str, Any]], timeout: float) -> list[Any]:
        self.send(command, kwargs_list)
        return self.collect(command, timeout)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(("exit", {}))
        for conn, proc in zip(self.conns, self.procs, strict=True):
            with contextlib.suppress(Exception):
                if conn.poll(40):
                    conn.recv()
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


async def _recv_until(
    ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool], timeout: float, seen: Counter[str]
) -> dict[str, Any]:
    """Read frames until one matches; an `error` frame on the way is a failed setup."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            seen[frame.get("type", "?")] += 1
            if wanted(frame):
                return frame
            if frame.get("type") == "error":
                raise SetupError(f"error frame: {frame.get('code')}: {frame.get('message')}")


async def visitor_token(http: httpx.AsyncClient, site: str) -> str:
    try:
        response = await http.post("/api/v1/visitors", json={"site": site})
    except (httpx.ReadError, httpx.RemoteProtocolError):
        # A pooled keep-alive connection that the server closed (idle for 5 s: the rest of this visitor's
        # set-up can take longer under load) just as this request reused it. Browsers resend a request
        # that failed that way by themselves; so does the bench, once, on a fresh connection.
        response = await http.post("/api/v1/visitors", json={"site": site})
    if response.status_code != 201:
        raise SetupError(f"POST /api/v1/visitors: {response.status_code} {response.text[:200]}")
    return response.json()["token"]


async def _close_all(sockets: list[ClientConnection]) -> None:
    gate = asyncio.Semaphore(CLOSE_CONCURRENCY)

    async def close(ws: ClientConnection) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await ws.close()

    await asyncio.gather(*(close(ws) for ws in sockets))


# -- idle visitors -------------------------------------------------------------------------------------
class IdleWorker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.sockets: list[ClientConnection] = []
        self.readers: set[asyncio.Task[None]] = set()
        self.frames: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.dropped = 0
        self.closing = False

    async def open(self, targets: list[dict[str, Any]], concurrency: int, timeout: float, label: str) -> dict[str, Any]:
        """targets: [{base, site, count}]: that many visitors on that server and site."""
        started = time.perf_counter()
        gate = asyncio.Semaphore(concurrency)
        failures: Counter[str] = Counter()
        opened: Counter[str] = Counter()
        # No keep-alive: every visitor is another browser with a connection of its own, and a pooled one can
        # be closed by the server (idle 5 s) just as the next visitor's request reuses it.
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
        clients = {t["base"]: httpx.AsyncClient(base_url=t["base"], timeout=60, limits=limits) for t in targets}

        async def one(base: str, site: str, number: int) -> None:
            async with gate:
                try:
                    ws = await self._open_one(
                        clients[base], base.replace("http://", "ws://"), site, f"{label}.{self.index}.{number}"
                    )
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    failures[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                    return
                self.sockets.append(ws)
                opened[base] += 1
                reader = asyncio.create_task(self._read(ws))
                self.readers.add(reader)
                reader.add_done_callback(self.readers.discard)

        jobs = [asyncio.create_task(one(t["base"], t["site"], n)) for t in targets for n in range(t["count"])]
        done, pending = await asyncio.wait(jobs, timeout=timeout)
        for job in pending:
            job.cancel()
        if pending:
            failures[f"not opened within {timeout:.0f}s"] += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
        return {
            "opened": len(self.sockets),
            "opened_by_base": dict(opened),
            "failed": sum(failures.values()),
            "failures": dict(failures),
            "seconds": time.perf_counter() - started,
        }

    async def _open_one(self, http: httpx.AsyncClient, ws_base: str, site: str, client_id: str) -> ClientConnection:
        token = await visitor_token(http, site)
        ws = await connect(f"{ws_base}/ws/visitor", **CONNECT_OPTIONS)
        try:
            await ws.send(_dumps({"type": "hello", "site": site, "token": token}))
            await _recv_until(ws, lambda f: f.get("type") == "welcome", 60, self.frames)
            await ws.send(_dumps({"type": "message", "client_id": client_id, "body": FIRST_MESSAGE}))
            await _recv_until(ws, lambda f: f.get("type") == "ack" and f.get("client_id") == client_id, 60, self.frames)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                text = raw if isinstance(raw, str) else raw.decode()
                self.frames[json.loads(text).get("type", "?")] += 1
        except ConnectionClosed:
            pass
        if not self.closing:
            self.dropped += 1
            self.close_codes[str(ws.close_code)] += 1

    async def stats(self, reset: bool = False) -> dict[str, Any]:
        result = {
            "open": sum(1 for ws in self.sockets if ws.state is State.OPEN),
            "dropped": self.dropped,
            "close_codes": dict(self.close_codes),
            "frames": dict(self.frames),
        }
        if reset:
            self.frames = Counter()
        return result

    async def close_all(self) -> dict[str, Any]:
        self.closing = True
        started = time.perf_counter()
        await _close_all(self.sockets)
        for reader in list(self.readers):
            reader.cancel()
        count, self.sockets = len(self.sockets), []
        return {"closed": count, "seconds": time.perf_counter() - started}


# -- visitor–agent pairs ----------------------------------------------------------------------------------
class Peer:
    __slots__ = ("ws", "role", "conversation_id", "prefix", "waiters", "setup_seen", "closed")

    def __init__(self, ws: ClientConnection, role: str) -> None:
        self.ws = ws
        self.role = role
        self.conversation_id: str | None = None
        self.prefix = '{"type":"message","client_id":"'
        self.waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self.setup_seen: set[str] = set()
        self.closed = False

    def expect(self, wanted: Callable[[dict[str, Any]], bool]) -> asyncio.Future[dict[str, Any]]:
        """A future for the next frame that matches; register it BEFORE sending what it answers."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.append((wanted, future))
        return future


class Sent:
    __slots__ = (
        "t",
        "sender",
        "receiver",
        "ack_t",
        "seq",
        "conversation_id",
        "delivered_t",
        "acks",
        "deliveries",
        "echoes",
        "check",
    )

    def __init__(self, t: float, sender: Peer, receiver: Peer, check: bool) -> None:
        self.t = t
        self.sender = sender
        self.receiver = receiver
        self.ack_t: float | None = None
        self.seq: int | None = None
        self.conversation_id: str | None = None
        self.delivered_t: float | None = None
        self.acks = 0
        self.deliveries = 0
        self.echoes = 0
        self.check = check


class PairWorker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.peers: list[Peer] = []
        self.pairs: list[tuple[Peer, Peer]] = []
        self.readers: set[asyncio.Task[None]] = set()
        self.assigned: dict[str, Peer] = {}
        self.sent: dict[str, Sent] = {}
        self.errors: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self.dropped = 0
        self.closing = False
        self.acked_count = 0
        self.delivered_count = 0
        self.misrouted = 0
        self.engine: Any = None
        self.checks: set[asyncio.Task[None]] = set()
        self.store_checked = 0
        self.store_missing = 0
        self.store_check_errors = 0

    # -- frames in -------------------------------------------------------------------------------------
    def _on_frame(self, peer: Peer, raw: str | bytes) -> None:
        now = time.perf_counter()
        frame = json.loads(raw)
        kind = frame.get("type")
        self.frames[kind] += 1
        if kind == "ack":
            record = self.sent.get(frame.get("client_id"))
            if record is not None:
                record.acks += 1
                if record.ack_t is None:
                    record.ack_t = now
                    record.seq = frame.get("seq")
                    record.conversation_id = frame.get("conversation_id")
                    self.acked_count += 1
                    if record.check and self.engine is not None:
                        task = asyncio.create_task(self._check_stored(frame["client_id"], record.conversation_id))
                        self.checks.add(task)
                        task.add_done_callback(self.checks.discard)
                return
        elif kind == "message":
            client_id = frame.get("client_id")
            record = self.sent.get(client_id) if client_id else None
            if record is not None:
                if peer is record.receiver:
                    record.deliveries += 1
                    if record.delivered_t is None:
                        record.delivered_t = now
                        self.delivered_count += 1
                elif peer is record.sender:
                    record.echoes += 1
                else:
                    self.misrouted += 1
                return
            if client_id:
                peer.setup_seen.add(client_id)
        elif kind == "assigned":
            conversation = frame.get("conversation") or {}
            if conversation.get("id"):
                self.assigned[conversation["id"]] = peer
        elif kind == "error":
            self.errors[str(frame.get("code"))] += 1
        if peer.waiters:
            for entry in list(peer.waiters):
                wanted, future = entry
                if not future.done() and wanted(frame):
                    future.set_result(frame)
                    peer.waiters.remove(entry)
                    break

    async def _read(self, peer: Peer) -> None:
        try:
            async for raw in peer.ws:
                self._on_frame(peer, raw)
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - a bug here must not go unnoticed, but must not hang the run
            self.errors["client: " + traceback.format_exc(limit=1).splitlines()[-1][:80]] += 1
        peer.closed = True
        if not self.closing:
            self.dropped += 1

    def _start_reader(self, peer: Peer) -> None:
        self.peers.append(peer)
        task = asyncio.create_task(self._read(peer))
        self.readers.add(task)
        task.add_done_callback(self.readers.discard)

    async def _check_stored(self, client_id: str, conversation_id: str | None) -> None:
        """The sender has its ack: the message must already be readable from the store."""
        from sqlalchemy import text

        try:
            async with self.engine.connect() as connection:
                found = (
                    await connection.execute(
                        text("SELECT COUNT(*) FROM message WHERE conversation_id = :c AND client_id = :k"),
                        {"c": conversation_id, "k": client_id},
                    )
                ).scalar_one()
            self.store_checked += 1
            if found != 1:
                self.store_missing += 1
        except Exception:  # noqa: BLE001
            self.store_check_errors += 1

    # -- set-up ----------------------------------------------------------------------------------------
    async def setup(
        self,
        mode: str,
        visitor_base: str,
        agent_base: str,
        sites: list[dict[str, Any]],
        count: int,
        concurrency: int,
        timeout: float,
        database_url: str | None,
        settle: float = 1.0,
    ) -> dict[str, Any]:
        """Relay: `count` pairs. Nameplate: for each site {site, cookies}, its agents (one per cookie, each with
        room for one conversation) come online, then as many visitors each start a conversation; the router
        gives each visitor one agent, and that is a pair."""
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            if mode == "relay":
                await self._setup_relay(visitor_base.replace("http://", "ws://"), count, concurrency)
            else:
                await self._setup_nameplate(visitor_base, agent_base, sites, concurrency)
                if database_url:
                    # SQLAlchemy alone, not the server's package: the probe must not share the server's code.
                    from sqlalchemy.ext.asyncio import create_async_engine

                    options = {"connect_args": {"timeout": 10}} if database_url.startswith("sqlite") else {}
                    self.engine = create_async_engine(database_url, pool_size=5, **options)
        # Let the set-up's fan-out (queue, board, assignment frames) settle before anything is measured.
        await asyncio.sleep(settle)
        self._check_open("after set-up")
        return {
            "pairs": len(self.pairs),
            "seconds": time.perf_counter() - started,
            "errors": dict(self.errors),
            "frames": dict(self.frames),
        }

    def _check_open(self, when: str) -> None:
        closed = [peer for peer in self.peers if peer.closed]
        if closed:
            codes = Counter(f"{peer.role} {peer.ws.close_code} {peer.ws.close_reason or ''}".strip() for peer in closed)
            raise SetupError(f"{len(closed)} socket(s) closed {when}: {dict(codes)}")

    async def _setup_relay(self, ws_base: str, count: int, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def side(pair_id: str, role: str) -> Peer:
            async with gate:
                ws = await connect(ws_base, **CONNECT_OPTIONS)
                peer = Peer(ws, role)
                welcome = peer.expect(lambda f: f.get("type") == "welcome")
                self._start_reader(peer)
                await ws.send(_dumps({"type": "hello", "pair": pair_id, "role": role}))
                await welcome
                return peer

        async def pair(number: int) -> tuple[Peer, Peer]:
            pair_id = f"{self.index}.{number}"
            return await side(pair_id, "visitor"), await side(pair_id, "agent")

        self.pairs = list(await asyncio.gather(*(pair(n) for n in range(count))))

    async def _setup_nameplate(
        self, visitor_base: str, agent_base: str, sites: list[dict[str, Any]], concurrency: int
    ) -> None:
        gate = asyncio.Semaphore(concurrency)
        agent_ws = agent_base.replace("http://", "ws://") + "/ws/agent"
        visitor_ws = visitor_base.replace("http://", "ws://") + "/ws/visitor"

        async def agent(cookie: str) -> Peer:
            async with gate:
                ws = await connect(agent_ws, additional_headers={"Cookie": cookie}, **CONNECT_OPTIONS)
                peer = Peer(ws, "agent")
                welcome = peer.expect(lambda f: f.get("type") in ("welcome", "error"))
                self._start_reader(peer)
                await ws.send(_dumps({"type": "hello"}))
                frame = await welcome
                if frame["type"] != "welcome":
                    raise SetupError(f"agent hello refused: {frame}")
                return peer

        await asyncio.gather(*(agent(cookie) for site in sites for cookie in site["cookies"]))
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=visitor_base, timeout=60, limits=limits) as http:

            async def visitor(site: str, number: int) -> tuple[Peer, str]:
                async with gate:
                    token = await visitor_token(http, site)
                    ws = await connect(visitor_ws, **CONNECT_OPTIONS)
                    peer = Peer(ws, "visitor")
                    welcome = peer.expect(lambda f: f.get("type") in ("welcome", "error"))
                    self._start_reader(peer)
                    await ws.send(_dumps({"type": "hello", "site": site, "token": token}))
                    frame = await welcome
                    if frame["type"] != "welcome":
                        raise SetupError(f"visitor hello refused: {frame}")
                    client_id = f"setup.{self.index}.{number}"
                    ack = peer.expect(lambda f: f.get("type") in ("ack", "error"))
                    await ws.send(_dumps({"type": "message", "client_id": client_id, "body": FIRST_MESSAGE}))
                    frame = await ack
                    if frame["type"] != "ack":
                        raise SetupError(f"first message refused: {frame}")
                    peer.conversation_id = frame["conversation_id"]
                    return peer, client_id

            jobs = [(site["site"], n) for site in sites for n in range(len(site["cookies"]))]
            visitors = await asyncio.gather(*(visitor(site, number) for number, (site, _) in enumerate(jobs)))
        # Each agent has room for one conversation, so each gets exactly one visitor of its site; wait until
        # every agent has been assigned and has received the history (the visitor's first message) by replay.
        while True:
            self._check_open("while waiting for every visitor to be assigned an agent")
            ready = [
                (v, self.assigned[v.conversation_id])
                for v, client_id in visitors
                if v.conversation_id in self.assigned and client_id in self.assigned[v.conversation_id].setup_seen
            ]
            if len(ready) == len(visitors):
                break
            await asyncio.sleep(0.05)
        for visitor_peer, agent_peer in ready:
            agent_peer.conversation_id = visitor_peer.conversation_id
            agent_peer.prefix = f'{{"type":"message","conversation_id":"{visitor_peer.conversation_id}","client_id":"'
            self.pairs.append((visitor_peer, agent_peer))
        for peer in self.peers:
            peer.setup_seen.clear()

    # -- the measured load -----------------------------------------------------------------------------
    async def run(self, **load: Any) -> dict[str, Any]:
        """One measured load (`_run_load`) with the cyclic garbage collector off. A full collection in a
        client holding a thousand sockets takes 20–60 ms, and the stalled client then adds its pause to
        every message in flight, measured as if it were the server's: one staircase step showed a 59 ms
        maximum that was 57 ms of the client's own schedule lag. The load is bounded, so what it leaves
        for the collector is too; the collector runs after it, outside the measurement."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return await self._run_load(**load)
        finally:
            if enabled:
                gc.enable()

    async def _run_load(
        self,
        run_id: str,
        pairs: int,
        rate: float,
        duration: float,
        start_at: float,
        drain: float,
        check_every: int,
        body_chars: int,
        backlog_seconds: float = 3.0,
    ) -> dict[str, Any]:
        """Send `rate` messages a second for `duration` seconds over the first `pairs` pairs: message k goes
        to pair k % P, visitor→agent on even rounds and agent→visitor on odd ones, on a fixed schedule
        (each sender every 2P/rate seconds). Then wait up to `drain` seconds for the last acks and deliveries.

        A server that cannot keep up is not buried: once more than `backlog_seconds` worth of messages are
        sent but not delivered, sending stops (`aborted`), and what was sent is still waited for."""
        chosen = self.pairs[:pairs]
        count = len(chosen)
        if count == 0:
            raise SetupError("no pairs")
        total = max(1, round(rate * duration))
        interval = 1.0 / rate
        body = (BODY_TEXT * (body_chars // len(BODY_TEXT) + 1))[:body_chars]
        middle, end = '","body":"', body + '"}'
        prefix = f"{run_id}.{self.index}."
        self.sent = {}
        self.errors = Counter()
        self.frames = Counter()
        self.acked_count = self.delivered_count = 0
        max_backlog = max(50, int(rate * backlog_seconds))
        aborted_at: float | None = None
        self.misrouted = 0
        self.store_checked = self.store_missing = self.store_check_errors = 0
        dropped_before = self.dropped
        send_failures = 0
        t0 = time.perf_counter() + max(0.0, start_at - time.time())
        max_lag = 0.0
        k = 0
        while k < total:
            if k - self.delivered_count > max_backlog:
                aborted_at = time.perf_counter() - t0
                break
            now = time.perf_counter()
            due = t0 + k * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while k < total and t0 + k * interval <= now and k - self.delivered_count <= max_backlog:
                sender, receiver = chosen[k % count]
                if (k // count) % 2:
                    sender, receiver = receiver, sender
                client_id = f"{prefix}{k}"
                max_lag = max(max_lag, now - (t0 + k * interval))
                text = sender.prefix + client_id + middle + end
                check = check_every > 0 and k % check_every == 0
                self.sent[client_id] = Sent(time.perf_counter(), sender, receiver, check)
                try:
                    await sender.ws.send(text)
                except ConnectionClosed:
                    send_failures += 1
                k += 1
        sent_done = time.perf_counter()
        deadline = sent_done + drain
        while (self.acked_count < k or self.delivered_count < k) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.checks:
            await asyncio.wait(list(self.checks), timeout=10)
        records = self.sent.values()
        ack_ms = [(r.ack_t - r.t) * 1000.0 for r in records if r.ack_t is not None]
        delivered_ms = [(r.delivered_t - r.t) * 1000.0 for r in records if r.delivered_t is not None]
        last = max((r.delivered_t for r in records if r.delivered_t is not None), default=sent_done)
        result = {
            "scheduled": total,
            "sent": k,
            "aborted_at_s": aborted_at,
            "send_failures": send_failures,
            "acked": len(ack_ms),
            "delivered": len(delivered_ms),
            "missing_acks": sum(1 for r in records if r.acks == 0),
            "missing_deliveries": sum(1 for r in records if r.deliveries == 0),
            "duplicate_acks": sum(max(0, r.acks - 1) for r in records),
            "duplicate_deliveries": sum(max(0, r.deliveries - 1) for r in records),
            "misrouted": self.misrouted,
            "errors": dict(self.errors),
            "frames": dict(self.frames),  # every frame the peers received during the load, by type
            "dropped": self.dropped - dropped_before,
            "max_lag_ms": max_lag * 1000.0,
            "send_seconds": sent_done - t0,
            "finish_seconds": last - t0,
            "ack_ms": ack_ms,
            "delivered_ms": delivered_ms,
            # For the check against the store: every acked message must be there once, with the acked seq.
            "acks": [(cid, r.conversation_id, r.seq) for cid, r in self.sent.items() if r.ack_t is not None],
            "store_checked": self.store_checked,
            "store_missing": self.store_missing,
            "store_check_errors": self.store_check_errors,
        }
        self.sent = {}
        return result

    async def close_all(self) -> dict[str, Any]:
        self.closing = True
        await _close_all([peer.ws for peer in self.peers])
        for reader in list(self.readers):
            reader.cancel()
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
        count, self.peers, self.pairs = len(self.peers), [], []
        return {"closed": count}
