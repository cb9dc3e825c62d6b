"""Access to the machine's real Redis and PostgreSQL for tests, isolated per run.

On a machine without them, tests that need them skip with a loud reason; under CI (CI=true) a missing
service is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
RUN_ID = uuid.uuid4().hex[:10]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {reason}; a missing service is a failure here, not a skip")
    pytest.skip(f"SKIPPED LOUDLY: {reason}")


def require_service(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        _missing(f"{name} is not reachable at {host}:{port} (run ../shared/services-up)")


def private_redis_command(port: int, directory: Path) -> list[str]:
    """A throwaway redis-server of a test's own (no persistence): flushing or stopping it touches nobody."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("the redis-server binary is not installed")
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]


def require_redis() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def unique_prefix(label: str = "") -> str:
    return f"nameplate-test-{RUN_ID}-{label}{uuid.uuid4().hex[:6]}:"


async def create_postgres_database() -> str:
    """A fresh, empty PostgreSQL database for one test; returns its asyncpg SQLAlchemy URL."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    name = f"nameplate_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"


async def drop_postgres_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
