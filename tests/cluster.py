"""Several real `nameplate serve` processes sharing one PostgreSQL database and one Redis, for scale-out tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from nameplate.config import Settings
from nameplate.services import Services
from nameplate.store.migrate import upgrade_to_head
from tests.harness import free_port
from tests.services import create_postgres_database, drop_postgres_database, require_redis, unique_prefix

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServerProcess:
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nameplate", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"server on {self.port} exited: {self.log_path.read_text()[-3000:]}")
                try:
                    if (await http.get(f"{self.base_url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"server on {self.port} not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9: no goodbyes, no cleanup — what a crashed machine looks like."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    servers: list[ServerProcess]
    settings: Settings
    services: Services
    redis_url: str
    prefix: str
    extra: dict[str, object] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, processes: int = 3, redis_url: str | None = None, **env_overrides: str
) -> AsyncIterator[Cluster]:
    """N server processes on a fresh PostgreSQL database and a unique Redis prefix.

    The test process keeps its own Nameplate on the same database (for seeding and reading the store)
    whose broker is the same Redis, so it sees what the servers see."""
    redis_url = redis_url or require_redis()
    database_url = await create_postgres_database()
    prefix = unique_prefix("cluster")
    await upgrade_to_head(database_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_"))},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "SECRET_KEY": "cluster-secret-" + prefix,
        "AGENT_GRACE_SECONDS": env_overrides.pop("AGENT_GRACE_SECONDS", "30"),
        "PRESENCE_INTERVAL_SECONDS": env_overrides.pop("PRESENCE_INTERVAL_SECONDS", "0.5"),
        "LOG_LEVEL": env_overrides.pop("LOG_LEVEL", "warning"),
        # The machine's PostgreSQL allows 100 clients in all, shared with whatever else runs there.
        "DATABASE_POOL_SIZE": env_overrides.pop("DATABASE_POOL_SIZE", "5"),
        # Every test client mints its tokens from 127.0.0.1.
        "VISITOR_TOKENS_PER_MINUTE": env_overrides.pop("VISITOR_TOKENS_PER_MINUTE", "1000000"),
        **env_overrides,
    }
    settings = Settings.from_env(env)
    services = Services.build(settings)
    await services.broker.connect()
    servers = [ServerProcess(free_port(), env, tmp_path / f"server-{n}.log") for n in range(processes)]
    try:
        yield Cluster(servers, settings, services, redis_url, prefix)
    finally:
        for server in servers:
            server.stop()
        await services.broker.disconnect()
        await services.engine.dispose()
        await _delete_prefix(redis_url, prefix)
        await drop_postgres_database(database_url)


async def start_all(servers: list[ServerProcess]) -> None:
    for server in servers:
        server.start()
    await asyncio.gather(*(server.wait_ready() for server in servers))


async def _delete_prefix(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()
