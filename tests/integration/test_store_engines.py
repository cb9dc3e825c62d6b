"""The store behaves the same on SQLite and on the real PostgreSQL: message seqs, idempotent sends, closed
conversations, first reply times and the conversation state changes, each on a freshly migrated database.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nameplate.broker.memory import MemoryBroker
from nameplate.config import Settings, sqlite_path
from nameplate.protocol.vocabulary import Visibility
from nameplate.services import Services
from nameplate.store import migrate
from nameplate.store.engine import make_engine
from nameplate.store.message_log import postgres as message_log_postgres
from nameplate.store.message_log import sqlite as message_log_sqlite
from nameplate.store.message_log.log import ConversationClosed, MessageLog, NewMessage, NotAssigned, StoredMessage
from nameplate.store.models import Agent, AuthorKind, Conversation, ConversationStatus, Customer, Message, Team
from tests.services import create_postgres_database, drop_postgres_database

VISITOR = AuthorKind.visitor.value
AGENT = AuthorKind.agent.value
SYSTEM = AuthorKind.system.value


@dataclass
class Store:
    """A migrated database on one engine, with the services built on it as the server builds them."""

    kind: str
    url: str
    services: Services
    site_id: str
    customer_id: str
    agents: list[Agent]
    team: Team

    @property
    def log(self) -> MessageLog:
        return self.services.message_log

    async def conversation(self) -> Conversation:
        return await self.services.conversations.start(self.site_id, self.customer_id)

    async def reload(self, conversation_id: str) -> Conversation:
        conversation = await self.services.conversations.get(conversation_id)
        assert conversation is not None
        return conversation

    async def rows(self, conversation_id: str) -> list[Message]:
        async with self.services.sessions() as session:
            result = await session.execute(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
            )
            return list(result.scalars())


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        url = await create_postgres_database()
    try:
        await migrate.upgrade_to_head(url)
        # Built like the server builds it (no Redis URL: a MemoryBroker, a Directory, the Conversations
        # service and a MessageLog on this engine); only the message log's writer task is started.
        services = Services.build(Settings(database_url=url, secret_key="store-test"))
        assert isinstance(services.broker, MemoryBroker)
        services.message_log.start()
        try:
            directory = services.directory
            site = await directory.create_site("Engine Shop", allowed_origins="*")
            agents = [
                await directory.create_agent(
                    site.id,
                    given_name=given,
                    family_name="Okafor",
                    email=f"{given.lower()}@shop.example",
                    password="correct horse battery",
                )
                for given in ("Jane", "Tomas")
            ]
            team = await directory.create_team(site.id, "Billing")
            customer = Customer(site_id=site.id, name="Visitor")
            async with services.sessions() as session:
                session.add(customer)
                await session.commit()
            yield Store(request.param, url, services, site.id, customer.id, agents, team)
        finally:
            await services.message_log.stop()
            await services.engine.dispose()
    finally:
        if request.param == "postgresql":
            await drop_postgres_database(url)


def seqs_by_conversation(results: list[StoredMessage]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for stored in results:
        seqs[stored.conversation_id].append(stored.seq)
    return seqs


# -- message log ---------------------------------------------------------------------------------------
async def test_append_assigns_gap_free_seqs_per_conversation_from_one(store: Store) -> None:
    first, second = await store.conversation(), await store.conversation()
    results = []
    for n in range(5):
        results.append(await store.log.append(NewMessage(first.id, VISITOR, f"first {n}")))
        if n < 3:
            results.append(await store.log.append(NewMessage(second.id, VISITOR, f"second {n}")))
    assert seqs_by_conversation(results) == {first.id: [1, 2, 3, 4, 5], second.id: [1, 2, 3]}
    assert [m.seq for m in await store.rows(first.id)] == [1, 2, 3, 4, 5]
    assert [m.body for m in await store.rows(second.id)] == ["second 0", "second 1", "second 2"]
    assert (await store.reload(first.id)).last_seq == 5 and (await store.reload(second.id)).last_seq == 3
    stored = results[0]
    assert not stored.duplicate and stored.created_at.tzinfo is not None


async def test_a_duplicate_client_id_returns_the_original_seq_and_stores_once(store: Store) -> None:
    conversation = await store.conversation()
    original = await store.log.append(NewMessage(conversation.id, VISITOR, "hello", client_id="c-1"))
    retry = await store.log.append(NewMessage(conversation.id, VISITOR, "hello (retried)", client_id="c-1"))
    assert (original.seq, original.duplicate) == (1, False)
    assert (retry.seq, retry.duplicate, retry.body) == (1, True, "hello")
    # Two sends of one client_id in the same batch: one row, both answered with its seq.
    together = await asyncio.gather(
        *(store.log.append(NewMessage(conversation.id, VISITOR, "again", client_id="c-2")) for _ in range(2))
    )
    assert {s.seq for s in together} == {2} and sorted(s.duplicate for s in together) == [False, True]
    # The same client_id in another conversation is another message.
    other = await store.conversation()
    assert (await store.log.append(NewMessage(other.id, VISITOR, "hi", client_id="c-1"))).seq == 1
    rows = await store.rows(conversation.id)
    assert [(m.seq, m.client_id) for m in rows] == [(1, "c-1"), (2, "c-2")]
    assert (await store.log.append(NewMessage(conversation.id, VISITOR, "next"))).seq == 3


async def test_every_engine_stores_what_kind_of_message_it_is(store: Store) -> None:
    """public, a private note, a whisper — in one batch; the kind is written by the writer itself."""
    conversation = await store.conversation()
    stored = await asyncio.gather(
        store.log.append(NewMessage(conversation.id, VISITOR, "public")),
        store.log.append(NewMessage(conversation.id, "agent", "note", private=True)),
        store.log.append(NewMessage(conversation.id, "agent", "whisper", visibility=Visibility.whisper)),
    )
    assert [(m.body, m.private, m.visibility) for m in stored] == [
        ("public", False, "public"),
        ("note", True, "note"),
        ("whisper", True, "whisper"),  # a whisper is private whatever the caller said
    ]
    async with store.services.sessions() as session:
        rows = (
            await session.execute(
                select(Message.body, Message.private, Message.visibility)
                .where(Message.conversation_id == conversation.id)
                .order_by(Message.seq)
            )
        ).all()
    assert sorted(tuple(row) for row in rows) == sorted((m.body, m.private, m.visibility) for m in stored)


async def test_a_closed_conversation_takes_only_allowed_messages(store: Store) -> None:
    conversation = await store.conversation()
    await store.log.append(NewMessage(conversation.id, VISITOR, "before"))
    assert await store.services.conversations.close(conversation, "Jane")  # writes the system line
    with pytest.raises(ConversationClosed):
        await store.log.append(NewMessage(conversation.id, VISITOR, "after"))
    late = await store.log.append(NewMessage(conversation.id, SYSTEM, "rated", allow_closed=True))
    assert late.seq == 3
    assert [(m.seq, m.author_kind) for m in await store.rows(conversation.id)] == [
        (1, VISITOR),
        (2, SYSTEM),
        (3, SYSTEM),
    ]


async def test_many_concurrent_appends_give_every_conversation_seqs_one_to_n(store: Store) -> None:
    conversations = [await store.conversation() for _ in range(20)]
    messages = [
        NewMessage(c.id, VISITOR, f"{c.id} #{n}", client_id=f"{c.id}-{n}") for c in conversations for n in range(25)
    ]
    random.Random(7).shuffle(messages)
    results = await asyncio.gather(*(store.log.append(m) for m in messages))
    assert not any(r.duplicate for r in results)
    for conversation_id, seqs in seqs_by_conversation(results).items():
        assert sorted(seqs) == list(range(1, 26)), conversation_id
    async with store.services.sessions() as session:
        per_conversation = select(Message.conversation_id, func.count()).group_by(Message.conversation_id)
        counts = dict((await session.execute(per_conversation)).all())
    assert counts == {c.id: 25 for c in conversations}
    for conversation in conversations:
        rows = await store.rows(conversation.id)
        assert [m.seq for m in rows] == list(range(1, 26))
        # Each stored row carries the seq its sender was acknowledged with.
        acked = {r.client_id: r.seq for r in results if r.conversation_id == conversation.id}
        assert {m.client_id: m.seq for m in rows} == acked
        assert (await store.reload(conversation.id)).last_seq == 25


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_two_processes_appending_to_the_same_conversations_stay_gap_free(store: Store) -> None:
    """Two MessageLogs on two engines, as two server processes would have (SQLite is one process by design)."""
    second_engine = make_engine(store.url)
    second_log = MessageLog(second_engine)
    second_log.start()
    try:
        conversations = [await store.conversation() for _ in range(5)]
        logs = [store.log, second_log]
        sends = []
        for conversation in conversations:
            for n in range(40):
                sends.append((logs[n % 2], NewMessage(conversation.id, VISITOR, f"own {n}")))
            # A retried send that reached both processes: one row, one seq.
            for n in range(10):
                for log in logs:
                    sends.append((log, NewMessage(conversation.id, VISITOR, f"dup {n}", client_id=f"dup-{n}")))
        random.Random(11).shuffle(sends)
        results = await asyncio.gather(*(log.append(message) for log, message in sends))
        for conversation in conversations:
            mine = [r for r in results if r.conversation_id == conversation.id]
            assert sorted({r.seq for r in mine}) == list(range(1, 51))
            by_client: dict[str, set[tuple[int, bool]]] = defaultdict(set)
            for r in mine:
                if r.client_id:
                    by_client[r.client_id].add((r.seq, r.duplicate))
            for client_id, answers in by_client.items():
                assert len({seq for seq, _ in answers}) == 1 and {d for _, d in answers} == {False, True}, client_id
            rows = await store.rows(conversation.id)
            assert [m.seq for m in rows] == list(range(1, 51))
            assert sum(1 for m in rows if m.client_id) == 10
            assert (await store.reload(conversation.id)).last_seq == 50
    finally:
        await second_log.stop()
        await second_engine.dispose()


async def test_one_unstorable_message_does_not_fail_the_others_in_its_batch(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await store.conversation(), await store.conversation()
    # The opener's write starts at once (in the writer thread: the first write of a store always goes
    # there); the next two queue behind it, so one transaction writes both. A
    # lone surrogate cannot be encoded for either database, so that transaction fails as a whole.
    opener, unstorable, bystander = await asyncio.gather(
        store.log.append(NewMessage(second.id, VISITOR, "opener")),
        store.log.append(NewMessage(first.id, VISITOR, "broken \ud800 text")),
        store.log.append(NewMessage(second.id, VISITOR, "an innocent bystander")),
        return_exceptions=True,
    )
    assert "a batch of 2 messages failed" in caplog.text
    assert isinstance(unstorable, Exception), unstorable
    assert isinstance(opener, StoredMessage) and isinstance(bystander, StoredMessage), (opener, bystander)
    assert (opener.seq, bystander.seq) == (1, 2)
    assert [m.body for m in await store.rows(second.id)] == ["opener", "an innocent bystander"]
    assert await store.rows(first.id) == []
    # The log goes on writing after the failure.
    assert (await store.log.append(NewMessage(first.id, VISITOR, "fixed text"))).seq == 1


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_a_large_failed_batch_is_retried_one_by_one_without_nesting(store: Store) -> None:
    """SQLite answers small batches within `submit`; the one-by-one retries of a failed batch of 500 must
    run in a loop, not nest 500 calls deep."""
    conversation = await store.conversation()
    await store.log.append(NewMessage(conversation.id, VISITOR, "warm"))  # the writer's connection is open
    # Another connection holds the write lock, so the opener goes to the writer thread and waits there
    # while the broken messages queue up behind it as one batch.
    blocker = sqlite3.connect(sqlite_path(store.url), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    sends = asyncio.gather(
        store.log.append(NewMessage(conversation.id, VISITOR, "opener")),
        *(store.log.append(NewMessage(conversation.id, VISITOR, f"broken {n} \ud800")) for n in range(600)),
        return_exceptions=True,
    )
    deadline = time.monotonic() + 5
    while len(store.log._pending) < 600 and time.monotonic() < deadline:  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.001)
    blocker.execute("COMMIT")
    blocker.close()
    opener, *broken = await sends
    assert isinstance(opener, StoredMessage) and opener.seq == 2, opener
    assert all(isinstance(b, Exception) and not isinstance(b, RecursionError) for b in broken), {
        type(b).__name__ for b in broken
    }
    assert (await store.log.append(NewMessage(conversation.id, VISITOR, "after"))).seq == 3


async def test_stop_lets_the_batch_in_flight_finish_and_refuses_new_messages(store: Store) -> None:
    conversation = await store.conversation()
    writes = [asyncio.ensure_future(store.log.append(NewMessage(conversation.id, VISITOR, f"m{n}"))) for n in range(3)]
    await asyncio.sleep(0)  # let the appends queue
    await store.log.stop()
    assert [w.result().seq for w in writes] == [1, 2, 3]
    assert [m.body for m in await store.rows(conversation.id)] == ["m0", "m1", "m2"]
    with pytest.raises(RuntimeError, match="shutting down"):
        await store.log.append(NewMessage(conversation.id, VISITOR, "too late"))


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_the_sqlite_wal_stops_growing_while_messages_keep_arriving(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints run beside the writes, so a PASSIVE one alone never quite lets the WAL start over; without
    the RESTART step the file grows by every commit (53 MB over these 3,000 messages)."""
    monkeypatch.setattr(message_log_sqlite, "CHECKPOINT_EVERY_SECONDS", 0.0)
    monkeypatch.setattr(message_log_sqlite, "WAL_RESET_FRAMES", 32)
    # Every write through the writer thread, with the loop's turn between two writes, and a RESTART
    # patient enough to find such a gap: the bound below is then not left to the scheduler.
    monkeypatch.setattr(message_log_sqlite, "INLINE_MAX_BATCH", 0)
    monkeypatch.setattr(message_log_sqlite, "RESTART_WAIT_MS", 2000)
    conversation = await store.conversation()
    wal = Path(str(sqlite_path(store.url)) + "-wal")
    for n in range(3000):
        await store.log.append(NewMessage(conversation.id, VISITOR, f"message {n}"))
    # RESTART leaves the file at its high-water mark: the limit plus what was written while it waited
    # (3–5 MB here, against 50 MB and more without it).
    assert _size(wal) < 16 * 1024 * 1024, f"the WAL grew to {_size(wal)} bytes"
    assert store.log._writer.wal_restarts > 0
    assert [m.seq for m in await store.rows(conversation.id)] == list(range(1, 3001))


