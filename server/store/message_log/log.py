"""Durable message appends with group commit.

Every message is stored before its sender is acknowledged. Messages that arrive while a commit is in
flight are written together in the next transaction, so one commit serves many messages (the disk, not
Python, is the limit). The batch's rules live in `nameplate.store.message_log.batch`; each engine has a writer that
runs them with as few round trips and as little Python on the event loop as it can: SQLite in a thread
of its own, or on the loop for a small batch whose lock is free (`message_log_sqlite`), PostgreSQL on the
asyncpg connection (`message_log_postgres`).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from nameplate.config import sqlite_path
from nameplate.store.message_log.batch import (
    BatchOutcome,
    ConversationClosed,
    ConversationMissing,
    NewMessage,
    NotAssigned,
    StoredMessage,
)
from nameplate.store.message_log.postgres import PostgresWriter
from nameplate.store.message_log.sqlite import SqliteWriter

__all__ = ["ConversationClosed", "ConversationMissing", "MessageLog", "NewMessage", "NotAssigned", "StoredMessage"]

log = logging.getLogger("nameplate.message_log")

# A batch bigger than this is split: it bounds one transaction's size and the latency of its first message.
MAX_BATCH = 500

_Pending = tuple[NewMessage, "asyncio.Future[StoredMessage]"]


class MessageLog:
    """One batch in flight at a time; whatever arrives meanwhile is the next batch, started the moment the
    current one is answered. Driven by the writer's completion callback rather than a task of its own, so a
    message costs no extra turns of the event loop: the first append starts its write at once, and the
    callback that answers a batch also starts the next."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._writer = _writer_for(engine)
        self._pending: list[_Pending] = []
        # Messages of a failed batch, to be written one by one before anything newer.
        self._singles: list[_Pending] = []
        self._in_flight: list[_Pending] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = False
        self._stopped = False
        self._submitting = False  # inside the writer's `submit`
        self._again = False  # a batch answered within `submit`, and more are waiting

    def start(self) -> None:
        self._open = not self._stopped

    async def stop(self) -> None:
        """Refuse new messages, let the batch in flight (and any already queued) finish, close the writer."""
        self._open = False
        await self._idle.wait()
        if not self._stopped:
            self._stopped = True
            await self._writer.close()

    async def append(self, message: NewMessage) -> StoredMessage:
        """Store one message; returns once it is committed (or raises)."""
        if not self._open:
            raise RuntimeError("server shutting down")
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        if self._in_flight is None:
            self._start_next()
        return await future

    def _start_next(self) -> None:
        # A writer may answer within `submit` (SQLite writes small batches on the loop): `_finished` then
        # asks for the next batch through `_again` and it is started here, in a loop, not by recursion
        # (a failed batch of hundreds, retried one by one, would otherwise nest hundreds of calls deep).
        while True:
            if self._singles:
                batch = [self._singles.pop(0)]
            else:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._in_flight = batch
            self._idle.clear()
            self._submitting, self._again = True, False
            try:
                self._writer.submit([message for message, _ in batch], self._finished)
            except Exception as exc:  # e.g. the writer's thread already shut down: answer, never hang
                asyncio.get_running_loop().call_soon(self._finished, exc)
            finally:
                self._submitting = False
            if not self._again:
                return

    def _finished(self, outcome: BatchOutcome) -> None:
        """On the event loop, once per submitted batch: answer its senders, then start the next batch."""
        batch, self._in_flight = self._in_flight or [], None
        if isinstance(outcome, Exception):
            if len(batch) > 1:
                # One unstorable message must fail only its own sender, never the others who happened to
                # share its commit: write each alone.
                log.warning("a batch of %d messages failed (%s); storing them one by one", len(batch), outcome)
                self._singles = batch + self._singles
                batch, outcome = [], []
            else:
                log.error("storing a message failed", exc_info=outcome)
                outcome = [outcome] * len(batch)
        for (_, future), result in zip(batch, outcome, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if not (self._singles or self._pending):
            self._idle.set()
        elif self._submitting:
            self._again = True
        else:
            self._start_next()


def _writer_for(engine: AsyncEngine) -> SqliteWriter | PostgresWriter:
    if engine.dialect.name == "postgresql":
        return PostgresWriter(engine)
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "sqlite" and path is not None:
        return SqliteWriter(path)
    # An in-memory SQLite is a different, empty database on every pooled connection: it cannot serve.
    raise ValueError(f"DATABASE_URL must be an SQLite file or PostgreSQL, not {engine.url.render_as_string()}")
