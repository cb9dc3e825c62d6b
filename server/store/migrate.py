"""Schema migrations: Alembic, shipped inside the package and configured in code, so they run from any cwd.

Who migrates:
- embedded SQLite: `Nameplate.start()` upgrades to head by itself; nothing to run by hand.
- PostgreSQL: `nameplate migrate` (the Procfile's release phase). A server process only checks that the
  schema is at head and refuses to start otherwise, so N processes never race to alter tables and old code
  never runs against a schema it does not know.

Every change runs in one transaction holding a lock (SQLite: the write lock; PostgreSQL: an advisory
lock), so two `migrate`s started together run one after the other and a failed migration leaves nothing
half-done. Developer commands (see server/migrations/README):

    python -m nameplate.store.migrate revision -m "add widget table"    # autogenerate the next migration
    python -m nameplate.store.migrate check | current | history | upgrade [REV] | downgrade REV
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from nameplate.store.engine import make_engine

log = logging.getLogger("nameplate.migrate")
# Alembic lists its autogenerate plugins at INFO whenever it loads: noise in every server's start-up log.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The first migration: what `create_tables` used to build before the store had migrations.
BASELINE = "0001"
BASELINE_TABLES = frozenset(
    {
        "site",
        "team",
        "agent",
        "agentteam",
        "agentphoto",
        "customer",
        "conversation",
        "message",
        "rating",
        "pageview",
        "cannedresponse",
    }
)
# Constraint names, so later migrations can drop or alter them on every engine (SQLite's batch mode needs
# names). nameplate.store.models leaves most constraints unnamed; migrations compare and generate against a copy of
# its tables carrying this convention, and 0001 created its constraints under these names.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# What migrations build that the models cannot describe: full-text search of message bodies (0007) — FTS5's
# virtual table and the shadow tables it keeps on SQLite, the generated tsvector column and its GIN index on
# PostgreSQL. Autogenerate would otherwise want them dropped; `include_name` keeps them out of comparisons.
UNMODELLED_NAMES = frozenset(
    {
        "message_fts",
        "message_fts_data",
        "message_fts_idx",
        "message_fts_content",
        "message_fts_docsize",
        "message_fts_config",
        "ix_message_body_fts",
        "body_tsv",
    }
)


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic's filter for reflected objects: everything but UNMODELLED_NAMES."""
    return not (type_ in ("table", "index", "column") and name in UNMODELLED_NAMES)


# Any fixed 64-bit number, the same in every process: PostgreSQL's advisory lock that serialises migrations.
_PG_LOCK_KEY = 0x6E616D65706C6174  # "nameplat"

T = TypeVar("T")


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this code was written for."""


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini, works from any directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Numbered files (0002_add_widget.py) read in order; `revision` below picks the next number.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("truncate_slug_length", "40")
    if database_url is not None:
        # Read by env.py when it has to open its own connection (the plain `alembic` command line).
        config.attributes["database_url"] = database_url
    return config


@functools.cache
def target_metadata() -> MetaData:
    """The models' tables (SQLModel.metadata), copied under NAMING_CONVENTION: what migrations must build."""
    named = MetaData(naming_convention=NAMING_CONVENTION)
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(named)
    return named


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest migration; raises if the history has two heads (two branches each added one)."""
    head = script_directory().get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


# -- running Alembic on a connection -------------------------------------------------------------------
def _alembic(connection: Connection, run: Callable[[Config], T]) -> T:
    """Run an Alembic command on this connection: env.py uses it instead of opening its own.

    Alembic's `context` and `op` are process-wide proxies: one process must not run two commands at once
    (the server runs one, at start-up; across processes the migration lock orders them)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    return run(config)


