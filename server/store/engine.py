"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL through asyncpg to scale."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from nameplate.config import sqlite_path
from nameplate.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

Sessions = async_sessionmaker[AsyncSession]


def tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes in WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(database_url: str, pool_size: int = 20) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        path = sqlite_path(database_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(database_url, connect_args={"timeout": 10})
        event.listen(engine.sync_engine, "connect", tune_sqlite)
        return engine
    # A pre-ping would cost a round trip on every checkout; stale connections are recycled instead. No
    # overflow: the pool closes an overflow connection as soon as it is returned, and opening the next one
    # (a backend forked, an SSL offer declined, a log-in) made a reconnect storm's ramp a third slower
    # than waiting for a kept connection does.
    return create_async_engine(database_url, pool_size=pool_size, max_overflow=0, pool_recycle=1800)


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (SQLAlchemy types `execute` as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount
