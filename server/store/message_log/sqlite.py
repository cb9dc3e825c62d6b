"""The message log's writer for an SQLite file: a thread of its own with its own sqlite3 connection.

A whole batch (lock, look up client_ids, insert, advance the conversations, commit) is one call, in plain
parameterised SQL on the `sqlite3` module. Through aiosqlite and SQLAlchemy the same batch is seven round
trips between threads, each waiting for a turn of a busy event loop, plus statement compilation in Python
that competes with the event loop for the GIL. Column values are converted by the models' own SQLAlchemy
types, so rows written here read back exactly like rows written through the ORM.

A small batch whose lock is free at once is written on the event loop itself (about 0.1 ms): the two
thread hops it saves cost more than the write on a busy 2-core machine. The loop never waits for the lock:
if another connection holds it, the batch goes to the thread, which does the waiting.

Two things would otherwise put 20–200 ms pauses on ordinary messages:
- SQLite's own wait for a lock held by another connection sleeps in growing steps (1, 2, 5 … 100 ms); the
  writer instead retries every half millisecond, because other writers hold the lock for a moment only.
- A WAL checkpoint (copying the log into the database and syncing it) runs inside whichever commit
  crosses the threshold; the writer's connection never does it, a checkpoint thread does, about once a
  second, beside the writer (WAL lets both run at once).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect

from nameplate.store.engine import tune_sqlite
from nameplate.store.message_log.batch import (
    BatchDone,
    BatchOutcome,
    ConversationState,
    NewMessage,
    StoredMessage,
    plan_batch,
)
from nameplate.store.message_log.first_reply import SQLITE_FIRST_REPLY
from nameplate.store.models import Conversation, Message, utcnow

log = logging.getLogger("nameplate.message_log")

# Give up on the database's write lock after this long, as the rest of the server does (busy_timeout).
LOCK_WAIT_SECONDS = 10.0
LOCK_RETRY_SECONDS = 0.0005
CHECKPOINT_EVERY_SECONDS = 1.0
INLINE_MAX_BATCH = 8
# Past this many frames (4 KiB pages) in the WAL, the checkpoint thread empties it (see _run_checkpoint).
WAL_RESET_FRAMES = 4096
WAL_KEEP_BYTES = 64 * 1024 * 1024
RESTART_WAIT_MS = 20

_dialect = sqlite_dialect.dialect()
# dialect_impl: the type as SQLite sees it, so its processors include the string conversion SQLite needs.
_time_type = Message.metadata.tables["message"].c.created_at.type.dialect_impl(_dialect)
_to_db_time = _time_type.bind_processor(_dialect)
_from_db_time = _time_type.result_processor(_dialect, None)

_CONVERSATION = Conversation.__tablename__
_MESSAGE = Message.__tablename__
_INSERT = (
    f"INSERT INTO {_MESSAGE} (conversation_id, seq, author_kind, agent_id, body, private, client_id, created_at,"
    " visibility) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADVANCE = (
    f"UPDATE {_CONVERSATION} SET last_seq = ?, first_agent_reply_at = coalesce(first_agent_reply_at, ?) WHERE id = ?"
)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _write_batch(connection: sqlite3.Connection, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
    """Inside a transaction already begun (IMMEDIATE: it holds the database's one write lock, so no row
    locks are needed)."""
    conversation_ids = sorted({m.conversation_id for m in batch})
    # Matched as pairs: "conversation_id IN (…) AND client_id IN (…)" probes the unique index for every
    # combination, quadratic in the batch, and "(conversation_id, client_id) IN (VALUES …)" scans the
    # table; a CROSS JOIN from the pairs (SQLite keeps that loop order) is one index probe per pair.
    sent = sorted({(m.conversation_id, m.author_kind, m.client_id) for m in batch if m.client_id})
    rows = connection.execute(
        f"SELECT id, last_seq, status, agent_id FROM {_CONVERSATION} WHERE id IN ({_marks(len(conversation_ids))})",
        conversation_ids,
    )
    state = {row[0]: ConversationState(row[1], row[2], row[3]) for row in rows}
    stored: list[StoredMessage] = []
    if sent:
        found = connection.execute(
            f"WITH sent(conversation_id, author_kind, client_id) AS (VALUES {', '.join(['(?, ?, ?)'] * len(sent))})"
            " SELECT m.conversation_id, m.seq, m.author_kind, m.body, m.agent_id, m.client_id, m.private,"
            f" m.created_at FROM sent CROSS JOIN {_MESSAGE} AS m"
            " ON m.conversation_id = sent.conversation_id AND m.author_kind = sent.author_kind"
            " AND m.client_id = sent.client_id",
            [value for triple in sent for value in triple],
        )
        stored = [
            StoredMessage(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), _read_time(row[7]))
            for row in found
        ]
    plan = plan_batch(batch, state, stored, utcnow())
    if plan.rows:
        connection.executemany(
            _INSERT,
            [
                (
                    r["conversation_id"],
                    r["seq"],
                    r["author_kind"],
                    r["agent_id"],
                    r["body"],
                    int(r["private"]),
                    r["client_id"],
                    _write_time(r["created_at"]),
                    r["visibility"],
                )
                for r in plan.rows
            ],
        )
        connection.executemany(
            _ADVANCE, [(seq, _write_time(replied_at), cid) for cid, seq, replied_at in plan.advances]
        )
        # Insight: the first agent reply's event, in this same transaction.
        replies = [(cid, _write_time(at)) for cid, _, at in plan.advances if at is not None]
        if replies:
            connection.executemany(SQLITE_FIRST_REPLY, replies)
    return plan.results


def _write_time(value: Any) -> Any:
    return _to_db_time(value) if _to_db_time and value is not None else value


def _read_time(value: Any) -> Any:
    return _from_db_time(value) if _from_db_time else value


class SqliteWriter:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="message-log")
        self._checkpoints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-checkpoint")
        self._connection: sqlite3.Connection | None = None
        self._checkpoint_connection: sqlite3.Connection | None = None
        self._checkpoint: Future[None] | None = None
        self._last_checkpoint = time.monotonic()
        self.wal_restarts = 0  # times the WAL was made to start over (see _run_checkpoint)

    def submit(self, batch: list[NewMessage], done: BatchDone) -> None:
        """Write the batch; `done` is called on this event loop with the outcome: at once when it was
        written on the loop, else by the writer thread handing it straight to the loop (no task)."""
        if len(batch) <= INLINE_MAX_BATCH:
            outcome = self._write_inline(batch)
            if outcome is not None:
                done(outcome)
                return
        self._thread.submit(self._write_and_answer, asyncio.get_running_loop(), batch, done)

    def _write_inline(self, batch: list[NewMessage]) -> BatchOutcome | None:
        """On the event loop, only if the lock is free right now; None: leave it to the thread. The thread
        opens the connection (that can wait for a lock too), so the first batch always goes there."""
        connection = self._connection
        if connection is None:
            return None
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                return None
            return exc
        try:
            return self._finish(connection, batch)
        except Exception as exc:
            return exc

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._disconnect)
        await loop.run_in_executor(self._checkpoints, self._disconnect_checkpoints)
        self._thread.shutdown(wait=True)
        self._checkpoints.shutdown(wait=True)

    # -- in the writer thread (and _finish on the loop, for a batch written there) ------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # isolation_level=None: transactions are begun by hand, as IMMEDIATE. A deferred one that reads
            # and then writes fails at once (SQLITE_BUSY) if another connection committed in between.
            connection = sqlite3.connect(self._path, timeout=10, isolation_level=None, check_same_thread=False)
            tune_sqlite(connection, None)
            connection.execute("PRAGMA busy_timeout=0")
            connection.execute("PRAGMA wal_autocheckpoint=0")
            # A WAL that grew while a reader held up the restart is cut back to this when it starts over.
            connection.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
            self._connection = connection
        return self._connection

    def _begin(self, connection: sqlite3.Connection) -> None:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(LOCK_RETRY_SECONDS)

    def _write_and_answer(self, loop: asyncio.AbstractEventLoop, batch: list[NewMessage], done: BatchDone) -> None:
        outcome: BatchOutcome
        try:
            outcome = self._write(batch)
        except Exception as exc:
            outcome = exc
        loop.call_soon_threadsafe(done, outcome)

    def _write(self, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
        connection = self._connect()
        self._begin(connection)
        return self._finish(connection, batch)

    def _finish(self, connection: sqlite3.Connection, batch: list[NewMessage]) -> list[StoredMessage | Exception]:
        try:
            results = _write_batch(connection, batch)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self._maybe_checkpoint()
        return results

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._last_checkpoint < CHECKPOINT_EVERY_SECONDS:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._last_checkpoint = now
        self._checkpoint = self._checkpoints.submit(self._run_checkpoint)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- in the checkpoint thread ------------------------------------------------------------------------
    def _run_checkpoint(self) -> None:
        try:
            if self._checkpoint_connection is None:
                self._checkpoint_connection = sqlite3.connect(
                    self._path, timeout=10, isolation_level=None, check_same_thread=False
                )
                tune_sqlite(self._checkpoint_connection, None)
                self._checkpoint_connection.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            connection = self._checkpoint_connection
            # PASSIVE: copy what no reader still needs, never wait for (or block) readers and the writer.
            _, wal_frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if wal_frames > WAL_RESET_FRAMES:
                # A WAL goes back to its start only when a write begins just after a checkpoint that copied
                # every frame; with messages arriving all the time a PASSIVE one never quite does, and the
                # file grew by 20 MB a second at 1,000 msg/s, for ever. RESTART holds writers off while it
                # copies the little that PASSIVE left, then the next write starts over at the top of the
                # file: a pause of about 3 ms, bounded by the short busy timeout when a reader is slow to let
                # go (then the next try). TRUNCATE also empties the file, which then grows again: 10 ms.
                blocked, _, _ = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                if not blocked:
                    self.wal_restarts += 1
        except sqlite3.Error:
            log.warning("WAL checkpoint failed; the next one retries", exc_info=True)

    def _disconnect_checkpoints(self) -> None:
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()
            self._checkpoint_connection = None
