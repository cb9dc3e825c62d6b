"""Transcript search on SQLite (FTS5) and the real PostgreSQL (tsvector, GIN): the same query language finds
the same conversations, for messages written through the message log (the real write path), private notes
only for supervisors, hostile input refused or harmless, and the index following updates, deletes and the
migration's backfill.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update

from nameplate.config import Settings
from nameplate.desk.transcripts import PAGE_SIZE, ConversationQuery, Transcripts
from nameplate.errors import NameplateError
from nameplate.protocol.vocabulary import Visibility
from nameplate.services import Services
from nameplate.store import migrate
from nameplate.store.engine import make_engine, make_sessions
from nameplate.store.message_log.log import NewMessage
from nameplate.store.models import AuthorKind, Conversation, Customer, Message, Site
from tests.services import create_postgres_database, drop_postgres_database

VISITOR = AuthorKind.visitor.value
AGENT = AuthorKind.agent.value


@dataclass
class Searchable:
    kind: str
    url: str
    services: Services
    site_id: str
    customer_id: str
    agent_id: str
    transcripts: Transcripts

    async def chat(self, *bodies: str, note: str | None = None, site_id: str | None = None) -> str:
        """A conversation whose messages go through the message log, as a live chat's do."""
        conversation = await self.services.conversations.start(site_id or self.site_id, self.customer_id)
        for body in bodies:
            await self.services.message_log.append(NewMessage(conversation.id, VISITOR, body))
        if note is not None:
            await self.services.message_log.append(
                NewMessage(conversation.id, AGENT, note, agent_id=self.agent_id, visibility=Visibility.note)
            )
        return conversation.id

    async def found(self, words: str, **filters: Any) -> set[str]:
        page = await self.transcripts.search(ConversationQuery(site_id=self.site_id, text=words, **filters))
        return {row.id for row in page.rows}


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Searchable]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else ""
    if request.param == "postgresql":
        url = await create_postgres_database()
    try:
        await migrate.upgrade_to_head(url)
        services = Services.build(Settings(database_url=url, secret_key="search-test"))
        services.message_log.start()
        try:
            site = await services.directory.create_site("Search Shop", allowed_origins="*")
            agent = await services.directory.create_agent(
                site.id, given_name="Jane", family_name="Okafor", email="jane@shop.example", password="horse battery"
            )
            customer = Customer(site_id=site.id, name="Ada")
            async with services.sessions() as session:
                session.add(customer)
                await session.commit()
            yield Searchable(
                request.param, url, services, site.id, customer.id, agent.id, Transcripts(services.sessions)
            )
        finally:
            await services.message_log.stop()
            await services.engine.dispose()
    finally:
        if request.param == "postgresql":
            await drop_postgres_database(url)


async def test_words_phrases_exclusions_and_prefixes(store: Searchable) -> None:
    a = await store.chat("My hiking boots leak at the seam.", "Which model of boots?")
    b = await store.chat("The boots arrived, thanks!", "Tracking number was wrong")
    c = await store.chat("Wo ist meine Bestellung? Grüße aus Köln")
    d = await store.chat("Please write to ada@example.com or call +1 555-0100")
    elsewhere = await store.services.directory.create_site("Other Shop", allowed_origins="*")
    other = await store.chat("boots boots boots", site_id=elsewhere.id)

    assert await store.found("boots") == {a, b}  # never the other site's conversation
    assert await store.found("BOOTS Leak") == {a}  # both words, in one message, any case
    assert await store.found("leak model") == set()  # each in a message of its own: not one message
    assert await store.found('"boots leak"') == {a}
    assert await store.found('"leak boots"') == set()  # a phrase keeps its order
    assert await store.found("arrived") == {b}
    assert await store.found("arrived -thanks") == set()
    assert await store.found('boots -"the seam"') == {a, b}  # a's other message has boots without it
    assert await store.found("arriv*") == {b}
    assert await store.found("köln") == {c} and await store.found("grüße") == {c}
    assert await store.found("ada@example.com") == {d}
    assert await store.found("555-0100") == {d}
    assert await store.found("AND OR NEAR") == set()  # words like any other, none of them in a message
    assert other not in await store.found("boots")


async def test_private_notes_are_searched_only_for_supervisors(store: Searchable) -> None:
    conversation = await store.chat("Where is my parcel?", note="Refund approved by the warehouse")
    assert await store.found("warehouse") == {conversation}
    assert await store.found("warehouse", include_private=False) == set()
    assert await store.found("parcel", include_private=False) == {conversation}
    page = await store.transcripts.search(ConversationQuery(site_id=store.site_id, text="refund approved"))
    excerpt = page.snippets[conversation]
    assert (excerpt.before, excerpt.match, excerpt.after, excerpt.private) == (
        "",
        "Refund approved",
        " by the warehouse",
        True,
    )
    page = await store.transcripts.search(ConversationQuery(site_id=store.site_id, text="wareh*"))
    assert page.snippets[conversation].match == "warehouse"