async def test_first_agent_reply_at_is_set_by_the_first_public_agent_message_only(store: Store) -> None:
    conversation = await store.conversation()
    jane = store.agents[0]
    await store.log.append(NewMessage(conversation.id, VISITOR, "hello"))
    await store.log.append(NewMessage(conversation.id, AGENT, "internal note", agent_id=jane.id, private=True))
    await store.log.append(NewMessage(conversation.id, SYSTEM, "Jane joined"))
    assert (await store.reload(conversation.id)).first_agent_reply_at is None
    first = await store.log.append(NewMessage(conversation.id, AGENT, "Hi, I'm Jane", agent_id=jane.id))
    await asyncio.sleep(0.01)
    await store.log.append(NewMessage(conversation.id, AGENT, "Let me check", agent_id=jane.id))
    replied = (await store.reload(conversation.id)).first_agent_reply_at
    assert replied == first.created_at
    assert replied is not None and replied.utcoffset() is not None and replied.astimezone(UTC) == replied


async def test_an_agents_message_is_stored_only_while_the_conversation_is_theirs(store: Store) -> None:
    """The console skips a query per message by remembering its conversations; the write itself decides."""
    conversations = store.services.conversations
    jane, tomas = store.agents
    conversation = await store.conversation()

    def from_jane(body: str) -> NewMessage:
        return NewMessage(conversation.id, AGENT, body, agent_id=jane.id, client_id=body, assigned_to=jane.id)

    with pytest.raises(NotAssigned):
        await store.log.append(from_jane("still queued"))
    await conversations.mark_assigned(conversation.id, jane.id)
    assert (await store.log.append(from_jane("mine now"))).seq == 1
    await conversations.hand_over(conversation.id, jane.id, tomas.id)
    with pytest.raises(NotAssigned):
        await store.log.append(from_jane("after the hand-over"))
    tomas_says = NewMessage(conversation.id, AGENT, "Tomas here", agent_id=tomas.id, assigned_to=tomas.id)
    assert (await store.log.append(tomas_says)).seq == 2
    await conversations.close(conversation, "Tomas")
    with pytest.raises(ConversationClosed):
        await store.log.append(NewMessage(conversation.id, AGENT, "too late", agent_id=tomas.id, assigned_to=tomas.id))
    assert [m.body for m in await store.rows(conversation.id)] == [
        "mine now",
        "Tomas here",
        "Tomas closed the conversation.",
    ]


