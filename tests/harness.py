"""Test harness: a real uvicorn server on a free port in the test's event loop, and protocol clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets

from nameplate.app import create_app
from nameplate.config import Settings
from nameplate.demo.seed import seed_demo
from nameplate.protocol.inbound import WS_MAX_SIZE
from nameplate.realtime.lean_protocol import LeanWebSocketProtocol
from nameplate.services import Services

DEFAULT_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'nameplate.db'}",
        secret_key="test-secret-" + uuid.uuid4().hex,
        agent_grace_seconds=1.0,
        presence_interval_seconds=0.1,
        # Every test client mints its tokens from 127.0.0.1; the limit itself is tested at its default.
        visitor_tokens_per_minute=1_000_000,
        # Digests follow the wall clock: after 08:00 a test's outbox would hold the day's digest too. The
        # digest tests turn them on and pass their own "now".
        digest_time="off",
    )
    return replace(base, **overrides)


@dataclass
class RunningServer:
    base_url: str
    ws_url: str
    services: Services
    server: uvicorn.Server
    task: asyncio.Task[Any]
    port: int

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 15)


async def start_server(settings: Settings, port: int | None = None) -> RunningServer:
    port = port or free_port()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws=LeanWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=WS_MAX_SIZE,  # as `nameplate serve` runs it
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.01)
    return RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app.state.services, server, task, port)


@contextlib.asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[RunningServer]:
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.stop()


async def seed(services: Services, origins: str = "*") -> None:
    await seed_demo(services, origins)


_template: Path | None = None


async def seeded_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a database already migrated and seeded with the demo shop.

    Seeding hashes three passwords with argon2 and re-encodes three photos: done once per test run
    into a template file, which each test then copies (a file copy costs milliseconds).
    """
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="nameplate-template-"))
        running = await start_server(test_settings(folder))
        try:
            await seed(running.services)
        finally:
            await running.stop()
        _template = folder / "nameplate.db"
    shutil.copyfile(_template, tmp_path / "nameplate.db")
    return test_settings(tmp_path, **overrides)


@dataclass
class Client:
    """A websocket peer that keeps every frame it received and can wait for the next matching one."""

    ws: Any
    frames: list[dict[str, Any]] = field(default_factory=list)
    _cursor: int = 0

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def _receive_one(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def expect(
        self,
        type_: str | set[str],
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """The first not-yet-taken frame of this type (matching `where`), waiting for it if needed."""
        deadline = time.monotonic() + timeout
        index = self._cursor
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                wanted = type_ if isinstance(type_, set) else {type_}
                if frame.get("_taken") or frame.get("type") not in wanted:
                    continue
                if where is None or where(frame):
                    frame["_taken"] = True
                    self._advance_cursor()
                    return frame
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await self._receive_one(remaining)
            except TimeoutError:
                seen = [(f.get("type"), f.get("position") or f.get("body") or f.get("code")) for f in self.frames[-12:]]
                raise AssertionError(f"no {type_!r} frame within {timeout}s; last frames: {seen}") from None

    def _advance_cursor(self) -> None:
        while self._cursor < len(self.frames) and self.frames[self._cursor].get("_taken"):
            self._cursor += 1

    async def drain(self, quiet: float = 0.3) -> None:
        """Read until nothing arrives for `quiet` seconds (used only to collect what was sent, not to sync)."""
        with contextlib.suppress(TimeoutError):
            while True:
                await self._receive_one(quiet)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == type_]

    async def close(self) -> None:
        await self.ws.close()

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Read until the server closes; returns the close code."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                await self._receive_one(deadline - time.monotonic())
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        raise AssertionError("the server did not close the socket")


async def visitor_token(base_url: str, site_key: str = "site_demo") -> str:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/api/v1/visitors", json={"site": site_key})
        response.raise_for_status()
        return response.json()["token"]


async def connect_visitor(
    running: RunningServer, token: str | None = None, site_key: str = "site_demo", **hello: Any
) -> tuple[Client, str]:
    token = token or await visitor_token(running.base_url, site_key)
    ws = await websockets.connect(f"{running.ws_url}/ws/visitor", ping_interval=None, max_queue=None)
    client = Client(ws)
    await client.send(type="hello", site=site_key, token=token, **hello)
    await client.expect("welcome")
    return client, token


async def agent_cookie(base_url: str, email: str, password: str = "nameplate-demo") -> str:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return f"nameplate_session={response.cookies['nameplate_session']}"


async def connect_agent(running: RunningServer, email: str, cookie: str | None = None, **hello: Any) -> Client:
    cookie = cookie or await agent_cookie(running.base_url, email)
    ws = await websockets.connect(
        f"{running.ws_url}/ws/agent", additional_headers={"Cookie": cookie}, ping_interval=None, max_queue=None
    )
    client = Client(ws)
    await client.send(type="hello", **hello)
    await client.expect("welcome")
    return client


async def poll_until(check: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.02) -> Any:
    """Poll an async or sync check until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(interval)
