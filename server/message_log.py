"""Durable message appends with group commit.

Every message is stored before its sender is acknowledged. Messages that arrive while a commit is in
flight are written together in the next transaction, so one commit serves many messages (the disk, not
Python, is the limit). The batch's rules live in `server.message_batch`; each engine has a writer that
runs them with as few round trips and as little Python on the event loop as it can: SQLite in a thread
of its own (`message_log_sqlite`), PostgreSQL on the asyncpg connection (`message_log_postgres`).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from server.background import BackgroundTask
from server.config import sqlite_path
from server.message_batch import ConversationClosed, ConversationMissing, NewMessage, NotAssigned, StoredMessage
from server.message_log_postgres import PostgresWriter
from server.message_log_sqlite import SqliteWriter

__all__ = ["ConversationClosed", "ConversationMissing", "MessageLog", "NewMessage", "NotAssigned", "StoredMessage"]

log = logging.getLogger("nameplate.message_log")

# A batch bigger than this is split: it bounds one transaction's size and the latency of its first message.
MAX_BATCH = 500

_Pending = tuple[NewMessage, "asyncio.Future[StoredMessage]"]


class MessageLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = _writer_for(engine)
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
        await self._writer.close()

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
        return await self._writer.write(batch)


def _writer_for(engine: AsyncEngine) -> SqliteWriter | PostgresWriter:
    if engine.dialect.name == "postgresql":
        return PostgresWriter(engine)
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "sqlite" and path is not None:
        return SqliteWriter(path)
    # An in-memory SQLite is a different, empty database on every pooled connection: it cannot serve.
    raise ValueError(f"DATABASE_URL must be an SQLite file or PostgreSQL, not {engine.url.render_as_string()}")