# -- conversation state changes (server/conversations.py) ------------------------------------------------
async def test_mark_assigned_only_from_queued(store: Store) -> None:
    conversations = store.services.conversations
    jane, tomas = store.agents
    conversation = await store.conversation()
    assert conversation.status == ConversationStatus.queued.value
    assigned = await conversations.mark_assigned(conversation.id, jane.id)
    assert assigned is not None
    assert (assigned.status, assigned.agent_id) == (ConversationStatus.active.value, jane.id)
    assert assigned.assigned_at is not None and assigned.assigned_at.utcoffset() is not None
    # Already active: a second process's assignment loses.
    assert await conversations.mark_assigned(conversation.id, tomas.id) is None
    assert (await store.reload(conversation.id)).agent_id == jane.id
    # Two assignments racing for one queued conversation: exactly one wins.
    contested = await store.conversation()
    winners = await asyncio.gather(*(conversations.mark_assigned(contested.id, a.id) for a in (jane, tomas)))
    assert sum(w is not None for w in winners) == 1


async def test_mark_requeued_only_from_active(store: Store) -> None:
    conversations = store.services.conversations
    jane = store.agents[0]
    conversation = await store.conversation()
    assert not await conversations.mark_requeued(conversation.id)  # still queued
    await conversations.mark_assigned(conversation.id, jane.id)
    assert await conversations.mark_requeued(conversation.id, team_id=store.team.id)
    requeued = await store.reload(conversation.id)
    assert (requeued.status, requeued.agent_id, requeued.team_id) == (
        ConversationStatus.queued.value,
        None,
        store.team.id,
    )
    assert not await conversations.mark_requeued(conversation.id)


