"""Shared by the security tests: the demo shop served on PostgreSQL + Redis (the path that differs from the
embedded default), and small helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nameplate.people.credentials import identity_hash
from nameplate.store.migrate import upgrade_to_head
from tests.harness import RunningServer, seed, start_server, test_settings
from tests.services import create_postgres_database, drop_postgres_database, require_redis, unique_prefix


@contextlib.asynccontextmanager
async def postgres_redis_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningServer]:
    redis_url = require_redis()
    database_url = await create_postgres_database()
    try:
        await upgrade_to_head(database_url)
        settings = test_settings(
            tmp_path,
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix=unique_prefix("security"),
            database_pool_size=5,
            # No agent's grace runs out while the server stops: once (under load) a requeue during shutdown
            # held uvicorn's lifespan past the harness's 15 s.
            **{"agent_grace_seconds": 30.0, **overrides},
        )
        running = await start_server(settings)
        try:
            await seed(running.services)
            yield running
        finally:
            await running.stop()
    finally:
        await drop_postgres_database(database_url)


async def site_secret(server: RunningServer, key: str = "site_demo") -> str:
    site = await server.services.directory.site_by_key(key)
    assert site is not None
    return site.secret


async def proof(server: RunningServer, user_id: str, **fields: Any) -> dict[str, Any]:
    """The identify fields of a signed-in user with a valid user_hash."""
    return {"user_id": user_id, "user_hash": identity_hash(await site_secret(server), user_id), **fields}
