"""The message log's writer for PostgreSQL: a batch in two round trips on the asyncpg connection itself.

Optimistic first: read the batch's conversations and the client_ids already stored (one statement), plan
the batch in Python, then one statement that locks the conversations (in id order, so processes never
deadlock), checks each still is exactly as read, and only then inserts the messages and advances the
conversations — all or nothing, as one statement is. `last_seq` only grows, so "as read" cannot be a
changed-and-changed-back row. If another process wrote to one of the conversations in between, nothing
was written and the batch is redone the pessimistic way: a transaction that locks, reads, writes, commits
(four round trips). Each round trip on a busy machine waits for the scheduler twice (to PostgreSQL and
back), so their count, not the database's work, sets the latency. Through SQLAlchemy the pessimistic way
would cost two more round trips and more Python on the event loop; the connection still comes from (and
returns to) the engine's pool.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from server.message_batch import BatchDone, BatchOutcome, ConversationState, NewMessage, StoredMessage, plan_batch
from server.models import Conversation, Message, utcnow

_CONVERSATION = f'"{Conversation.__tablename__}"'
_MESSAGE = f'"{Message.__tablename__}"'

_LOCK = (
    f"SELECT id, last_seq, status, agent_id FROM {_CONVERSATION}"
    " WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
)
# The batch's (conversation, client_id) pairs, matched as pairs: "conversation_id = ANY(…) AND client_id =
# ANY(…)" would probe the unique index for every combination, quadratic in the batch (a batch of 200 took
# 140 ms, and a slow batch makes the next one bigger).
_SENT_PAIRS = (
    "JOIN unnest({conversations}::text[], {clients}::text[]) AS sent(conversation_id, client_id)"
    " ON m.conversation_id = sent.conversation_id AND m.client_id = sent.client_id"
)
_READ = f"""
SELECT 'c' AS kind, id AS conversation_id, last_seq AS seq, status AS author_kind, NULL AS body, agent_id,
       NULL AS client_id, NULL::boolean AS private, NULL::timestamptz AS created_at
FROM {_CONVERSATION} WHERE id = ANY($1::text[])
UNION ALL
SELECT 'm', m.conversation_id, m.seq, m.author_kind, m.body, m.agent_id, m.client_id, m.private, m.created_at
FROM {_MESSAGE} AS m {_SENT_PAIRS.format(conversations="$2", clients="$3")}
"""
_STORE_IF_UNCHANGED = f"""
WITH expected AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[]) AS e(id, last_seq, status, agent_id)
), unchanged AS (
    SELECT c.id FROM {_CONVERSATION} AS c JOIN expected AS e ON c.id = e.id
    WHERE c.last_seq = e.last_seq AND c.status = e.status AND c.agent_id IS NOT DISTINCT FROM e.agent_id
    ORDER BY c.id FOR UPDATE OF c
), verdict AS (
    SELECT count(*) = $5 AS ok FROM unchanged
), inserted AS (
    INSERT INTO {_MESSAGE} (conversation_id, seq, author_kind, agent_id, body, private, client_id, created_at)
    SELECT m.* FROM unnest($6::text[], $7::int[], $8::text[], $9::text[], $10::text[], $11::boolean[],
                           $12::text[], $13::timestamptz[]) AS m, verdict
    WHERE verdict.ok
), advanced AS (
    UPDATE {_CONVERSATION} AS c
    SET last_seq = advance.seq, first_agent_reply_at = coalesce(c.first_agent_reply_at, advance.replied_at)
    FROM unnest($14::text[], $15::int[], $16::timestamptz[]) AS advance(id, seq, replied_at), verdict
    WHERE c.id = advance.id AND verdict.ok
)
SELECT ok FROM verdict
"""
_ALREADY_STORED = (
    "SELECT m.conversation_id, m.seq, m.author_kind, m.body, m.agent_id, m.client_id, m.private, m.created_at"
    f" FROM {_MESSAGE} AS m " + _SENT_PAIRS.format(conversations="$1", clients="$2")
)
# A data-modifying CTE runs whether or not the outer statement reads it: one round trip for both writes.
_STORE = f"""
WITH inserted AS (
    INSERT INTO {_MESSAGE} (conversation_id, seq, author_kind, agent_id, body, private, client_id, created_at)
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::text[],
                         $8::timestamptz[])
)
UPDATE {_CONVERSATION} AS c
SET last_seq = advance.seq, first_agent_reply_at = coalesce(c.first_agent_reply_at, advance.replied_at)
FROM unnest($9::text[], $10::int[], $11::timestamptz[]) AS advance(id, seq, replied_at)
WHERE c.id = advance.id
"""

_COLUMNS = ("conversation_id", "seq", "author_kind", "agent_id", "body", "private", "client_id", "created_at")


class PostgresWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # The loop keeps only weak references to tasks; one batch is in flight at a time.
        self._task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """The connections belong to the engine's pool, which the server disposes of."""

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
        async with self._engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            pg: Any = pooled.driver_connection
            results = await _write_if_unchanged(pg, batch)
            if results is not None:
                return results
            async with pg.transaction():
                return await _write_batch(pg, batch)