async def test_search_keeps_the_filters_and_pages_newest_first(store: Searchable) -> None:
    made = []
    for n in range(PAGE_SIZE + 5):
        conversation_id = await store.chat(f"parcel number {n}")
        made.append(conversation_id)
        async with store.services.sessions() as session:
            when = datetime(2024, 1 + n % 12, 1 + n % 28, 12, n % 60, tzinfo=UTC)
            await session.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(created_at=when)
            )
            await session.commit()
    first = await store.transcripts.search(ConversationQuery(site_id=store.site_id, text="parcel"))
    second = await store.transcripts.search(ConversationQuery(site_id=store.site_id, text="parcel", page=2))
    assert (len(first.rows), first.more, first.pages) == (PAGE_SIZE, True, 2)
    assert (len(second.rows), second.more, second.pages, second.total) == (5, False, 2, PAGE_SIZE + 5)
    listed = [row.id for row in first.rows + second.rows]
    assert sorted(listed) == sorted(made) and len(set(listed)) == len(listed)
    assert listed == [row.id for row in sorted(first.rows + second.rows, key=lambda r: (r.created_at, r.id))][::-1]
    march = {conversation_id for n, conversation_id in enumerate(made) if n % 12 == 2}
    assert await store.found("parcel", first_day=date(2024, 3, 1), last_day=date(2024, 3, 31)) == march
    assert await store.found("parcel 14", first_day=date(2024, 3, 1), last_day=date(2024, 3, 31)) == {made[14]}
    assert await store.found("parcel", status="closed") == set()
    assert len(await store.found("parcel", status="queued")) == PAGE_SIZE


HOSTILE = [
    '"',
    '" OR "',
    "(boots",
    "boots) OR (1=1",
    "NEAR(boots leak, 2)",
    "boots AND OR NOT leak",
    "body:boots",
    "message_fts:boots",
    "{body}: boots",
    "^boots",
    "boots\\",
    '\\" boots',
    "'; DROP TABLE message; --",
    "boots*)*",
    "\x00boots",
    "boo\u202ets",
    "boots:* & !leak | x <-> y",
    "🙂 boots 🙂",
    "x" * 10_000,
    " ".join(["boots"] * 40),
]


async def test_hostile_input_is_refused_or_harmless(store: Searchable) -> None:
    boots = await store.chat("My boots leak")
    for typed in HOSTILE:
        try:
            found = await store.found(typed)
        except NameplateError as refused:
            assert refused.status == 400, typed
            continue
        assert found <= {boots}, typed
    assert await store.found("body:boots") == set()  # the words "body" and "boots", not a column filter
    assert await store.found("boots*)*") == {boots}
    assert await store.found('"boots') == {boots}  # an unclosed quote is a phrase to the end
    async with store.services.sessions() as session:  # and the table is still there
        assert (await session.execute(text("SELECT count(*) FROM message"))).scalar_one() == 1


async def test_the_index_follows_updates_and_deletes(store: Searchable) -> None:
    conversation = await store.chat("The zipper broke")
    async with store.services.sessions() as session:
        await session.execute(
            update(Message).where(Message.conversation_id == conversation).values(body="The buckle broke")
        )
        await session.commit()
    assert await store.found("zipper") == set() and await store.found("buckle") == {conversation}
    async with store.services.sessions() as session:
        await session.execute(delete(Message).where(Message.conversation_id == conversation))
        await session.commit()
    assert await store.found("buckle") == set()


async def test_the_sqlite_triggers_exist_at_head(store: Searchable) -> None:
    """A later migration that rebuilds the message table on SQLite (batch mode) drops its triggers: it must
    create them again, or new messages would silently go unindexed."""
    if store.kind != "sqlite":
        pytest.skip("triggers keep the FTS5 table in step on SQLite only; PostgreSQL's column is generated")
    async with store.services.sessions() as session:
        result = await session.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'message'")
        )
        names = {row[0] for row in result}
    assert names >= {"message_fts_insert", "message_fts_update", "message_fts_delete"}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_migration_backfills_messages_stored_before_it(kind: str, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}" if kind == "sqlite" else await create_postgres_database()
    engine = make_engine(url)
    try:
        await migrate.upgrade(engine, "0006")
        sessions = make_sessions(engine)
        async with sessions() as session:
            site = Site(name="Old Shop")
            session.add(site)
            await session.flush()
            customer = Customer(site_id=site.id)
            session.add(customer)
            await session.flush()
            conversation = Conversation(site_id=site.id, customer_id=customer.id)
            session.add(conversation)
            await session.flush()
            # Raw SQL: the models now know indexes that 0006 does not have, the columns are the same.
            await session.execute(
                text(
                    "INSERT INTO message (conversation_id, seq, author_kind, body, private, visibility, created_at)"
                    " VALUES (:c, 1, 'visitor', 'stored before search existed', false, 'public', :at)"
                ),
                {"c": conversation.id, "at": datetime.now(UTC)},
            )
            await session.commit()
        await migrate.upgrade(engine)
        page = await Transcripts(sessions).search(ConversationQuery(site_id=site.id, text="existed"))
        assert [row.id for row in page.rows] == [conversation.id]
        await migrate.downgrade(engine, "0006")  # and back: nothing of it left behind
        assert migrate.UNMODELLED_NAMES.isdisjoint(await _schema_names(engine))
    finally:
        await engine.dispose()
        if kind == "postgresql":
            await drop_postgres_database(url)


async def _schema_names(engine: Any) -> set[str]:
    query = (
        "SELECT name FROM sqlite_master"
        if engine.dialect.name == "sqlite"
        else "SELECT relname FROM pg_class UNION SELECT attname FROM pg_attribute WHERE attrelid = 'message'::regclass"
    )
    async with engine.connect() as connection:
        return {row[0] for row in await connection.execute(text(query))}
