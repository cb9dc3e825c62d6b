"""The message log's writer for PostgreSQL: a whole batch in one statement, so one round trip.

The statement locks the batch's conversations (in id order, so processes never deadlock), judges every
message by the rules of `nameplate.store.message_log.batch` (a client_id already stored, a missing or closed
conversation, an agent's message to a conversation no longer theirs), numbers the accepted ones after each
conversation's `last_seq`, inserts them and advances the conversations; outside a transaction it commits
by itself. Each round trip on a busy machine waits for the scheduler twice (to PostgreSQL and back), so
their count, not the database's work, sets the latency: the earlier writer read first and then wrote, and
paid twice.

Retries (a client_id already stored: a widget that reconnected resends what was not acknowledged) are
rare, so the statement first assumes there are none and reads nothing from the message table: if one
is there after all, the unique index on (conversation_id, client_id) refuses the whole statement, and
the batch is written again by a statement that looks each client_id up. Reading nothing matters more
than it seems: asyncpg prepares a statement once, and after five runs PostgreSQL may keep one generic
plan for it, made when the tables were small. Joined to the batch as a set, the message table was read
in full by every batch (200 million rows in 40 s of the latency load on a fresh database, slower the
more messages are stored). For the same reason no reference to the conversation table is filtered by
an array of ids: in a plan made while the table was small, such a filter was checked against every row
for every message of the batch (a batch of 300 took 285 ms instead of 6).

Why it is safe with several processes writing to the same conversations (READ COMMITTED):
- a row another writer changed after the statement began is waited for, then locked and read as that
  writer committed it (PostgreSQL re-reads the newest version for FOR UPDATE, and the UPDATE follows it
  the same way), so seqs continue from the true `last_seq`;
- the client_ids already stored are read from the statement's snapshot, which cannot see a retry that
  another process committed meanwhile; the unique index refuses that statement too, and the batch is
  written again with a new snapshot that sees it.
Repeats of one client_id within the batch are resolved here, before the statement: later copies answer
with the first copy's result.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from nameplate.store.engine import make_engine
from nameplate.store.message_log.batch import (
    BatchDone,
    BatchOutcome,
    ConversationClosed,
    ConversationMissing,
    NewMessage,
    NotAssigned,
    StoredMessage,
)
from nameplate.store.message_log.first_reply import POSTGRES_FIRST_REPLY_CTE
from nameplate.store.models import AuthorKind, Conversation, ConversationStatus, Message, utcnow

_CONVERSATION = f'"{Conversation.__tablename__}"'
_MESSAGE = f'"{Message.__tablename__}"'
_CLIENT_ID_UNIQUE = "uq_message_conversation_id_author_kind_client_id"
# Another process committing the same client_id between two attempts needs a retry of its own each time;
# past this many, something else is wrong.
MAX_ATTEMPTS = 5

_STORE_BATCH_TEMPLATE = f"""
WITH batch AS (
    SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],
                         $7::text[], $8::boolean[], $9::text[], $11::text[])
        AS b(ord, conversation_id, author_kind, agent_id, body, private, client_id, allow_closed, assigned_to,
             visibility)
), locked AS MATERIALIZED (
    SELECT c.id, c.last_seq, c.status, c.agent_id FROM {_CONVERSATION} AS c
    WHERE c.id IN (SELECT conversation_id FROM batch) ORDER BY c.id FOR UPDATE
), judged AS MATERIALIZED (
    SELECT b.*, l.last_seq AS base_seq, e.seq AS stored_seq, e.author_kind AS stored_author_kind,
           e.agent_id AS stored_agent_id, e.body AS stored_body, e.private AS stored_private,
           e.created_at AS stored_created_at,
           CASE WHEN e.seq IS NOT NULL THEN 'duplicate'
                WHEN l.id IS NULL THEN 'missing'
                WHEN l.status = '{ConversationStatus.closed}' AND NOT b.allow_closed THEN 'closed'
                WHEN b.assigned_to IS NOT NULL
                     AND (l.status <> '{ConversationStatus.active}'
                          OR l.agent_id IS DISTINCT FROM b.assigned_to) THEN 'not_assigned'
                ELSE 'store' END AS verdict
    FROM batch AS b
    LEFT JOIN locked AS l ON l.id = b.conversation_id
    LEFT JOIN LATERAL (
        SELECT m.seq, m.author_kind, m.agent_id, m.body, m.private, m.created_at FROM {_MESSAGE} AS m
        WHERE m.conversation_id = b.conversation_id AND m.author_kind = b.author_kind
              AND m.client_id = b.client_id AND {{look_up_retries}}
    ) AS e ON true
), planned AS MATERIALIZED (
    SELECT ord, conversation_id, author_kind, agent_id, body, private, client_id, visibility,
           base_seq + row_number() OVER (PARTITION BY conversation_id ORDER BY ord) AS seq
    FROM judged WHERE verdict = 'store'
), inserted AS (
    INSERT INTO {_MESSAGE} (conversation_id, seq, author_kind, agent_id, body, private, client_id, created_at,
                            visibility)
    SELECT conversation_id, seq, author_kind, agent_id, body, private, client_id, $10, visibility FROM planned
), advanced AS (
    UPDATE {_CONVERSATION} AS c
    SET last_seq = a.seq, first_agent_reply_at = coalesce(c.first_agent_reply_at, a.replied_at)
    FROM (
        SELECT conversation_id, max(seq) AS seq,
               CASE WHEN bool_or(author_kind = '{AuthorKind.agent}' AND NOT private)
                    THEN $10::timestamptz END AS replied_at
        FROM planned GROUP BY conversation_id
    ) AS a
    WHERE c.id = a.conversation_id
    RETURNING c.id, c.site_id, c.team_id, c.agent_id, c.created_at, c.first_agent_reply_at
){{first_replies}}
SELECT j.ord, j.verdict, coalesce(p.seq, j.stored_seq) AS seq, j.stored_author_kind, j.stored_agent_id,
       j.stored_body, j.stored_private, j.stored_created_at
