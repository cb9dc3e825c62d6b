"""`python -m bench.insight`: supervisor insight at scale on PostgreSQL (not a timed test).

Seeds a fresh database with N conversations over a year (default 1,000,000) and their event timelines by
COPY, then measures the 30-day report (`Reports.report`, what /supervisor/reports computes) and the
clustering of one day's 5,000 first messages. Figures go to bench/README.md by hand.

    python -m bench.insight [--conversations 1000000] [--semantic] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from nameplate.insight.reports import Period, Reports
from nameplate.insight.topics import LexicalEmbedder, Question, cluster, default_embedder, question_of
from nameplate.people.directory import Directory
from nameplate.store import migrate
from nameplate.store.engine import make_engine, make_sessions

ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DAYS = 365
AGENTS = 40
TEAMS = 4
CUSTOMERS = 20_000
QUESTIONS = [
    "where is my order {n}", "my package still hasn't arrived", "order {n} not delivered yet",
    "how do I return {item}", "can I send back the {item} I bought", "what is your return policy",
    "do you ship to {country}", "how much is shipping to {country}", "what are your opening hours",
    "is the {item} waterproof", "what size {item} should I get", "can I change my delivery address",
    "my discount code does not work", "I was charged twice for order {n}", "do you have the {item} in stock",
]  # fmt: skip
ITEMS = ["tent", "sleeping bag", "hiking boots", "rain jacket", "backpack", "stove"]
COUNTRIES = ["Canada", "Norway", "Japan", "Brazil", "Kenya"]


def new_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


async def seed(url: str, conversations: int, rng: random.Random) -> tuple[str, datetime]:
    pg = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        site = "benchsite"
        await pg.execute(
            "INSERT INTO site (id, public_key, name, allowed_origins, secret, require_verification, created_at)"
            " VALUES ($1, 'site_bench', 'Bench', '*', 's', false, $2)",
            site,
            now,
        )
        teams = [f"team{n}" for n in range(TEAMS)]
        await pg.copy_records_to_table(
            "team", records=[(t, site, f"Team {t}") for t in teams], columns=["id", "site_id", "name"]
        )
        agents = [f"agent{n:03d}" for n in range(AGENTS)]
        await pg.copy_records_to_table(
            "agent",
            records=[
                (a, site, "Agent", a, "", "", f"{a}@bench.example", "x", "agent", 3, True, 0, 0, now) for a in agents
            ],
            columns=[
                "id", "site_id", "given_name", "family_name", "title", "intro", "email", "password_hash", "role",
                "capacity", "active", "session_version", "photo_version", "created_at",
            ],
        )  # fmt: skip
        customers = [f"cust{n:06d}" for n in range(CUSTOMERS)]
        await pg.copy_records_to_table(
            "customer",
            records=[(c, site, False, "{}", now, now) for c in customers],
            columns=["id", "site_id", "verified", "attributes", "created_at", "last_seen_at"],
        )
        conversation_rows = []
        event_rows = []
        start = now - timedelta(days=DAYS)
        span = DAYS * 86400
        for n in range(conversations):
            cid = f"conv{n:08d}"
            created = start + timedelta(seconds=span * n / conversations)
            team = rng.choice(teams)
            agent = rng.choice(agents)
            wait = rng.expovariate(1 / 40)
            events = [(site, cid, "queued", created, team, None, None, None)]
            roll = rng.random()
            if roll < 0.06:  # gave up
                left = created + timedelta(seconds=wait)
                events += [(site, cid, "left", left, team, None, wait, "https://shop.example/cart"),
                           (site, cid, "closed", left, team, None, None, None)]  # fmt: skip
                conversation_rows.append(
                    (cid, site, rng.choice(customers), "closed", None, team, 1, 0, 0, created, None, None, left)
                )
                event_rows.extend(events)
                continue
            assigned = created + timedelta(seconds=wait)
            reply = assigned + timedelta(seconds=rng.expovariate(1 / 20))
            first = (reply - created).total_seconds()
            events += [(site, cid, "assigned", assigned, team, agent, wait, None),
                       (site, cid, "first_reply", reply, team, agent, first, None)]  # fmt: skip
            holder = agent
            closed = reply + timedelta(seconds=rng.expovariate(1 / 400))
            if roll < 0.09:  # transferred mid-chat
                other = rng.choice(agents)
                moved = reply + timedelta(seconds=60)
                events += [(site, cid, "transfer", moved, team, agent, None, other),
                           (site, cid, "assigned", moved, team, other, None, None)]  # fmt: skip
                holder = other
                closed = moved + timedelta(seconds=rng.expovariate(1 / 300))
            events.append((site, cid, "closed", closed, team, holder, None, None))
            if rng.random() < 0.3:
                events.append(
                    (
                        site,
                        cid,
                        "rated",
                        closed + timedelta(seconds=30),
                        team,
                        holder,
                        float(rng.choice([1, 3, 4, 5, 5])),
                        None,
                    )
                )
            conversation_rows.append(
                (cid, site, rng.choice(customers), "closed", holder, team, 3, 0, 0, created, assigned, reply, closed)
            )
            event_rows.extend(events)
        await pg.copy_records_to_table(
            "conversation",
            records=conversation_rows,
            columns=[
                "id", "site_id", "customer_id", "status", "agent_id", "team_id", "last_seq", "visitor_read_seq",
                "agent_read_seq", "created_at", "assigned_at", "first_agent_reply_at", "closed_at",
            ],
        )  # fmt: skip
        await pg.copy_records_to_table(
            "insight_event",
            records=event_rows,
            columns=["site_id", "conversation_id", "kind", "at", "team_id", "agent_id", "value", "detail"],
        )
        await pg.execute("ANALYZE")
        print(f"seeded {len(conversation_rows):,} conversations and {len(event_rows):,} events")
        return site, now
    finally:
        await pg.close()


def day_of_questions(count: int, rng: random.Random, day: date) -> list[Question]:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    found = []
    for n in range(count):
        text = rng.choice(QUESTIONS).format(
            n=rng.randint(1000, 99999), item=rng.choice(ITEMS), country=rng.choice(COUNTRIES)
        )
        question = question_of(rng.choice(["", "Hi, ", "hello! "]) + text)
        assert question is not None
        found.append(Question(f"c{n}", moment + timedelta(seconds=n), day, question))
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.insight")
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--semantic", action="store_true", help="also cluster with the sentence model")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    rng = random.Random(18)
    name = f"nameplate_bench_insight_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{ADMIN_DSN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    try:
        await migrate.upgrade_to_head(url)
        began = time.perf_counter()
        site, now = await seed(url, args.conversations, rng)
        print(f"seeding took {time.perf_counter() - began:.0f} s")
        engine = make_engine(url)
        sessions = make_sessions(engine)
        reports = Reports(sessions, Directory(sessions, 3))
        zone = ZoneInfo("Europe/Berlin")
        last = now.astimezone(zone).date()
        period = Period(last - timedelta(days=29), last, zone)
        timings = []
        for _ in range(5):
            began = time.perf_counter()
            report = await reports.report(site, period)
            timings.append((time.perf_counter() - began) * 1000)
        print(f"30-day report: {report.total.chats:,} chats; ms per run {[round(t) for t in timings]},"
              f" median {statistics.median(timings):.0f} ms")  # fmt: skip
        await engine.dispose()
        questions = day_of_questions(5000, rng, last)
        print(f"{len({q.text for q in questions}):,} distinct texts among 5,000 masked first messages")
        for embedder in [LexicalEmbedder()] + ([default_embedder("semantic")] if args.semantic else []):
            began = time.perf_counter()
            topics = cluster(questions, embedder)
            print(f"clustering 5,000 first messages ({embedder.name}): {time.perf_counter() - began:.1f} s,"
                  f" {len(topics)} clusters, largest {topics[0].count}")  # fmt: skip
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
