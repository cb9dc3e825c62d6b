"""`python -m bench.search`: transcript search and the conversation list at scale (not a timed test).

Seeds a fresh database with N conversations (default 1,000,000) over a year and about ten messages each
(10,000,000) — on PostgreSQL by COPY, on SQLite by executemany on one connection — with bodies drawn from a
vocabulary whose word frequencies fall off like a natural language's (Zipf), builds the indexes, ANALYZEs,
then times what /supervisor/conversations runs (`Transcripts.search`): full-text searches and the list
with filters, first page, each repeated. Prints p50 and p90; figures go to bench/README.md by hand.

    python -m bench.search [--conversations 1000000] [--engine postgresql|sqlite] [--repeat 15]
                           [--explain] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event

from nameplate.desk.transcripts import ConversationQuery, Transcripts
from nameplate.store import migrate
from nameplate.store.engine import make_engine, make_sessions

ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DAYS = 365
AGENTS = 50
TEAMS = 5
CUSTOMERS = 50_000
SITE = "benchsite"
SEARCH_TARGET_MS = 100
LIST_TARGET_MS = 50
# Rows generated and copied per round: a few hundred thousand messages is tens of megabytes at a time.
CHUNK = 20_000

# The head of the vocabulary: words people write in a shop's chat, most frequent first. The tail is made-up
# words, so a rare word really is rare (about one message in a million for the rarest).
_COMMON_WORDS = (
    "i the to my order you is a it and for can we of hi have on this your be with please thanks that not "
    "in do what will how when there me just get package delivery refund size return shipping help jacket "
    "boots tent backpack code discount tracking number address email invoice payment card charged twice "
    "stock available colour exchange warranty broken missing wrong arrived yesterday today tomorrow week "
    "store online account password login cart checkout sale price coupon gift voucher parcel courier"
)
COMMON = _COMMON_WORDS.split()
TAIL_WORDS = 30_000
# Sentences a tenth of messages start from: what the phrase query looks for among its scattered words.
PHRASES = ["where is my order", "tracking number", "i was charged twice", "can i return", "out of stock"]


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    tail = [f"{w}{rng.choice('aeiou')}{n:x}" for n, w in enumerate(rng.choices("bdfgklmnprstvz", k=TAIL_WORDS))]
    words = COMMON + tail
    cumulative, total = [], 0.0
    for rank in range(1, len(words) + 1):
        total += 1.0 / rank  # Zipf: the n-th word is 1/n as frequent as the first
        cumulative.append(total)
    return words, cumulative


@dataclass
class Seeded:
    conversations: int
    messages: int
    newest: datetime
    rare_word: str
    mid_words: tuple[str, str]


def new_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def generate(
    conversations: int, rng: random.Random, now: datetime
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Conversations, their messages and ratings, CHUNK conversations at a time, oldest first."""
    words, cumulative = vocabulary(rng)
    agents = [f"agent{n:03d}" for n in range(AGENTS)]
    teams = [f"team{n}" for n in range(TEAMS)]
    start = now - timedelta(days=DAYS)
    span = DAYS * 86400
    message_id = 0
    for first in range(0, conversations, CHUNK):
        rows, messages, ratings = [], [], []
        count = min(CHUNK, conversations - first)
        lengths = [rng.randint(4, 16) for _ in range(count)]  # 10 messages on average
        drawn = iter(rng.choices(words, cum_weights=cumulative, k=sum(lengths) * 9))
        for offset, length in enumerate(lengths):
            n = first + offset
            cid = f"conv{n:08d}"
            created = start + timedelta(seconds=span * n / conversations)
            # The newest few hundred are still open: the live part of a site.
            status = "closed" if n < conversations - 300 else ("active" if n % 4 else "queued")
            agent = None if status == "queued" else rng.choice(agents)
            team = rng.choice(teams) if rng.random() < 0.8 else None
            closed = created + timedelta(seconds=60 * length) if status == "closed" else None
            rows.append((cid, SITE, f"cust{rng.randrange(CUSTOMERS):06d}", status, agent, team, length, length,
                         length, created, created + timedelta(seconds=30) if agent else None, closed))  # fmt: skip
            for seq in range(1, length + 1):
                message_id += 1
                by_agent = agent is not None and seq % 2 == 0
                note = by_agent and rng.random() < 0.03
                body_words = [next(drawn) for _ in range(rng.randint(3, 9))]
                if rng.random() < 0.1:
                    body_words[1:1] = rng.choice(PHRASES).split()
                body = " ".join(body_words).capitalize() + rng.choice([".", "?", "!", ""])
                messages.append((message_id, cid, seq, "agent" if by_agent else "visitor",
                                 agent if by_agent else None, body, note, "note" if note else "public",
                                 f"c{seq}", created + timedelta(seconds=60 * seq)))  # fmt: skip
            if status == "closed" and rng.random() < 0.3:
                ratings.append((cid, rng.choice([1, 3, 4, 5, 5]), "", closed))
        yield rows, messages, ratings


