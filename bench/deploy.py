"""The configurations under test: where the store and broker live, how many server processes, and the
seeding and checking that happen around a run (fresh database and Redis prefix each time, removed after)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from base64 import b64decode, b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import REPO, Proc, start_servers

POSTGRES_ADMIN_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AGENT_PASSWORD = "bench-password-1"
MIGRATE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ConfigSpec:
    name: str
    postgres: bool
    redis: bool
    processes: int
    description: str


CONFIGS: dict[str, ConfigSpec] = {
    "embedded": ConfigSpec("embedded", False, False, 1, "SQLite (WAL) + in-process broker, 1 process"),
    "pg-redis": ConfigSpec("pg-redis", True, True, 1, "PostgreSQL + Redis broker, 1 process"),
    "pg-redis-2": ConfigSpec(
        "pg-redis-2", True, True, 2, "PostgreSQL + Redis broker, 2 processes (visitor on A, agent on B)"
    ),
}


@dataclass(frozen=True)
class SiteSeed:
    key: str
    agents: int = 0
    capacity: int = 1


@dataclass(frozen=True)
class SeededAgent:
    id: str
    email: str
    session_version: int


def unavailable_reason(spec: ConfigSpec) -> str | None:
    """Why this configuration cannot run here (service down, backend missing), or None."""
    if spec.postgres:
        try:
            asyncio.run(_pg_admin("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable", reported as such
            return f"PostgreSQL not usable at {POSTGRES_ADMIN_DSN}: {exc}"
    if spec.redis:
        try:
            import redis

            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except Exception as exc:  # noqa: BLE001
            return f"Redis not usable at {REDIS_URL}: {exc}"
        try:
            from nameplate.broker import make_broker

            make_broker(REDIS_URL, "bench-probe:")
        except Exception as exc:  # noqa: BLE001
            return f"the server's Redis broker backend is not usable: {exc}"
    return None


async def _pg_admin(sql: str) -> Any:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


@dataclass
class Deployment:
    """One configuration, brought up for one scenario: fresh store, unique Redis prefix, own secret."""

    spec: ConfigSpec
    label: str
    extra_env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    redis_prefix: str = ""
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    servers: list[Proc] = field(default_factory=list)
    _pg_name: str | None = None
    _workdir: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        run_id = uuid.uuid4().hex[:8]
        self._workdir = Path(tempfile.mkdtemp(prefix=f"nameplate-bench-{self.spec.name}-{self.label}-"))
        if self.spec.postgres:
            self._pg_name = f"nameplate_bench_{run_id}"
            asyncio.run(_pg_admin(f'CREATE DATABASE "{self._pg_name}"'))
            base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
            self.database_url = f"{base}/{self._pg_name}".replace("postgresql://", "postgresql+asyncpg://", 1)
        else:
            self.database_url = f"sqlite+aiosqlite:///{self._workdir / 'bench.db'}"
        self.redis_prefix = f"nameplate-bench-{run_id}:" if self.spec.redis else ""
        if self.spec.postgres:
            self._migrate()

    def _migrate(self) -> None:
        """`nameplate migrate`, as the release phase runs it. (SQLite migrates itself at start-up: the seeding
        step does that, through the same `prepare_schema` the server and the CLI call.)"""
        result = subprocess.run(
            [sys.executable, "-m", "nameplate", "migrate"],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=MIGRATE_TIMEOUT_SECONDS,
        )
        if result.returncode != 0:
            raise RuntimeError(f"`nameplate migrate` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX")}
        env.update(
            DATABASE_URL=self.database_url,
            SECRET_KEY=self.secret_key,
            LOG_LEVEL="warning",
            # The bench drives each visitor at a few messages a second: far above a person's pace, so the
            # per-visitor limit (burst 10, 2/s) is lifted. The agents' limit (30, 10/s) is not configurable
            # and is respected by pacing (see bench/clients.py).
            MESSAGE_BURST="1000",
            MESSAGE_REFILL_PER_SECOND="1000",
            # Thousands of bench visitors mint their tokens from this one address.
            VISITOR_TOKENS_PER_MINUTE="10000000",
            PYTHONUNBUFFERED="1",
        )
        if self.spec.redis:
            env["REDIS_URL"] = REDIS_URL
            env["REDIS_PREFIX"] = self.redis_prefix
        env.update(self.extra_env)
        return env

    def start_servers(self) -> list[Proc]:
        assert self._workdir is not None
        names = [f"{self.spec.name}-{self.label}-{letter}" for letter in "AB"[: self.spec.processes]]
        self.servers = start_servers(names, self.env(), self._workdir / "logs")
        return self.servers

    def stop_servers(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []

    def teardown(self, keep_logs_in: Path | None = None) -> None:
        self.stop_servers()
        if self._workdir is not None and keep_logs_in is not None:
            with contextlib.suppress(OSError):
                for log in (self._workdir / "logs").glob("*.log"):
                    shutil.copy(log, keep_logs_in / log.name)
        if self._pg_name is not None:
            with contextlib.suppress(Exception):
                asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)'))
            self._pg_name = None
        if self.redis_prefix:
            with contextlib.suppress(Exception):
                _redis_delete_prefix(self.redis_prefix)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- seeding -----------------------------------------------------------------------------------
    def seed(self, sites: list[SiteSeed]) -> dict[str, list[SeededAgent]]:
        return asyncio.run(_seed(self.database_url, self.secret_key, sites))

    def session_cookie(self, agent: SeededAgent) -> str:
        return session_cookie(self.secret_key, agent)

    def check_login(self, server: Proc, agent: SeededAgent) -> None:
        """Log one agent in through POST /login and check the bench's cookies carry the same session.

        Each log-in costs an argon2 verification (~0.17 s of the server's event loop here) and the log-in
        throttle allows 5 per address per 5 minutes, so the bench signs the other agents' session cookies
        with the deployment's SECRET_KEY (Starlette's SessionMiddleware format) instead.
        """
        from itsdangerous import TimestampSigner

        from nameplate.app import SESSION_COOKIE

        response = httpx.post(
            f"{server.base_url}/login", json={"email": agent.email, "password": AGENT_PASSWORD}, timeout=30
        )
        if response.status_code != 200:
            raise RuntimeError(f"POST /login failed: {response.status_code} {response.text[:300]}")
        raw = response.cookies[SESSION_COOKIE]
        real = json.loads(b64decode(TimestampSigner(self.secret_key).unsign(raw)))
        forged = json.loads(
            b64decode(TimestampSigner(self.secret_key).unsign(self.session_cookie(agent).split("=", 1)[1]))
        )
        if any(real.get(key) != value for key, value in forged.items()):
            raise RuntimeError(f"the server's session {real} does not contain the bench's session {forged}")

    def database_sessions(self) -> int | None:
        """PostgreSQL only: connections ever opened to this database (pg_stat_database.sessions), so a load
        can report how many new connections the server processes opened during it."""
        if self._pg_name is None:
            return None
        try:
            return int(
                asyncio.run(_pg_admin(f"SELECT sessions FROM pg_stat_database WHERE datname = '{self._pg_name}'")) or 0
            )
        except Exception:  # noqa: BLE001 - a figure we can do without
            return None

    # -- checking the store ------------------------------------------------------------------------
    def stored_messages(self, client_id_prefix: str) -> dict[str, list[tuple[str, int]]]:
        """client_id → [(conversation_id, seq)] for every stored message whose client_id has this prefix."""
        return asyncio.run(_stored_messages(self.database_url, client_id_prefix))

    def sequence_problems(self) -> list[str]:
        """Conversations whose stored seqs are not exactly 1..last_seq."""
        return asyncio.run(_sequence_problems(self.database_url))


def session_cookie(secret_key: str, agent: SeededAgent) -> str:
    from itsdangerous import TimestampSigner

    from nameplate.app import SESSION_COOKIE
    from nameplate.people.credentials import session_payload

    data = b64encode(json.dumps(session_payload(agent.id, agent.session_version)).encode())
    return f"{SESSION_COOKIE}={TimestampSigner(secret_key).sign(data).decode()}"


async def _seed(database_url: str, secret_key: str, sites: list[SiteSeed]) -> dict[str, list[SeededAgent]]:
    """Sites and agents through the server's own Directory; agents after the first reuse its password hash
    (argon2 costs ~0.17 s per hash, and the bench seeds hundreds of agents)."""
    from nameplate.config import Settings
    from nameplate.services import Services
    from nameplate.store.models import Agent

    services = Services.build(Settings.from_env({"DATABASE_URL": database_url, "SECRET_KEY": secret_key}))
    seeded: dict[str, list[SeededAgent]] = {}
    password_hash: str | None = None
    try:
        await _prepare_schema(services.engine)
        for spec in sites:
            site = await services.directory.create_site(f"Bench {spec.key}", allowed_origins="*", public_key=spec.key)
            agents: list[Any] = []
            unsaved: list[Any] = []
            for index in range(spec.agents):
                email = f"agent{index}@{spec.key}.bench.example"
                if password_hash is None:
                    agent = await services.directory.create_agent(
                        site.id,
                        given_name="Bench",
                        family_name=f"Agent {index}",
                        email=email,
                        password=AGENT_PASSWORD,
                        title="Bench agent",
                        capacity=spec.capacity,
                    )
                    password_hash = agent.password_hash
                else:
                    agent = Agent(
                        site_id=site.id,
                        given_name="Bench",
                        family_name=f"Agent {index}",
                        email=email,
                        password_hash=password_hash,
                        title="Bench agent",
                        capacity=spec.capacity,
                    )
                    unsaved.append(agent)
                agents.append(agent)
            if unsaved:
                async with services.sessions() as session:
                    session.add_all(unsaved)
                    await session.commit()
            seeded[spec.key] = [SeededAgent(a.id, a.email, a.session_version) for a in agents]
    finally:
        await services.engine.dispose()
    return seeded


async def _prepare_schema(engine: Any) -> None:
    """As the CLI does before it touches the store: SQLite migrates itself, PostgreSQL must be at head."""
    from nameplate.store.migrate import prepare_schema

    await prepare_schema(engine)


async def _stored_messages(database_url: str, prefix: str) -> dict[str, list[tuple[str, int]]]:
    from sqlalchemy import text

    from nameplate.store.engine import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT client_id, conversation_id, seq FROM message WHERE client_id LIKE :p"),
                {"p": prefix + "%"},
            )
            found: dict[str, list[tuple[str, int]]] = {}
            for client_id, conversation_id, seq in rows:
                found.setdefault(client_id, []).append((conversation_id, seq))
            return found
    finally:
        await engine.dispose()


async def _sequence_problems(database_url: str) -> list[str]:
    from sqlalchemy import text

    from nameplate.store.engine import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT c.id, c.last_seq, COUNT(m.id), COUNT(DISTINCT m.seq), MIN(m.seq), MAX(m.seq) "
                    "FROM conversation c LEFT JOIN message m ON m.conversation_id = c.id "
                    "GROUP BY c.id, c.last_seq"
                )
            )
            problems = []
            for conversation_id, last_seq, count, distinct, low, high in rows:
                if count == 0 and last_seq == 0:
                    continue
                if not (count == distinct == last_seq == high and low == 1):
                    problems.append(
                        f"{conversation_id}: last_seq={last_seq} rows={count} distinct={distinct} min={low} max={high}"
                    )
            return problems
    finally:
        await engine.dispose()


def _redis_delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)
