"""Durable message appends with group commit.

Every message is stored before its sender is acknowledged. Messages that arrive while a commit is in
flight are written together in the next transaction, so one commit serves many messages (the disk, not
Python, is the limit). On SQLite the whole transaction runs in one call to a writer thread with its own
connection: through aiosqlite every statement would be a round trip between threads, each waiting for a
turn of a busy event loop. Within that transaction each conversation row is locked, its `last_seq` read and
advanced, so seqs are gap-free and unique even with several processes writing to PostgreSQL. A
`client_id` already stored for the conversation returns its original seq: retries never duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.background import BackgroundTask
from server.db import make_sqlite_writer_engine
from server.models import Conversation, ConversationStatus, Message, utcnow

log = logging.getLogger("nameplate.message_log")

# A batch bigger than this is split: it bounds one transaction's size and the latency of its first message.
MAX_BATCH = 500


class ConversationClosed(Exception):
    """The conversation was closed before this message could be stored."""


class ConversationMissing(Exception):
    pass


class NotAssigned(Exception):
    """The message required its conversation to be active and assigned to its author, and it no longer is."""


@dataclass(frozen=True)
class NewMessage:
    conversation_id: str
    author_kind: str
    body: str
    agent_id: str | None = None
    client_id: str | None = None
    private: bool = False
    # System lines (e.g. "conversation closed") may be written to a closed conversation.
    allow_closed: bool = False
    # An agent's words are stored only while the conversation is active and theirs: checked inside the
    # write transaction, so a console's cached view of "mine" can never let a message slip through.
    assigned_to: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    conversation_id: str
    seq: int
    author_kind: str
    body: str
    agent_id: str | None
    client_id: str | None
    private: bool
    created_at: datetime
    # True when this client_id had been stored before: the caller acks again but publishes nothing.
    duplicate: bool = False


_Pending = tuple[NewMessage, "asyncio.Future[StoredMessage]"]


class MessageLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite_engine = make_sqlite_writer_engine(engine)
        self._thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="message-log") if self._sqlite_engine else None
        )
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._background = BackgroundTask(self._run, "message-log")

    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("server shutting down"))
        self._pending.clear()
        if self._thread is not None and self._sqlite_engine is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite_engine.dispose)
            self._thread.shutdown(wait=True)

    async def append(self, message: NewMessage) -> StoredMessage:
        """Store one message; returns once it is committed (or raises)."""
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                results = await self._write_or_isolate([message for message, _ in batch])
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

    async def _write_or_isolate(self, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
        """Write the batch in one transaction; if it fails, write each message alone, so one unstorable
        message fails only its own sender, never the others who happened to share its commit."""
        try:
            return await self._write(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("storing a message failed")
                return [exc]
            log.warning("a batch of %d messages failed (%s); storing them one by one", len(batch), exc)
        results: list[StoredMessage | Exception] = []
        for message in batch:
            try:
                results.extend(await self._write([message]))
            except Exception as exc:
                log.exception("storing a message failed")
                results.append(exc)
        return results

    async def _write(self, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
        if self._sqlite_engine is not None and self._thread is not None:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._write_in_thread, batch)
        async with self._engine.begin() as connection:
            return await connection.run_sync(write_batch, batch)

    def _write_in_thread(self, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
        assert self._sqlite_engine is not None
        with self._sqlite_engine.begin() as connection:
            return write_batch(connection, batch)


_set_last_seq = (
    update(Conversation)
    .where(Conversation.id == bindparam("cid"))
    .values(
        last_seq=bindparam("seq"),
        # NULL for conversations without a first agent reply in this batch: coalesce keeps what was there.
        first_agent_reply_at=func.coalesce(
            Conversation.first_agent_reply_at,
            bindparam("replied_at", type_=Conversation.__table__.c.first_agent_reply_at.type),
        ),
    )
)


def write_batch(connection: Connection, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
    """Store a batch inside the caller's transaction: one result (stored message or error) per message."""
    conversation_ids = sorted({m.conversation_id for m in batch})
    client_ids = {m.client_id for m in batch if m.client_id}
    now = utcnow()
    # Sorted ids and FOR UPDATE: processes lock conversations in the same order, so no deadlock.
    rows = connection.execute(
        select(Conversation.id, Conversation.last_seq, Conversation.status, Conversation.agent_id)
        .where(Conversation.id.in_(conversation_ids))
        .order_by(Conversation.id)
        .with_for_update()
    )
    state = {row.id: [row.last_seq, row.status, row.agent_id] for row in rows}
    known: dict[tuple[str, str], StoredMessage] = {}
    if client_ids:
        existing = connection.execute(
            select(Message).where(
                and_(Message.conversation_id.in_(conversation_ids), Message.client_id.in_(client_ids))
            )
        )
        for row in existing:
            known[(row.conversation_id, row.client_id)] = _stored(row, duplicate=True)
    results: list[StoredMessage | Exception] = []
    new_rows: list[dict[str, object]] = []
    first_reply: set[str] = set()
    for message in batch:
        key = (message.conversation_id, message.client_id or "")
        if message.client_id and key in known:
            results.append(replace(known[key], duplicate=True))
            continue
        current = state.get(message.conversation_id)
        if current is None:
            results.append(ConversationMissing(message.conversation_id))
            continue
        if current[1] == ConversationStatus.closed and not message.allow_closed:
            results.append(ConversationClosed(message.conversation_id))
            continue
        if message.assigned_to is not None and (
            current[1] != ConversationStatus.active or current[2] != message.assigned_to
        ):
            results.append(NotAssigned(message.conversation_id))
            continue
        current[0] += 1
        new_rows.append({
            "conversation_id": message.conversation_id,
            "seq": current[0],
            "author_kind": message.author_kind,
            "agent_id": message.agent_id,
            "body": message.body,
            "private": message.private,
            "client_id": message.client_id,
            "created_at": now,
        })
        stored = StoredMessage(
            message.conversation_id, current[0], message.author_kind, message.body,
            message.agent_id, message.client_id, message.private, now,
        )
        if message.client_id:
            known[key] = stored
        if message.author_kind == "agent" and not message.private:
            first_reply.add(message.conversation_id)
        results.append(stored)
    if new_rows:
        connection.execute(insert(Message), new_rows)
        touched = sorted({row["conversation_id"] for row in new_rows})
        connection.execute(
            _set_last_seq,
            [{"cid": cid, "seq": state[cid][0], "replied_at": now if cid in first_reply else None}
             for cid in touched],
        )
    return results


def _stored(row: Any, duplicate: bool = False) -> StoredMessage:
    return StoredMessage(
        row.conversation_id, row.seq, row.author_kind, row.body, row.agent_id, row.client_id,
        row.private, row.created_at, duplicate,
    )