def _current(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise SchemaOutOfDate(f"the database has several migration heads {sorted(heads)}")
    return heads[0] if heads else None


def _exclusively(connection: Connection, work: Callable[[Connection], T]) -> T:
    """Run schema changes in one transaction that holds the migration lock, then commit."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations rebuild a table (copy, drop, rename); with foreign keys on, dropping a table that
        # others reference would fail. The pragma is ignored inside a transaction, so set it before one.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            if sqlite:
                # pysqlite opens no transaction for DDL; open one ourselves, taking the write lock at once so
                # a second process waits (busy_timeout) and then finds the schema already at head.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            return work(connection)
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def _adopt_unversioned(connection: Connection) -> None:
    """A database built by `create_tables` (before migrations existed) is marked as the baseline revision."""
    if _current(connection) is not None:
        return
    present = set(inspect(connection).get_table_names()) & BASELINE_TABLES
    if not present:
        return
    if present != BASELINE_TABLES:
        raise SchemaOutOfDate(
            f"the database has some Nameplate tables ({', '.join(sorted(present))}) but no migration history; "
            "restore it from a backup or migrate it by hand"
        )
    log.warning("the database predates migrations: marking its tables as revision %s", BASELINE)
    _alembic(connection, lambda config: command.stamp(config, BASELINE))


def _upgrade(connection: Connection, revision: str) -> str | None:
    current = _current(connection)
    if current is not None and not _known(current):
        raise _migrated_by_newer_code(current)
    _adopt_unversioned(connection)
    _alembic(connection, lambda config: command.upgrade(config, revision))
    return _current(connection)


def _downgrade(connection: Connection, revision: str) -> str | None:
    _alembic(connection, lambda config: command.downgrade(config, revision))
    return _current(connection)


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "include_name": include_name})
    return list(compare_metadata(context, target_metadata()))


# -- the async API the server, the CLI and the tests use ---------------------------------------------------
async def upgrade(engine: AsyncEngine, revision: str = "head") -> str | None:
    """Bring the schema on this engine to `revision`; returns the revision it is at afterwards."""
    async with engine.connect() as connection:
        return await connection.run_sync(_exclusively, lambda c: _upgrade(c, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_exclusively, lambda c: _downgrade(c, revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def drift(engine: AsyncEngine) -> list[Any]:
    """What autogenerate would write: differences between the models and this database (empty = none)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_drift)


async def check(engine: AsyncEngine) -> None:
    """`alembic check`: raises alembic.util.AutoGenerateDiffsDetected if the models drifted from head."""
    async with engine.connect() as connection:
        await connection.run_sync(_alembic, command.check)