async def _write_if_unchanged(pg: Any, batch: list[NewMessage]) -> list[StoredMessage | Exception] | None:
    """The optimistic way; None when another writer got in between and nothing was written."""
    conversation_ids = sorted({m.conversation_id for m in batch})
    state: dict[str, ConversationState] = {}
    stored: list[StoredMessage] = []
    for r in await pg.fetch(_READ, conversation_ids, *_sent_pairs(batch)):
        if r["kind"] == "c":
            state[r["conversation_id"]] = ConversationState(r["seq"], r["author_kind"], r["agent_id"])
        else:
            stored.append(_stored(r))
    read = {cid: (s.last_seq, s.status, s.agent_id) for cid, s in state.items()}
    plan = plan_batch(batch, state, stored, utcnow())
    if not plan.rows:
        return plan.results  # nothing to write: duplicates, closed or missing conversations only
    touched = [cid for cid, _, _ in plan.advances]
    expected = [list(column) for column in zip(*(( cid, *read[cid]) for cid in touched), strict=True)]
    columns = [[row[name] for row in plan.rows] for name in _COLUMNS]
    advances = [list(column) for column in zip(*plan.advances, strict=True)]
    if await pg.fetchval(_STORE_IF_UNCHANGED, *expected, len(touched), *columns, *advances):
        return plan.results
    return None


async def _write_batch(pg: Any, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
    conversation_ids = sorted({m.conversation_id for m in batch})
    state = {
        row["id"]: ConversationState(row["last_seq"], row["status"], row["agent_id"])
        for row in await pg.fetch(_LOCK, conversation_ids)
    }
    sent_conversations, sent_clients = _sent_pairs(batch)
    stored = []
    if sent_clients:
        stored = [_stored(r) for r in await pg.fetch(_ALREADY_STORED, sent_conversations, sent_clients)]
    plan = plan_batch(batch, state, stored, utcnow())
    if plan.rows:
        columns = [[row[name] for row in plan.rows] for name in _COLUMNS]
        advances = [list(column) for column in zip(*plan.advances, strict=True)]
        await pg.execute(_STORE, *columns, *advances)
    return plan.results


def _sent_pairs(batch: list[NewMessage]) -> tuple[list[str], list[str]]:
    """The batch's (conversation id, client_id) pairs as two parallel arrays, for _SENT_PAIRS."""
    pairs = sorted({(m.conversation_id, m.client_id) for m in batch if m.client_id})
    return [cid for cid, _ in pairs], [client for _, client in pairs]


def _stored(row: Any) -> StoredMessage:
    return StoredMessage(row["conversation_id"], row["seq"], row["author_kind"], row["body"], row["agent_id"],
                         row["client_id"], row["private"], row["created_at"])