async def test_hand_over_only_from_the_current_agent_of_an_active_conversation(store: Store) -> None:
    conversations = store.services.conversations
    jane, tomas = store.agents
    conversation = await store.conversation()
    assert not await conversations.hand_over(conversation.id, jane.id, tomas.id)  # queued: nobody to hand over
    await conversations.mark_assigned(conversation.id, jane.id)
    assert not await conversations.hand_over(conversation.id, tomas.id, jane.id)  # Tomas does not have it
    assert await conversations.hand_over(conversation.id, jane.id, tomas.id)
    assert (await store.reload(conversation.id)).agent_id == tomas.id
    assert not await conversations.hand_over(conversation.id, jane.id, tomas.id)  # Jane no longer has it


async def test_close_is_idempotent_and_final(store: Store) -> None:
    conversations = store.services.conversations
    jane = store.agents[0]
    conversation = await store.conversation()
    await conversations.mark_assigned(conversation.id, jane.id)
    assert await conversations.close(conversation, "Jane")
    closed = await store.reload(conversation.id)
    assert closed.status == ConversationStatus.closed.value
    assert closed.closed_at is not None and closed.closed_at.utcoffset() is not None
    assert not await conversations.close(conversation, "Jane")
    assert (await store.reload(conversation.id)).closed_at == closed.closed_at
    assert [m.body for m in await store.rows(conversation.id)] == ["Jane closed the conversation."]
    # Closed is final for every other transition.
    assert await conversations.mark_assigned(conversation.id, jane.id) is None
    assert not await conversations.mark_requeued(conversation.id)
    assert not await conversations.hand_over(conversation.id, jane.id, store.agents[1].id)
    # Closing a queued conversation works too, once.
    queued = await store.conversation()
    results = await asyncio.gather(*(conversations.close(queued, "Tomas") for _ in range(3)))
    assert sorted(results) == [False, False, True]