async def require_head(engine: AsyncEngine) -> None:
    """Fail fast when the schema is not the one this code expects (PostgreSQL: run `nameplate migrate`)."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutOfDate(
            f"the database has no schema yet (this code needs revision {head}): run `nameplate migrate`"
        )
    if not _known(current):
        raise _migrated_by_newer_code(current)
    raise SchemaOutOfDate(
        f"the database schema is at revision {current}, this code needs {head}: run `nameplate migrate`"
    )


def _migrated_by_newer_code(revision: str) -> SchemaOutOfDate:
    return SchemaOutOfDate(
        f"the database is at revision {revision}, which this code does not know: it was migrated by a newer "
        "Nameplate; deploy that version (or downgrade the schema with the version that migrated it)"
    )


def _known(revision: str) -> bool:
    try:
        return script_directory().get_revision(revision) is not None
    except CommandError:
        return False


async def prepare_schema(engine: AsyncEngine) -> None:
    """At start-up: SQLite migrates itself (embedded, one process); PostgreSQL must already be at head."""
    if engine.dialect.name == "sqlite":
        # The usual case costs one read; upgrade() takes the lock and looks again.
        if await current_revision(engine) != head_revision():
            log.info("database schema upgraded to revision %s", await upgrade(engine))
    else:
        await require_head(engine)


async def upgrade_to_head(database_url: str) -> str | None:
    """`nameplate migrate`: upgrade the database at this URL to head; returns the revision it is at."""
    engine = make_engine(database_url)
    try:
        return await upgrade(engine)
    finally:
        await engine.dispose()


def upgrade_to_head_sync(database_url: str) -> str | None:
    return asyncio.run(upgrade_to_head(database_url))


# -- developer commands: python -m nameplate.store.migrate ... ------------------------------------------------------
async def _on_scratch_database(database_url: str | None, work: Callable[[Connection], T]) -> T:
    """Run `work` on the given database as it is, or on a throwaway SQLite file upgraded to head."""
    with tempfile.TemporaryDirectory(prefix="nameplate-migrate-") as folder:
        engine = make_engine(database_url or f"sqlite+aiosqlite:///{Path(folder) / 'scratch.db'}")
        try:
            if database_url is None:
                await upgrade(engine)
            async with engine.connect() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()


def _next_rev_id() -> str:
    numbers = [int(r.revision) for r in script_directory().walk_revisions() if r.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def _tidy(path: Path) -> None:
    """Format a generated migration with ruff (a dev dependency) when it is installed."""
    for arguments in (["format", "--quiet"], ["check", "--fix", "--quiet"]):
        try:
            subprocess.run([sys.executable, "-m", "ruff", *arguments, str(path)], check=False)
        except OSError:
            return


def _describe(difference: Any) -> str:
    """One line for an autogenerate difference, e.g. `add_table webhook`, `modify_type message body`."""
    if isinstance(difference, list):  # column changes come grouped per column
        return "; ".join(_describe(item) for item in difference)
    kind, *parts = difference
    names = [part if isinstance(part, str) else getattr(part, "name", None) for part in parts]
    words = [kind, *(name for name in names if isinstance(name, str))]
    if kind.startswith("modify_") and len(parts) >= 2:
        words.append(f"{parts[-2]!r} -> {parts[-1]!r}")
    return " ".join(words)


def _dev_command(args: argparse.Namespace) -> None:
    from nameplate.config import normalise_database_url

    url = normalise_database_url(args.database_url) if args.database_url else None
    if args.action == "revision":

        def write(connection: Connection) -> Any:
            return _alembic(
                connection,
                lambda config: command.revision(config, message=args.message, autogenerate=True, rev_id=_next_rev_id()),
            )

        script = asyncio.run(_on_scratch_database(url, write))
        if script is None:
            return
        _tidy(Path(script.path))
        print(
            f"wrote {script.path}\nRead it before committing: autogenerate misses renames, data changes and "
            "the server_default a new NOT NULL column on a filled table needs."
        )
    elif args.action == "check":
        differences = asyncio.run(_on_scratch_database(url, _drift))
        for difference in differences:
            print("  " + _describe(difference))
        print("models and migrations agree" if not differences else f"{len(differences)} differences: add a migration")
        sys.exit(1 if differences else 0)
    elif args.action == "history":
        command.history(alembic_config())
    else:
        from nameplate.config import Settings

        engine = make_engine(url or Settings.from_env().database_url)

        async def run() -> str | None:
            try:
                if args.action == "upgrade":
                    return await upgrade(engine, args.revision)
                if args.action == "downgrade":
                    return await downgrade(engine, args.revision)
                return await current_revision(engine)
            finally:
                await engine.dispose()

        print(f"database schema at revision {asyncio.run(run()) or '(empty)'}; head is {head_revision()}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m nameplate.store.migrate", description="Nameplate schema migrations"
    )
    parser.add_argument(
        "--database-url",
        help="default: a scratch SQLite database for revision/check, DATABASE_URL for upgrade/downgrade/current",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    revision = actions.add_parser("revision", help="autogenerate the next migration from the models")
    revision.add_argument("-m", "--message", required=True)
    actions.add_parser("check", help="exit 1 if the models differ from the migrations")
    actions.add_parser("current", help="the database's revision")
    actions.add_parser("history", help="list the migrations")
    upgrade_ = actions.add_parser("upgrade", help="upgrade the database")
    upgrade_.add_argument("revision", nargs="?", default="head")
    downgrade_ = actions.add_parser("downgrade", help="downgrade the database (e.g. -1, base)")
    downgrade_.add_argument("revision")
    _dev_command(parser.parse_args(argv))


if __name__ == "__main__":
    main()