CONVERSATION_COLUMNS = ["id", "site_id", "customer_id", "status", "agent_id", "team_id", "last_seq",
                        "visitor_read_seq", "agent_read_seq", "created_at", "assigned_at", "closed_at"]  # fmt: skip
MESSAGE_COLUMNS = ["id", "conversation_id", "seq", "author_kind", "agent_id", "body", "private", "visibility",
                   "client_id", "created_at"]  # fmt: skip
RATING_COLUMNS = ["conversation_id", "score", "comment", "created_at"]
AGENT_COLUMNS = ["id", "site_id", "given_name", "family_name", "title", "intro", "email", "password_hash", "role",
                 "capacity", "active", "session_version", "photo_version", "created_at"]  # fmt: skip


def people(now: datetime) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    return {
        "team": (["id", "site_id", "name"], [(f"team{n}", SITE, f"Team {n}") for n in range(TEAMS)]),
        "agent": (
            AGENT_COLUMNS,
            [
                (
                    f"agent{n:03d}",
                    SITE,
                    "Agent",
                    f"{n:03d}",
                    "",
                    "",
                    f"agent{n}@bench.example",
                    "x",
                    "agent",
                    3,
                    True,
                    0,
                    0,
                    now,
                )
                for n in range(AGENTS)
            ],
        ),  # fmt: skip
        "customer": (
            ["id", "site_id", "name", "verified", "attributes", "created_at", "last_seen_at"],
            [(f"cust{n:06d}", SITE, f"Customer {n}", False, "{}", now, now) for n in range(CUSTOMERS)],
        ),
    }


def summary(conversations: int, messages: int, now: datetime, rng: random.Random) -> Seeded:
    words, _ = vocabulary(rng)  # the same generator state as `generate` started from: the same words
    # With 1/rank frequencies over ~30,000 words: rank 20,000 is in about one message in 40,000; ranks 41
    # and 61 are in one or two messages in a hundred each, together in one in five thousand.
    return Seeded(conversations, messages, now, words[20_000], (COMMON[40], COMMON[60]))