async def _wait_until_blocked_on_a_lock(pg: Any) -> None:
    """Until another backend of this database waits for a row lock (the writer behind the open transaction)."""
    deadline = time.monotonic() + 10
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    while True:
        # Inside a transaction the activity view is one snapshot unless it is cleared.
        await pg.execute("SELECT pg_stat_clear_snapshot()")
        if await pg.fetchval(query):
            return
        assert time.monotonic() < deadline, "the writer never waited for the lock"
        await asyncio.sleep(0.01)  # noqa: ASYNC110 - PostgreSQL has no event to wait on


async def _store_behind_another_writer(store: Store, theirs_client_id: str, mine: NewMessage) -> StoredMessage:
    """Another process's transaction stores "theirs" and holds the conversation while `mine` is written;
    it commits only once the writer waits for it, after the writer's statement took its snapshot."""
    async with store.services.engine.connect() as connection:
        other = (await connection.get_raw_connection()).driver_connection
        transaction = other.transaction()
        await transaction.start()
        await other.execute('UPDATE "conversation" SET last_seq = last_seq + 1 WHERE id = $1', mine.conversation_id)
        await other.execute(
            'INSERT INTO "message" (conversation_id, seq, author_kind, body, private, client_id, created_at)'
            " VALUES ($1, 1, $2, 'theirs', false, $3, now())",
            mine.conversation_id,
            VISITOR,
            theirs_client_id,
        )
        writing = asyncio.ensure_future(store.log.append(mine))
        try:
            await _wait_until_blocked_on_a_lock(other)
        finally:
            await transaction.commit()
        return await writing


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_postgres_batch_waits_for_a_writer_holding_its_conversation_and_numbers_after_it(
    store: Store,
) -> None:
    conversation = await store.conversation()
    stored = await _store_behind_another_writer(
        store, "theirs", NewMessage(conversation.id, VISITOR, "mine", client_id="mine")
    )
    assert (stored.seq, stored.duplicate) == (2, False)
    assert [(m.seq, m.body) for m in await store.rows(conversation.id)] == [(1, "theirs"), (2, "mine")]
    assert (await store.reload(conversation.id)).last_seq == 2


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_postgres_retry_stored_by_another_process_meanwhile_is_answered_as_a_duplicate(
    store: Store,
) -> None:
    """The statement's snapshot cannot see the other's row: the unique index refuses it, and the batch is
    written again."""
    conversation = await store.conversation()
    stored = await _store_behind_another_writer(
        store, "same", NewMessage(conversation.id, VISITOR, "mine", client_id="same")
    )
    assert (stored.seq, stored.duplicate, stored.body) == (1, True, "theirs")
    assert [(m.seq, m.body) for m in await store.rows(conversation.id)] == [(1, "theirs")]
    assert (await store.log.append(NewMessage(conversation.id, VISITOR, "next"))).seq == 2


