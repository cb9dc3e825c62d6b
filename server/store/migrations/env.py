"""Alembic's environment. Target: the SQLModel tables in nameplate.store.models, with named constraints.

nameplate.store.migrate hands a live connection in `config.attributes["connection"]` (already in the transaction that
holds the migration lock). Without one (a hand-written alembic.ini), env.py opens its own from
`config.attributes["database_url"]`, else DATABASE_URL through Settings — never from an ini file.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from nameplate.store.migrate import include_name, target_metadata

config = context.config


def render_item(type_: str, obj: Any, _autogen_context: Any) -> str | bool:
    """Write sqlmodel's column types (AutoString, UTCDateTime) as the plain SQLAlchemy types they wrap, so
    migrations do not import sqlmodel internals: String(length=32), DateTime(timezone=True)."""
    if type_ == "type" and isinstance(obj, TypeDecorator) and type(obj).__module__.startswith("sqlmodel."):
        return f"sa.{obj.impl!r}"
    return False


def _configure(**options: Any) -> None:
    context.configure(
        target_metadata=target_metadata(),
        # Every migration must run on SQLite too, whose ALTER TABLE is limited: autogenerate writes batch
        # operations (table rebuilds on SQLite, plain ALTERs on PostgreSQL).
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
        include_name=include_name,
        **options,
    )


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url is None:
        from nameplate.config import Settings

        url = Settings.from_env().database_url
    return url


def run_migrations_offline() -> None:
    """`--sql` mode: print the SQL instead of running it."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection, transactional_ddl=connection.in_transaction() or None)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_own_connection() -> None:
    from nameplate.store.engine import make_engine

    engine = make_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
elif (connection := config.attributes.get("connection")) is not None:
    # nameplate.store.migrate has opened the transaction (SQLite included), so a failed migration leaves nothing behind.
    _run(connection)
else:
    asyncio.run(_run_on_own_connection())
