"""Real SMTP for the mail tests: an aiosmtpd sink for outbound mail and a client for the inbound listener."""

from __future__ import annotations

import asyncio
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from nameplate.services import Services
from nameplate.store.models import Agent, Conversation, Customer, OutboxMail
from tests.harness import free_port, poll_until


class SmtpSink:
    """A real SMTP server in the test's loop that keeps what it accepts.

    `failures`: refuse that many DATA commands with 451 first. `hold`: stall every RCPT until released
    (a sender can be killed while it waits)."""

    def __init__(self, failures: int = 0, hold: bool = False) -> None:
        self.failures = failures
        self.hold = hold
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}?starttls=off"
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.rcpt_seen = asyncio.Event()
        self.release = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_seen.set()
        if self.hold:
            await self.release.wait()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.failures > 0:
            self.failures -= 1
            return "451 4.3.0 Mailbox busy, try again later"
        raw = envelope.original_content or envelope.content
        self.messages.append(BytesParser(policy=policy.default).parsebytes(raw))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    async def __aenter__(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self, hostname="sink"), "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, count: int) -> list[EmailMessage]:
        await poll_until(lambda: len(self.messages) >= count)
        return self.messages


async def agent_by_email(services: Services, email: str) -> Agent:
    async with services.sessions() as session:
        return (await session.execute(select(Agent).where(Agent.email == email))).scalar_one()


async def offline_conversation(
    services: Services, email: str = "ada@example.com", name: str = "Ada Lovelace", assign_to: str | None = None
) -> Conversation:
    """A visitor who left a message and an address while nobody was online; optionally taken by an agent."""
    site = await services.directory.site_by_key("site_demo")
    assert site is not None
    customer = Customer(site_id=site.id, name=name)
    async with services.sessions() as session:
        session.add(customer)
        await session.commit()
    conversation = await services.conversations.start(site.id, customer.id)
    await services.conversations.set_offline_email(conversation.id, email)
    from nameplate.store.message_log.log import NewMessage

    await services.conversations.post(
        NewMessage(conversation.id, "visitor", "Do you have the Ridge 40 pack in blue?"), {"kind": "visitor"}
    )
    if assign_to is not None:
        agent = await agent_by_email(services, assign_to)
        assigned = await services.conversations.mark_assigned(conversation.id, agent.id)
        assert assigned is not None
        return assigned
    fresh = await services.conversations.get(conversation.id)
    assert fresh is not None
    return fresh


async def outbox_rows(services: Services, **where: Any) -> list[OutboxMail]:
    async with services.sessions() as session:
        query = select(OutboxMail).order_by(OutboxMail.created_at)
        for key, value in where.items():
            query = query.where(getattr(OutboxMail, key) == value)
        return list((await session.execute(query)).scalars())


async def send_smtp(port: int, mail_from: str, rcpt: list[str], data: bytes) -> tuple[int, str, list[Any]]:
    """Speak SMTP to the listener with aiosmtplib; returns the DATA reply (or the RCPT refusals)."""
    import aiosmtplib

    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail(mail_from)
        refusals = []
        accepted = 0
        for address in rcpt:
            try:
                await client.rcpt(address)
                accepted += 1
            except aiosmtplib.SMTPRecipientRefused as exc:
                refusals.append((exc.code, exc.message))
        if not accepted:
            return 0, "", refusals
        try:
            response = await client.data(data)
            return response.code, response.message, refusals
        except aiosmtplib.SMTPDataError as exc:
            return exc.code, exc.message, refusals
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message, refusals
    finally:
        try:
            await client.quit()
        except Exception:
            client.close()