async def test_one_batch_with_every_verdict_answers_each_message_in_order(store: Store) -> None:
    """Repeats, refusals and new messages for several conversations in one write, as one batch."""
    open_one, closed, assigned = [await store.conversation() for _ in range(3)]
    await store.log.append(NewMessage(open_one.id, VISITOR, "earlier", client_id="earlier"))
    await store.services.conversations.close(closed, "Jane")
    jane = store.agents[0]
    batch = [
        NewMessage(open_one.id, VISITOR, "one", client_id="one"),
        NewMessage("no-such-conversation", VISITOR, "lost"),
        NewMessage(open_one.id, VISITOR, "earlier again", client_id="earlier"),
        NewMessage(closed.id, VISITOR, "too late"),
        NewMessage(assigned.id, AGENT, "not mine", agent_id=jane.id, assigned_to=jane.id),
        NewMessage(closed.id, SYSTEM, "rated", allow_closed=True),
        NewMessage(open_one.id, VISITOR, "one again", client_id="one"),
        NewMessage(assigned.id, VISITOR, "hello"),
        NewMessage(open_one.id, AGENT, "reply", agent_id=jane.id),
        NewMessage(closed.id, VISITOR, "late", client_id="late"),
        NewMessage(closed.id, VISITOR, "late", client_id="late"),
    ]
    # Straight to the engine's writer, as the message log hands it a batch.
    answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    store.log._writer.submit(batch, answered.set_result)
    results = await answered
    assert isinstance(results, list), results
    answers = [
        (type(r).__name__, r.seq, r.duplicate, r.body) if isinstance(r, StoredMessage) else type(r).__name__
        for r in results
    ]
    assert answers == [
        ("StoredMessage", 2, False, "one"),
        "ConversationMissing",
        ("StoredMessage", 1, True, "earlier"),
        "ConversationClosed",
        "NotAssigned",
        ("StoredMessage", 2, False, "rated"),
        ("StoredMessage", 2, True, "one"),
        ("StoredMessage", 1, False, "hello"),
        ("StoredMessage", 3, False, "reply"),
        "ConversationClosed",
        "ConversationClosed",  # a refused message's repeat is refused alike
    ]
    assert [(m.seq, m.body) for m in await store.rows(open_one.id)] == [(1, "earlier"), (2, "one"), (3, "reply")]
    reloaded = await store.reload(open_one.id)
    assert reloaded.last_seq == 3 and reloaded.first_agent_reply_at == results[8].created_at  # type: ignore[union-attr]
    assert (await store.reload(closed.id)).last_seq == 2 and (await store.reload(assigned.id)).last_seq == 1


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_postgres_writer_reads_nothing_from_the_message_table_whatever_plan_is_kept(store: Store) -> None:
    """PostgreSQL may keep one generic plan for a prepared statement, made while the tables were small: a
    lookup in the message table would then read all of it for every batch, more as it grows."""
    async with store.services.engine.connect() as connection:
        pg = (await connection.get_raw_connection()).driver_connection
        await pg.execute("SET plan_cache_mode = force_generic_plan")
        try:
            await pg.execute(f"PREPARE store_new_batch AS {message_log_postgres._STORE_NEW_BATCH}")
            plan = [
                row[0]
                for row in await pg.fetch(
                    "EXPLAIN EXECUTE store_new_batch(ARRAY[0], ARRAY['c'], ARRAY['visitor'], ARRAY[NULL],"
                    " ARRAY['body'], ARRAY[false], ARRAY['client'], ARRAY[false], ARRAY[NULL], now(), ARRAY['public'])"
                )
            ]
            await pg.execute("DEALLOCATE store_new_batch")
        finally:
            await pg.execute("RESET plan_cache_mode")
    assert any("Insert on message" in line for line in plan), plan
    assert not [line for line in plan if "Scan" in line and " on message" in line], "\n".join(plan)


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_postgres_messages_are_stored_while_every_pooled_connection_is_taken(store: Store) -> None:
    """A burst of other queries (a reconnect storm's first visits) may take the whole pool; the message log
    has a connection of its own, so the chats in progress do not wait for one."""
    engine = make_engine(store.url, pool_size=1)
    log = MessageLog(engine)
    log.start()
    conversation = await store.conversation()
    try:
        async with engine.connect() as taken:
            await taken.execute(select(func.count()).select_from(Message))
            async with asyncio.timeout(10):  # the pool would make it wait 30 s for the taken connection
                stored = await log.append(NewMessage(conversation.id, VISITOR, "still here", client_id="c-1"))
        assert stored.seq == 1
        assert [row.body for row in await store.rows(conversation.id)] == ["still here"]
    finally:
        await log.stop()
        await engine.dispose()
