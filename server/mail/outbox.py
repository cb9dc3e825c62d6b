"""The durable outbox and its sender: every mail is a row first, then every process sends what is due.

A row is claimed atomically — on PostgreSQL `FOR UPDATE SKIP LOCKED`, on SQLite a conditional UPDATE —
by pushing its `next_attempt_at` a lease ahead; a process that dies mid-send leaves the row to come due
again when the lease runs out, and the retry sends the same Message-ID (fixed at creation), so a receiving
server can drop a repeat. Failures are retried with exponential back-off, then the row is marked failed
with the reason, which admins see on the outbox page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from nameplate.infra.background import BackgroundTask
from nameplate.mail.compose import to_message
from nameplate.store.engine import Sessions, rows_changed
from nameplate.store.models import InboundMail, OutboxMail, utcnow

log = logging.getLogger("nameplate.mail")

MAX_ATTEMPTS = 6
# A claimed mail not finished within this (its process died) is due again.
LEASE_SECONDS = 120.0
BATCH = 20


class Transport(Protocol):
    name: str

    async def send(self, message: Any) -> None: ...


class Outbox:
    def __init__(
        self,
        sessions: Sessions,
        transport: Transport,
        retry_base_seconds: float = 30.0,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._sessions = sessions
        self.transport = transport
        self.retry_base_seconds = retry_base_seconds
        self.lease_seconds = lease_seconds
        self._wake = asyncio.Event()
        self._background = BackgroundTask(self._run, "mail outbox")
        # Called before each due pass (the unread-replies batcher turns its waiting rows into mail there).
        self.before_pass: list[Any] = []

    # -- writing -------------------------------------------------------------------------------------
    @staticmethod
    def add(session: AsyncSession, mail: OutboxMail) -> OutboxMail:
        """Put a mail in the caller's transaction: it exists exactly when its cause does."""
        session.add(mail)
        return mail

    async def enqueue(self, mail: OutboxMail) -> OutboxMail:
        async with self._sessions() as session:
            self.add(session, mail)
            await session.commit()
        self.wake()
        return mail

    async def settle_waiting(self, mail_id: str, covers_seq: int | None) -> None:
        """A `waiting` mail's cause is decided: stored (due now, carrying that seq) or not (skipped)."""
        values: dict[str, Any] = (
            {"state": "pending", "covers_seq": covers_seq, "next_attempt_at": utcnow()}
            if covers_seq is not None
            else {"state": "skipped", "last_error": "its message was never stored"}
        )
        async with self._sessions() as session:
            await session.execute(
                update(OutboxMail)
                .where(col(OutboxMail.id) == mail_id, col(OutboxMail.state) == "waiting")
                .values(**values)
            )
            await session.commit()
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # -- reading (admins) ----------------------------------------------------------------------------
    async def for_site(self, site_id: str, limit: int = 200) -> list[OutboxMail]:
        async with self._sessions() as session:
            result = await session.execute(
                select(OutboxMail)
                .where(col(OutboxMail.site_id) == site_id, col(OutboxMail.state) != "waiting")
                .order_by(col(OutboxMail.created_at).desc())
                .limit(limit)
            )
            return list(result.scalars())

    async def get(self, site_id: str, mail_id: str) -> OutboxMail | None:
        async with self._sessions() as session:
            mail = await session.get(OutboxMail, mail_id)
        return mail if mail is not None and mail.site_id == site_id else None

    async def thread(self, conversation_id: str) -> tuple[list[OutboxMail], list[InboundMail]]:
        """Every mail out and in of one conversation, oldest first."""
        async with self._sessions() as session:
            out = await session.execute(
                select(OutboxMail)
                .where(col(OutboxMail.conversation_id) == conversation_id, col(OutboxMail.state) != "waiting")
                .order_by(col(OutboxMail.created_at))
            )
            inbound = await session.execute(
                select(InboundMail)
                .where(col(InboundMail.conversation_id) == conversation_id)
                .order_by(col(InboundMail.created_at))
            )
            return list(out.scalars()), list(inbound.scalars())

    async def last_message_id(self, conversation_id: str) -> str | None:
        async with self._sessions() as session:
            result = await session.execute(
                select(col(OutboxMail.message_id))
                .where(
                    col(OutboxMail.conversation_id) == conversation_id, col(OutboxMail.state).in_(("pending", "sent"))
                )
                .order_by(col(OutboxMail.created_at).desc())
                .limit(1)
            )
            return result.scalar_one_or_none()

    # -- sending -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        while True:
            try:
                for hook in self.before_pass:
                    await hook()
                sent = await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mail outbox pass failed")
                sent = 0
            if sent == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(1.0, self.retry_base_seconds))
                self._wake.clear()

    async def claim(self) -> list[str]:
        """Lease due mails to this process; two processes never hold the same mail at once."""
        now = utcnow()
        lease_until = now + timedelta(seconds=self.lease_seconds)
        due = (col(OutboxMail.state) == "pending", col(OutboxMail.next_attempt_at) <= now)
        async with self._sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                result = await session.execute(
                    select(col(OutboxMail.id))
                    .where(*due)
                    .order_by(col(OutboxMail.next_attempt_at))
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
                claimed = list(result.scalars())
                if claimed:
                    await session.execute(
                        update(OutboxMail).where(col(OutboxMail.id).in_(claimed)).values(next_attempt_at=lease_until)
                    )
            else:
                due_rows = await session.execute(
                    select(col(OutboxMail.id), col(OutboxMail.next_attempt_at))
                    .where(*due)
                    .order_by(col(OutboxMail.next_attempt_at))
                    .limit(BATCH)
                )
                claimed = []
                for mail_id, due_at in due_rows.all():
                    lease = await session.execute(
                        update(OutboxMail)
                        .where(
                            col(OutboxMail.id) == mail_id,
                            col(OutboxMail.state) == "pending",
                            col(OutboxMail.next_attempt_at) == due_at,
                        )
                        .values(next_attempt_at=lease_until)
                    )
                    if rows_changed(lease) == 1:
                        claimed.append(mail_id)
            await session.commit()
        return claimed

    async def send_due(self) -> int:
        """One pass: claim what is due and send it. Returns how many were attempted."""
        claimed = await self.claim()
        for mail_id in claimed:
            await self._attempt(mail_id)
        return len(claimed)

    async def _attempt(self, mail_id: str) -> None:
        async with self._sessions() as session:
            mail = await session.get(OutboxMail, mail_id)
        if mail is None:
            return
        error: str | None = None
        try:
            await self.transport.send(to_message(mail))
        except asyncio.CancelledError:
            raise  # the process is going away: the lease runs out and another pass sends it
        except Exception as exc:  # any transport failure is retried; the reason is kept for admins
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("mail %s to %s failed: %s", mail.id, mail.to_address, error)
        attempts = mail.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if error is None:
            values.update(state="sent", sent_at=utcnow(), transport=self.transport.name)
        elif attempts >= MAX_ATTEMPTS:
            values.update(state="failed")
        else:
            values.update(next_attempt_at=utcnow() + timedelta(seconds=self.retry_base_seconds * 2 ** (attempts - 1)))
        async with self._sessions() as session:
            await session.execute(
                update(OutboxMail)
                .where(col(OutboxMail.id) == mail.id, col(OutboxMail.state) == "pending")
                .values(**values)
            )
            await session.commit()

    async def retry(self, site_id: str, mail_id: str) -> bool:
        """An admin's "send again" for a failed mail (the same Message-ID)."""
        async with self._sessions() as session:
            result = await session.execute(
                update(OutboxMail)
                .where(
                    col(OutboxMail.id) == mail_id,
                    col(OutboxMail.site_id) == site_id,
                    col(OutboxMail.state) == "failed",
                )
                .values(state="pending", attempts=0, next_attempt_at=utcnow())
            )
            await session.commit()
        self.wake()
        return rows_changed(result) == 1