# -- PostgreSQL -------------------------------------------------------------------------------------------
async def seed_postgres(url: str, conversations: int, rng: random.Random) -> Seeded:
    pg = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    now = datetime.now(UTC).replace(microsecond=0)
    vocabulary_seed = rng.random()
    try:
        await pg.execute(
            "INSERT INTO site (id, public_key, name, allowed_origins, secret, require_verification, created_at)"
            " VALUES ($1, 'site_bench', 'Bench', '*', 's', false, $2)",
            SITE,
            now,
        )
        for name, (columns, records) in people(now).items():
            await pg.copy_records_to_table(name, records=records, columns=columns)
        # COPY into bare tables, then build every index and constraint once: maintaining a GIN index row by
        # row over 10 million inserts is many times slower than building it at the end.
        saved = await pg.fetch(
            "SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE conrelid IN ('message'::regclass, 'conversation'::regclass, 'rating'::regclass)"
            " AND contype IN ('u', 'f') ORDER BY contype DESC"
        )
        indexes = await pg.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('message', 'conversation')"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        for row in saved:
            await pg.execute(f'ALTER TABLE {row["tab"]} DROP CONSTRAINT "{row["conname"]}"')
        for row in indexes:
            await pg.execute(f'DROP INDEX "{row["indexname"]}"')
        messages = 0
        began = time.perf_counter()
        for rows, message_rows, ratings in generate(conversations, random.Random(vocabulary_seed), now):
            await pg.copy_records_to_table("conversation", records=rows, columns=CONVERSATION_COLUMNS)
            await pg.copy_records_to_table("message", records=message_rows, columns=MESSAGE_COLUMNS)
            await pg.copy_records_to_table("rating", records=ratings, columns=RATING_COLUMNS)
            messages += len(message_rows)
        await pg.execute("SELECT setval(pg_get_serial_sequence('message', 'id'), $1)", messages)
        took = time.perf_counter() - began
        print(f"copied {conversations:,} conversations and {messages:,} messages in {took:.0f} s")
        began = time.perf_counter()
        await pg.execute("SET maintenance_work_mem = '1GB'")
        for row in indexes:
            await pg.execute(row["indexdef"])
        for row in saved:
            await pg.execute(f'ALTER TABLE {row["tab"]} ADD CONSTRAINT "{row["conname"]}" {row["def"]}')
        print(f"indexes and constraints built in {time.perf_counter() - began:.0f} s")
        began = time.perf_counter()
        await pg.execute("VACUUM ANALYZE")
        print(f"VACUUM ANALYZE took {time.perf_counter() - began:.0f} s")
        return summary(conversations, messages, now, random.Random(vocabulary_seed))
    finally:
        await pg.close()


# -- SQLite -----------------------------------------------------------------------------------------------
def seed_sqlite(path: Path, conversations: int, rng: random.Random) -> Seeded:
    now = datetime.now(UTC).replace(microsecond=0)
    vocabulary_seed = rng.random()
    db = sqlite3.connect(path)
    stamp = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's DateTime stores a moment on SQLite

    def value(v: Any) -> Any:
        return v.strftime(stamp) if isinstance(v, datetime) else v

    def insert(table: str, columns: list[str], records: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
            ([value(v) for v in record] for record in records),
        )

    try:
        with db:
            db.execute(
                "INSERT INTO site (id, public_key, name, allowed_origins, secret, require_verification, created_at)"
                " VALUES (?, 'site_bench', 'Bench', '*', 's', 0, ?)",
                (SITE, now.strftime(stamp)),
            )
            for name, (columns, records) in people(now).items():
                insert(name, columns, records)
        messages = 0
        began = time.perf_counter()
        # The triggers of migration 0007 index each message as it is inserted: the real write path.
        for rows, message_rows, ratings in generate(conversations, random.Random(vocabulary_seed), now):
            with db:
                insert("conversation", CONVERSATION_COLUMNS, rows)
                insert("message", MESSAGE_COLUMNS, message_rows)
                insert("rating", RATING_COLUMNS, ratings)
            messages += len(message_rows)
        took = time.perf_counter() - began
        print(f"inserted {conversations:,} conversations and {messages:,} messages in {took:.0f} s")
        began = time.perf_counter()
        db.execute("INSERT INTO message_fts (message_fts) VALUES ('optimize')")
        db.execute("ANALYZE")
        db.commit()
        print(f"FTS optimize and ANALYZE took {time.perf_counter() - began:.0f} s")
        return summary(conversations, messages, now, random.Random(vocabulary_seed))
    finally:
        db.close()