FROM judged AS j LEFT JOIN planned AS p ON p.ord = j.ord
"""

# With `false` the planner drops the lookup altogether: no scan of the message table in the plan.
_STORE_NEW_BATCH = _STORE_BATCH_TEMPLATE.format(look_up_retries="false", first_replies=POSTGRES_FIRST_REPLY_CTE)
_STORE_BATCH_WITH_RETRIES = _STORE_BATCH_TEMPLATE.format(look_up_retries="true", first_replies=POSTGRES_FIRST_REPLY_CTE)

_REFUSALS = {"missing": ConversationMissing, "closed": ConversationClosed, "not_assigned": NotAssigned}


class PostgresWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        # A pool of one connection of its own (one batch is in flight at a time): a burst of other queries
        # that takes every connection of the server's pool (a reconnect storm's first visits) must not
        # make the messages of the chats in progress wait for one.
        self._engine = make_engine(engine.url.render_as_string(hide_password=False), pool_size=1)
        # The loop keeps only weak references to tasks.
        self._task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self._engine.dispose()

    def submit(self, batch: list[NewMessage], done: BatchDone) -> None:
        """Write the batch in a task of its own; `done` is called with the outcome at the end of that task's
        last step, so answering costs no extra turn of the event loop."""
        self._task = asyncio.create_task(self._write_and_answer(batch, done), name="message-log-batch")

    async def _write_and_answer(self, batch: list[NewMessage], done: BatchDone) -> None:
        outcome: BatchOutcome
        try:
            outcome = await self.write(batch)
        except Exception as exc:
            outcome = exc
        done(outcome)

    async def write(self, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
        # Through the asyncpg connection itself: SQLAlchemy would wrap the statement in BEGIN and COMMIT,
        # two more round trips. The connection still comes from (and returns to) the pool, which replaces
        # it if it broke.
        async with self._engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            return await write_batch(pooled.driver_connection, batch)


async def write_batch(pg: Any, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
    """Store the batch on this asyncpg connection: one result per message, in order."""
    first_copy = _first_copies(batch)
    # Each message goes to the statement under its index in the batch (`ord`), so rows answer by index.
    firsts = [n for n in range(len(batch)) if first_copy[n] == n]
    now = utcnow()
    statement = _STORE_NEW_BATCH
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            rows = await pg.fetch(statement, *_columns(batch, firsts), now, [batch[n].kind.value for n in firsts])
            break
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _CLIENT_ID_UNIQUE or attempt == MAX_ATTEMPTS:
                raise
            statement = _STORE_BATCH_WITH_RETRIES
    answers = {row["ord"]: _answer(batch[row["ord"]], row, now) for row in rows}
    results: list[StoredMessage | Exception] = []
    for n, first in enumerate(first_copy):
        answer = answers[first]
        if first != n:
            # A later copy of a stored message is its retry; of a refused one, refused alike.
            if isinstance(answer, StoredMessage):
                answer = replace(answer, duplicate=True)
            else:
                answer = type(answer)(*answer.args)
        results.append(answer)
    return results


def _first_copies(batch: list[NewMessage]) -> list[int]:
    """For each message, the index of the first message in the batch with its (conversation, author kind,
    client_id)."""
    first: dict[tuple[str, str, str], int] = {}
    return [
        first.setdefault((m.conversation_id, m.author_kind, m.client_id), n) if m.client_id else n
        for n, m in enumerate(batch)
    ]


def _columns(batch: list[NewMessage], indices: list[int]) -> list[list[Any]]:
    """The statement's arrays for the messages at these indices of the batch."""
    chosen = [batch[n] for n in indices]
    return [
        indices,
        [m.conversation_id for m in chosen],
        [m.author_kind for m in chosen],
        [m.agent_id for m in chosen],
        [m.body for m in chosen],
        [m.private for m in chosen],
        [m.client_id for m in chosen],
        [m.allow_closed for m in chosen],
        [m.assigned_to for m in chosen],
    ]


def _answer(message: NewMessage, row: Any, now: datetime) -> StoredMessage | Exception:
    verdict = row["verdict"]
    if verdict == "store":
        return StoredMessage(
            message.conversation_id,
            row["seq"],
            message.author_kind,
            message.body,
            message.agent_id,
            message.client_id,
            message.private,
            now,
            visibility=message.kind,
        )
    if verdict == "duplicate":
        return StoredMessage(
            message.conversation_id,
            row["seq"],
            row["stored_author_kind"],
            row["stored_body"],
            row["stored_agent_id"],
            message.client_id,
            row["stored_private"],
            row["stored_created_at"],
            duplicate=True,
        )
    return _REFUSALS[verdict](message.conversation_id)