# -- measuring --------------------------------------------------------------------------------------------
def cases(seeded: Seeded) -> list[tuple[str, str, dict[str, Any]]]:
    last = seeded.newest.date()
    month = {"first_day": last - timedelta(days=30), "last_day": last}
    a, b = seeded.mid_words
    return [
        ("search", f"rare word ({seeded.rare_word})", {"text": seeded.rare_word}),
        ("search", "common word (order)", {"text": "order"}),
        ("search", f"two words ({a} {b})", {"text": f"{a} {b}"}),
        ("search", 'phrase ("tracking number")', {"text": '"tracking number"'}),
        ("search", "word and exclusion (refund -jacket)", {"text": "refund -jacket"}),
        ("search", "prefix (warrant*)", {"text": "warrant*"}),
        ("search", "rare word, last 30 days", {"text": seeded.rare_word, **month}),
        ("search", "common word, last 30 days", {"text": "order", **month}),
        (
            "search",
            "phrase, status closed, one agent",
            {"text": '"tracking number"', "status": "closed", "agent_id": "agent007"},
        ),  # fmt: skip
        ("list", "no filter", {}),
        ("list", "status closed", {"status": "closed"}),
        ("list", "status active", {"status": "active"}),
        ("list", "one agent", {"agent_id": "agent007"}),
        ("list", "one team", {"team_id": "team3"}),
        (
            "list",
            "a month (90-60 days ago)",
            {"first_day": last - timedelta(days=90), "last_day": last - timedelta(days=60)},
        ),  # fmt: skip
        (
            "list",
            "team + status + month",
            {
                "team_id": "team1",
                "status": "closed",
                "first_day": last - timedelta(days=90),
                "last_day": last - timedelta(days=60),
            },
        ),  # fmt: skip
    ]


async def measure(url: str, seeded: Seeded, repeat: int, explain: bool) -> list[str]:
    engine = make_engine(url)
    statements: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    transcripts = Transcripts(make_sessions(engine))
    lines = ["| kind | query | matches | p50 ms | p90 ms | target |", "|---|---|---|---|---|---|"]
    try:
        for kind, label, filters in cases(seeded):
            query = ConversationQuery(site_id=SITE, **filters)
            await transcripts.search(query)  # warm: the first run reads the pages from disk into the cache
            timings = []
            for _ in range(repeat):
                statements.clear()
                began = time.perf_counter()
                page = await transcripts.search(query)
                timings.append((time.perf_counter() - began) * 1000)
            p50 = statistics.median(timings)
            p90 = statistics.quantiles(timings, n=10)[-1] if len(timings) > 1 else p50
            target = SEARCH_TARGET_MS if kind == "search" else LIST_TARGET_MS
            matches = f"{page.total:,}{'+' if page.more else ''}"
            verdict = "ok" if p50 <= target else "MISSED"
            lines.append(f"| {kind} | {label} | {matches} | {p50:.1f} | {p90:.1f} | ≤ {target} {verdict} |")
            print(lines[-1], flush=True)
            if explain or p50 > target:
                await show_plans(url, statements)
    finally:
        await engine.dispose()
    return lines


async def show_plans(url: str, statements: list[tuple[str, Any]]) -> None:
    """EXPLAIN ANALYZE of each statement the search ran (PostgreSQL; SQLite: its query plan)."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.split("///", 1)[1])
        for statement, parameters in statements:
            print("   ", statement.replace("\n", " ")[:300])
            for row in db.execute("EXPLAIN QUERY PLAN " + statement, parameters):
                print("      ", row[-1])
        db.close()
        return
    pg = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for statement, parameters in statements:
            print("   ", statement.replace("\n", " ")[:300])
            for row in await pg.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *parameters):
                print("      ", row[0])
    finally:
        await pg.close()


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(21)
    if args.engine == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="nameplate-bench-search-"))
        path = folder / "store.db"
        url = f"sqlite+aiosqlite:///{path}"
        try:
            await migrate.upgrade_to_head(url)
            seeded = seed_sqlite(path, args.conversations, rng)
            lines = await measure(url, seeded, args.repeat, args.explain)
        finally:
            if not args.keep:
                shutil.rmtree(folder)  # after the run: nothing else waits on the loop now
            else:
                print(f"kept {path}")
    else:
        name = f"nameplate_bench_search_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{ADMIN_DSN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
        try:
            await migrate.upgrade_to_head(url)
            seeded = await seed_postgres(url, args.conversations, rng)
            lines = await measure(url, seeded, args.repeat, args.explain)
        finally:
            if not args.keep:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                print(f"kept database {name}")
            await admin.close()
    print(f"\n{args.engine}, {seeded.conversations:,} conversations, {seeded.messages:,} messages, "
          f"{args.repeat} runs each, {date.today().isoformat()}:")  # fmt: skip
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search")
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--explain", action="store_true", help="print every query's plan (always when missed)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
